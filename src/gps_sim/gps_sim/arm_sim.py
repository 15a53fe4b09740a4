"""The simulated PR2 right arm: a plain Python API (no rclpy) over MuJoCo."""

from __future__ import annotations

import dataclasses
import math
import os
import zlib

import mujoco
import numpy as np

from gps_core.kinematics import TOOL_BODY, TOOL_SITE, ee_jacobians_from_data, ee_points_from_data
from gps_core.ood import frame_rng, perturb_image
from gps_core.tasks import TaskConfig, load_task, task_success
from gps_sim.ood_scene import OodScene
from gps_sim.scenes import (
    CAMERA_HIDDEN_GROUP,
    DISTRACTOR_PARK,
    DISTRACTOR_SHAPES,
    NUM_DISTRACTORS,
    apply_grasp,
    build_model,
    draw_distractor_scene,
    draws_random_scene,
)

#: A continuous joint's angle is accepted within one turn either way (a reset beyond means nothing new
#: physically and only inflates the state the controllers see).
CONTINUOUS_JOINT_RANGE = 2 * np.pi
#: rad: a configuration read back from the simulation may sit this far past a (soft) limit.
JOINT_LIMIT_TOLERANCE = 1e-6
JOINT_NAMES = (
    "r_shoulder_pan_joint",
    "r_shoulder_lift_joint",
    "r_upper_arm_roll_joint",
    "r_elbow_flex_joint",
    "r_forearm_roll_joint",
    "r_wrist_flex_joint",
    "r_wrist_roll_joint",
)
CAMERA = "head_camera"


@dataclasses.dataclass
class Observation:
    """o: camera image and robot configuration [q, qd, EE points (base frame), EE point velocities]."""

    image: np.ndarray | None  # (H, W, 3) uint8, or None when images are not rendered
    config: np.ndarray  # (32,)
    time: float = 0.0  # sim seconds since reset


def reset_rng(condition_set: str, condition: int, seed: int | None) -> np.random.Generator:
    """The generator of a reset's random parts (start perturbation, distractor scene): seeded by the
    condition set's name (CRC-32), the condition and the seed, so sets with the same seeds differ."""
    return np.random.default_rng([zlib.crc32(str(condition_set).encode()), int(condition),
                                  int(seed or 0) % 2**63])


class ArmSim:
    """One simulated arm in one task scene. Several instances can run side by side.

    x = [q (7), qd (7), ee_points - target_points (9), ee point velocities (9)]  (dX = 32)
    o = image + config [q, qd, ee_points (9, absolute, base frame), ee point velocities (9)]  (dO = 32)
    """

    dU = 7
    dX = 32
    dO = 32
    joint_names = JOINT_NAMES

    def __init__(self, task: TaskConfig | str | os.PathLike, image_size: int = 64,
                 render_images: bool = False, gravity: bool = False):
        self.task = task if isinstance(task, TaskConfig) else load_task(task)
        self.image_size = int(image_size)
        self.render_images = bool(render_images)
        self.gravity = bool(gravity)
        self.model = build_model(self.task, gravity=self.gravity)
        self.data = mujoco.MjData(self.model)
        self.n_substeps = max(1, round(self.task.control_dt / self.model.opt.timestep))
        self.control_dt = self.n_substeps * self.model.opt.timestep
        self.effort_limits = self.model.actuator_ctrlrange[:, 1].copy()
        self.joint_limits = self.model.jnt_range.copy()
        self.joint_limited = self.model.jnt_limited.astype(bool).copy()
        self._site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, TOOL_SITE)
        self._body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, TOOL_BODY)
        self._target_mocap = self.model.body_mocapid[self._body_id("target")]
        self._distractor_mocap = [self.model.body_mocapid[self._body_id(f"distractor_{i}")]
                                  for i in range(NUM_DISTRACTORS)]
        self._default_rgba = self.model.geom_rgba.copy()
        # For random distractor scenes: the target's colours (never a distractor's) and the table.
        self._target_colors = self._default_rgba[self._geom_ids("target")]
        table = self._geom_ids("table")
        self._table_rgba = self._default_rgba[table[0]] if table else np.array([0.6, 0.5, 0.4, 1.0])
        self._table_bounds = (np.array([self.model.geom_pos[table[0], :2] - self.model.geom_size[table[0], :2],
                                        self.model.geom_pos[table[0], :2] + self.model.geom_size[table[0], :2]])
                              if table else np.array([[-np.inf, -np.inf], [np.inf, np.inf]]))
        self._renderer: mujoco.Renderer | None = None
        self._ood = OodScene(self.model)
        #: What the last reset's out-of-distribution family drew (gps_sim.ood_scene); None: nominal visuals.
        self.ood_draw: dict | None = None
        #: What the last random scene's training-time appearance randomization drew (OodScene.apply_training);
        #: None: none (every appearance key off, or no random scene).
        self.appearance_draw: dict | None = None
        self._ee_offsets = np.asarray(self.task.ee_points, dtype=float)  # the condition's grasp moves them
        self.condition: tuple[str, int] | None = None
        self.reset(0) if self.task.num_conditions("train") else mujoco.mj_forward(self.model, self.data)

    # ----------------------------------------------------------------- helpers
    def _body_id(self, name: str) -> int:
        i = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
        if i < 0:
            raise KeyError(name)
        return i

    def _geom_ids(self, key: str) -> list[int]:
        names = [mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_GEOM, i) or ""
                 for i in range(self.model.ngeom)]
        if key == "target":
            return [i for i, n in enumerate(names) if n.startswith("target_geom")]
        return [i for i, n in enumerate(names) if n == key]

    # -------------------------------------------------------------- properties
    @property
    def time(self) -> float:
        return float(self.data.time)

    def num_conditions(self, condition_set: str = "train") -> int:
        return self.task.num_conditions(condition_set)

    # ------------------------------------------------------------------ resets
    def reset(self, condition: int, seed: int | None = 0, condition_set: str = "train") -> Observation:
        """Move arm and scene to a task condition. ``seed`` drives the jitter of a condition's listed
        distractors and, for conditions with ``perturbation`` / ``random_scene`` (the evaluation sets), the
        start-angle perturbation and the random distractor scene, and for the out-of-distribution sets
        (``ood``, gps_core.ood) the family's draw (lights, camera pose, textures, distractors, image noise):
        a deterministic function of (condition_set, condition, seed) (:func:`reset_rng`), so a reset through
        gps_sim/reset repeats it. A random scene whose spec turns on training-time appearance randomization
        (keys lighting / camera / texture, gps_sim.scenes.scene_spec) also draws the lights, the camera pose
        and the table and floor textures from the same generator, after its distractors
        (:attr:`appearance_draw`). Every reset first restores the model's nominal visuals."""
        conds = self.task.condition_list(condition_set)
        if not 0 <= int(condition) < len(conds):
            raise IndexError(f"condition {condition} out of range for set {condition_set!r} "
                             f"({len(conds)} conditions)")
        cond = conds[int(condition)]
        rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        self._ee_offsets = apply_grasp(self.model, self.task, cond.grasp)
        self.model.geom_rgba[:] = self._default_rgba
        self._ood.restore()
        self.ood_draw = self.appearance_draw = None
        self.data.qpos[:7] = cond.joint_angles
        self.data.mocap_pos[self._target_mocap] = cond.target_pose[:3]
        self.data.mocap_quat[self._target_mocap] = cond.target_pose[3:]
        distractors, colors = cond.distractors, cond.colors
        if cond.perturbation > 0.0 or cond.random_scene is not None or cond.ood is not None:
            r = reset_rng(condition_set, int(condition), seed)
            if cond.perturbation > 0.0:
                q = cond.joint_angles + r.uniform(-cond.perturbation, cond.perturbation, 7)
                lim = self.joint_limited[:7]
                self.data.qpos[:7] = np.where(lim, np.clip(q, self.joint_limits[:7, 0], self.joint_limits[:7, 1]), q)
            if cond.random_scene is not None and draws_random_scene(cond.random_scene, r):
                distractors, table = draw_distractor_scene(cond.random_scene, r, cond.target_pose[:2],
                                                           self._target_colors, self._table_rgba,
                                                           self._table_bounds)
                colors = {**cond.colors, "table": table}
                # (after the distractors: turning a key on leaves the scene's distractors and table as they were)
                textured, self.appearance_draw = self._ood.apply_training(cond.random_scene, r)
                colors.update(textured)
            if cond.ood is not None:
                extra, ood_colors, self.ood_draw = self._ood.apply(
                    cond.ood, r, cond.target_pose, self._target_colors, self._table_rgba, self._table_bounds)
                distractors, colors = list(distractors) + extra, {**colors, **ood_colors}
        self._place_scene(distractors, colors, rng, cond.target_pose[:3])
        self.condition = (condition_set, int(condition))
        mujoco.mj_forward(self.model, self.data)
        return self.observation()

    def randomize_scene(self, rng: np.random.Generator, spec: dict | None = None) -> list[dict]:
        """A random distractor scene + table colour around the target's current position (domain
        randomization, e.g. for pose pretraining; rules of gps_sim.scenes.draw_distractor_scene), and the
        spec's training-time appearance randomization (lighting / camera / texture) after it, on the model's
        nominal visuals (whatever the last reset drew of them is replaced, as its colours are).
        The next reset restores the condition's scene. Returns the distractors."""
        pose = self.target_pose()
        distractors, table = draw_distractor_scene(spec, rng, pose[:2], self._target_colors, self._table_rgba,
                                                   self._table_bounds)
        self.model.geom_rgba[:] = self._default_rgba
        self._ood.restore()
        self.ood_draw = None
        textured, self.appearance_draw = self._ood.apply_training(spec, rng)
        self._place_scene(distractors, {"table": table, **textured}, rng, pose[:3])
        mujoco.mj_forward(self.model, self.data)
        return distractors

    def _place_scene(self, distractors: list[dict], colors: dict, rng: np.random.Generator,
                     target_pos: np.ndarray) -> None:
        for key, rgba in colors.items():
            for g in self._geom_ids(key):
                self.model.geom_rgba[g] = rgba
        for i, mid in enumerate(self._distractor_mocap):
            self.data.mocap_pos[mid] = DISTRACTOR_PARK
            self.data.mocap_quat[mid] = (1.0, 0.0, 0.0, 0.0)
            for shape in DISTRACTOR_SHAPES:
                self.model.geom_rgba[self._geom_ids(f"distractor_{i}_{shape}")[0], 3] = 0.0
        for i, d in enumerate(distractors[:NUM_DISTRACTORS]):
            mid = self._distractor_mocap[i]
            if "position" in d:  # a drawn scene: absolute position and yaw
                self.data.mocap_pos[mid] = d["position"]
                yaw = float(d.get("yaw", 0.0))
                self.data.mocap_quat[mid] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
            else:
                offset = np.asarray(d.get("offset", [0.0, 0.0, 0.0]), float)
                jitter = float(d.get("jitter", 0.01))
                offset = offset + np.append(rng.uniform(-jitter, jitter, 2), 0.0)
                self.data.mocap_pos[mid] = np.asarray(target_pos, float) + offset
            g = self._geom_ids(f"distractor_{i}_{d.get('shape', 'box')}")[0]
            size = np.zeros(3)
            sz = np.asarray(d.get("size", [0.03]), float)
            size[: len(sz)] = sz
            self.model.geom_size[g] = size
            self.model.geom_rgba[g] = d.get("rgba", [0.1, 0.6, 0.2, 1.0])

    def joint_position_problem(self, q: np.ndarray) -> str:
        """'' when ``q`` (7 joint angles) is a configuration the arm can be put in: every limited joint
        within its limits, every continuous joint within one turn either way (``CONTINUOUS_JOINT_RANGE``);
        else what is wrong, naming the joint."""
        q = np.asarray(q, dtype=float).reshape(-1)
        if q.shape != (7,):
            return f"expected 7 joint angles, got {q.size}"
        for i, name in enumerate(self.joint_names):
            if not np.isfinite(q[i]):
                return f"{name}: {q[i]} is not a finite angle (NaN or Inf)"
            lo, hi = self.joint_limits[i] if self.joint_limited[i] else (-CONTINUOUS_JOINT_RANGE, CONTINUOUS_JOINT_RANGE)
            if not lo - JOINT_LIMIT_TOLERANCE <= q[i] <= hi + JOINT_LIMIT_TOLERANCE:
                return f"{name}: {q[i]:g} rad is outside the joint's range [{lo:g}, {hi:g}]"
        return ""

    def set_joint_state(self, q: np.ndarray, qd: np.ndarray | None = None) -> None:
        q = np.asarray(q, dtype=float).reshape(-1)
        qd = np.zeros(7) if qd is None else np.asarray(qd, dtype=float).reshape(-1)
        if q.shape != (7,) or qd.shape != (7,) or not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
            raise ValueError("q and qd must be 7 finite numbers each")
        self.data.qpos[:7] = q
        self.data.qvel[:7] = qd
        mujoco.mj_forward(self.model, self.data)

    def set_target_pose(self, pose: np.ndarray) -> None:
        pose = np.asarray(pose, dtype=float).reshape(-1)
        if pose.shape != (7,) or not np.all(np.isfinite(pose)) or np.linalg.norm(pose[3:]) < 1e-9:
            raise ValueError("target pose must be 7 finite numbers: xyz + quaternion wxyz (nonzero)")
        self.data.mocap_pos[self._target_mocap] = pose[:3]
        self.data.mocap_quat[self._target_mocap] = pose[3:] / np.linalg.norm(pose[3:])
        mujoco.mj_forward(self.model, self.data)

    # ------------------------------------------------------------------ stepping
    def step(self, torques: np.ndarray) -> Observation:
        """Apply joint torques (clipped to the effort limits) for one control period."""
        u = np.asarray(torques, dtype=float).reshape(-1)
        if u.shape != (7,) or not np.all(np.isfinite(u)):
            raise ValueError(f"torques must be 7 finite numbers, got shape {u.shape}")
        self.data.ctrl[:] = np.clip(u, -self.effort_limits, self.effort_limits)
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        # mj_step leaves positions-dependent quantities at the state before its last integration:
        # recompute them so EE points, Jacobians and images match qpos.
        mujoco.mj_forward(self.model, self.data)
        return self.observation()

    # ------------------------------------------------------------------ queries
    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[:7].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[:7].copy()

    def applied_efforts(self) -> np.ndarray:
        return self.data.ctrl[:7].copy()

    def ee_points(self) -> np.ndarray:
        return ee_points_from_data(self.model, self.data, self._ee_offsets, self._site)

    def ee_point_jacobians(self) -> np.ndarray:
        return ee_jacobians_from_data(self.model, self.data, self.ee_points(), self._body)

    def ee_point_velocities(self) -> np.ndarray:
        return (self.ee_point_jacobians() @ self.data.qvel[:7]).reshape(3, 3)

    def target_pose(self) -> np.ndarray:
        return np.concatenate([self.data.mocap_pos[self._target_mocap],
                               self.data.mocap_quat[self._target_mocap]]).astype(float)

    def _target_rotation(self) -> np.ndarray:
        mat = np.zeros(9)
        mujoco.mju_quat2Mat(mat, self.data.mocap_quat[self._target_mocap])
        return mat.reshape(3, 3)

    def target_points(self) -> np.ndarray:
        return self.data.mocap_pos[self._target_mocap] + self.task.target_points @ self._target_rotation().T

    def state(self) -> np.ndarray:
        jac = self.ee_point_jacobians()
        return np.concatenate([self.data.qpos[:7], self.data.qvel[:7],
                               (self.ee_points() - self.target_points()).ravel(), jac @ self.data.qvel[:7]])

    def config(self) -> np.ndarray:
        jac = self.ee_point_jacobians()
        return np.concatenate([self.data.qpos[:7], self.data.qvel[:7], self.ee_points().ravel(),
                               jac @ self.data.qvel[:7]])

    def render(self) -> np.ndarray:
        """RGB image (H, W, 3) uint8 from the head camera."""
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
            self._camera_option = mujoco.MjvOption()  # (MuJoCo's default hides groups 3-5 too: said here)
            self._camera_option.geomgroup[CAMERA_HIDDEN_GROUP] = 0
        self._renderer.update_scene(self.data, camera=CAMERA, scene_option=self._camera_option)
        image = self._renderer.render()
        noise = self._ood.image_noise
        if noise is not None:  # the image_noise family: the frame's noise from the trial's seed and the step
            step = int(round(self.data.time / self.control_dt))
            image = perturb_image(image, noise["noise_std"], noise["blur"], frame_rng(noise["noise_seed"], step))
        return image

    def observation(self) -> Observation:
        return Observation(image=self.render() if self.render_images else None, config=self.config(),
                           time=self.time)

    def mean_distance(self) -> float:
        return float(np.mean(np.linalg.norm(self.ee_points() - self.target_points(), axis=1)))

    def is_success(self) -> bool:
        """The task's success rule (gps_core.tasks.task_success) on the current state."""
        return task_success(self.task, self.state(), self.target_pose())

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
