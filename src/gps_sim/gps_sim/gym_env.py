"""Gymnasium wrapper: the same arm and tasks for Stable-Baselines3 and similar libraries."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gps_core.layout import EE_POINTS
from gps_sim.arm_sim import ArmSim


class GpsArmEnv(gym.Env):
    """One task episode of T control steps (50 ms each).

    Observation: the state x (32,) by default, or with obs_type="image" a Dict of the camera image
    (H, W, 3) uint8 and the robot configuration (32,). Action: joint torques (7,) within the effort
    limits. Reward: -cost, cost = ee_weight * sum of squared EE-point distances + torque_weight * |u|^2.
    info["is_success"] at every step; the episode truncates at the horizon. Reset options:
    {"condition": int, "condition_set": str}; without them a training condition is drawn from the
    environment's RNG.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, task_name: str = "reach", obs_type: str = "state", image_size: int = 64,
                 condition_set: str = "train", render_mode: str | None = None, gravity: bool = False):
        if obs_type not in ("state", "image"):
            raise ValueError("obs_type must be 'state' or 'image'")
        self.obs_type = obs_type
        self.condition_set = condition_set
        self.render_mode = render_mode
        self.sim = ArmSim(task_name, image_size=image_size, render_images=obs_type == "image", gravity=gravity)
        self.horizon = self.sim.task.horizon
        self.ee_weight = float(self.sim.task.cost.get("ee_weight", 1.0))
        self.torque_weight = float(self.sim.task.cost.get("torque_weight", 1e-3))
        lim = self.sim.effort_limits.astype(np.float32)
        self.action_space = spaces.Box(-lim, lim, dtype=np.float32)
        vec = spaces.Box(-np.inf, np.inf, shape=(32,), dtype=np.float64)
        if obs_type == "state":
            self.observation_space = vec
        else:
            self.observation_space = spaces.Dict({
                "image": spaces.Box(0, 255, shape=(image_size, image_size, 3), dtype=np.uint8),
                "config": vec,
            })
        self._t = 0

    def _obs(self, o) -> Any:
        if self.obs_type == "state":
            return self.sim.state()
        return {"image": o.image, "config": o.config}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        cset = options.get("condition_set", self.condition_set)
        cond = options.get("condition")
        if cond is None:
            cond = int(self.np_random.integers(self.sim.num_conditions(cset)))
        o = self.sim.reset(int(cond), seed=int(self.np_random.integers(2**31)), condition_set=cset)
        self._t = 0
        return self._obs(o), {"condition": int(cond), "is_success": self.sim.is_success()}

    def step(self, action):
        u = np.clip(np.asarray(action, dtype=float), -self.sim.effort_limits, self.sim.effort_limits)
        o = self.sim.step(u)
        self._t += 1
        d = self.sim.state()[EE_POINTS]  # EE points - target points
        cost = self.ee_weight * float(d @ d) + self.torque_weight * float(u @ u)
        info = {"is_success": self.sim.is_success(), "distance": self.sim.mean_distance(), "cost": cost}
        return self._obs(o), -cost, False, self._t >= self.horizon, info

    def render(self):
        if self.render_mode == "rgb_array":
            return self.sim.render()
        return None

    def close(self):
        self.sim.close()


class GpsReachEnv(GpsArmEnv):
    def __init__(self, **kwargs):
        super().__init__("reach", **kwargs)


class GpsShapeSortingEnv(GpsArmEnv):
    def __init__(self, **kwargs):
        super().__init__("shape_sorting", **kwargs)


def register_envs() -> None:
    for env_id, entry in [("GpsReach-v0", "gps_sim.gym_env:GpsReachEnv"),
                          ("GpsShapeSorting-v0", "gps_sim.gym_env:GpsShapeSortingEnv")]:
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry, max_episode_steps=100)


register_envs()
