"""Issue 12's small learning test: a visuomotor CNN taught at four target positions reaches new ones, by sight.

The paper's reason for an end-to-end visuomotor policy is that it works at target positions it was not
trained on (Table I, spatial test). Here, on the reach task with the real MuJoCo arm and real torch:

1. a teacher that needs no learning (damped least-squares IK on the EE-point Jacobian for the goal joint
   angles, then a joint-space PD law) acts at the task's four training positions, with perturbed starts and
   action noise so off-nominal states are covered; every step gives (image, robot configuration o,
   teacher torque);
2. the CNN's vision layers are pretrained by pose regression (the paper's phase 1,
   ``gps_trainer.pose_pretraining``: images of the target at random places, no actions), then the S-step
   (``train_policy``) fits the policy to the teacher's torques at the four positions; its fully connected
   layers alone (``fc_only_iterations``, the reference code's first phase), so what the policy does was
   learned at those four positions only;
3. the policy (mean action, no noise; ``evaluate_policy``) must succeed by the task's success rule at the
   midpoints of the training region's edges: new positions, each between two training positions, farther
   than the success tolerance from all of them (no memorized training motion succeeds there) and more than
   twice the tolerance from each other (no single motion succeeds at two of them);
4. the vision ablations (``evaluate_policy(ablation=...)``): shown the image of another new position
   (``swap``, the arm as it is), the policy must fail at every one: it goes where it sees the target.
   With the image blanked (``blank``) it must fail at all but at most one: a black image gives the
   spatial softmax's centre points, a fixed "seen" target (here near one of the midpoints), and the same
   motion for every position.

(Without the pose pretraining, a CNN trained end to end on four positions memorized them here: it reached
the training positions and went to one of them from a new one.)
"""

from __future__ import annotations

import itertools

import mujoco
import numpy as np
import pytest
import torch

from gps_controller.policies import VisuomotorConfig, make_visuomotor_policy
from gps_controller.policies.neural import GaussianPolicy
from gps_core.tasks import TaskConfig, load_task, task_from_dict
from gps_trainer.paper.evaluation import evaluate_policy
from gps_trainer.policy_opt import PolicyOptConfig, train_policy
from gps_trainer.pose_pretraining import load_pretrained_vision, pretrain_pose

IMAGE = 32  # pixels; small, so the test runs in about a minute on one core
ROLLOUTS = 5  # teacher rollouts per training position (the first without noise)
SEED = 0


def _sim_or_skip(task: TaskConfig, render: bool = True):
    gps_sim = pytest.importorskip("gps_sim")
    try:
        sim = gps_sim.ArmSim(task, image_size=IMAGE, render_images=render)
        if render:
            sim.render()
    except Exception as exc:  # no offscreen GL on this machine
        pytest.skip(f"simulator rendering unavailable: {exc}")
    return sim


class Teacher:
    """Reaches any target pose without learning, from the full state: the goal joint angles by damped
    least squares on the EE-point Jacobian (on a private simulator, from the task's start angles), then
    u = D (kp (q* - q) - kd qd) with D the joint-space inertia's diagonal at the start (so every joint
    gets about the same closed-loop bandwidth; critically damped at 5 rad/s, slow enough for 20 Hz).
    Has the policy interface (``act(o, image)``) for ``evaluate_policy``; ``world`` is the simulator it acts
    in, from which it reads the target pose (an instrumented teacher)."""

    uses_images = False
    omega = 5.0  # rad/s

    def __init__(self, world, task: TaskConfig):
        self.world = world
        self._ik = _sim_or_skip(task, render=False)
        self._start = task.condition_list("train")[0].joint_angles.copy()
        self._ik.set_joint_state(self._start)
        inertia = np.zeros((7, 7))
        mujoco.mj_fullM(self._ik.model, self._ik.data, inertia)
        self.d = np.diag(inertia).copy()
        self._goal_for: np.ndarray | None = None
        self._goal = self._start

    def goal(self, target_pose: np.ndarray, iterations: int = 60, damping: float = 1e-2) -> np.ndarray:
        if self._goal_for is None or not np.array_equal(target_pose, self._goal_for):
            sim, q = self._ik, self._start.copy()
            sim.set_target_pose(target_pose)
            for _ in range(iterations):
                sim.set_joint_state(q)
                err = (sim.target_points() - sim.ee_points()).ravel()
                jac = sim.ee_point_jacobians()
                q = q + jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(9), err)
            self._goal_for, self._goal = target_pose.copy(), q
        return self._goal

    def act(self, o: np.ndarray, image: np.ndarray | None = None, noise: np.ndarray | None = None) -> np.ndarray:
        q, qd = o[:7], o[7:14]  # o = [q, qd, EE points, EE point velocities]
        q_goal = self.goal(self.world.target_pose())
        return self.d * (self.omega ** 2 * (q_goal - q) - 2.0 * self.omega * qd)

    def close(self) -> None:
        self._ik.close()


def collect_teacher_data(sim, teacher: Teacher, rng: np.random.Generator, rollouts: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teacher rollouts at every training position: start angles moved by U(-0.1, 0.1) rad and, after the
    first rollout, smooth (AR(1)) action noise of about 9 rad/s^2 per joint; the labels are the teacher's
    noise-free torques at the visited states. Returns o (N, 32), images (N, H, W, 3) uint8, torques (N, 7)."""
    obs, images, actions = [], [], []
    for cond in range(sim.num_conditions("train")):
        for r in range(rollouts):
            sim.reset(cond, condition_set="train")
            sim.set_joint_state(sim.joint_positions() + rng.uniform(-0.1, 0.1, 7))
            ob, noise = sim.observation(), np.zeros(7)
            for _ in range(sim.task.horizon):
                u = teacher.act(ob.config)
                obs.append(ob.config)
                images.append(ob.image)
                actions.append(u)
                noise = 0.8 * noise + 0.6 * rng.standard_normal(7)
                ob = sim.step(u + (9.0 * teacher.d * noise if r > 0 else 0.0))
    return np.array(obs), np.array(images), np.array(actions)


def edge_midpoints(task: TaskConfig) -> list[list[float]]:
    """Midpoints of the training positions' pairs that share an x or a y (the region's edges)."""
    pos = [c.target_pose[:3] for c in task.condition_list("train")]
    return [list((a + b) / 2) for a, b in itertools.combinations(pos, 2)
            if np.isclose(a[0], b[0]) or np.isclose(a[1], b[1])]


def train_visuomotor(sim, obs: np.ndarray, images: np.ndarray, actions: np.ndarray, precision: np.ndarray,
                     vision_file) -> GaussianPolicy:
    """Pose-pretrained vision (random target positions), then the S-step's FC-only phase on the teacher data."""
    filters = (16, 16, 16)
    metrics = pretrain_pose({"image_size": IMAGE, "num_train": 300, "num_test": 50, "iterations": 1500,
                             "learning_rate": 1e-3, "seed": SEED,
                             "net": {"conv_filters": list(filters)}, "device": "cpu", "output": str(vision_file),
                             "log_every": 500}, sim=sim)
    assert metrics["test_error_cm"] < 0.5 * metrics["baseline_mean_error_cm"], metrics
    policy = make_visuomotor_policy(VisuomotorConfig(config_dim=obs.shape[1], action_dim=7, image_height=IMAGE,
                                                     image_width=IMAGE, conv_filters=filters), seed=SEED)
    load_pretrained_vision(policy, vision_file)
    diag = train_policy(policy, obs, images, actions, np.broadcast_to(precision, actions.shape),
                        PolicyOptConfig(iterations=0, fc_only_iterations=3000, learning_rate=1e-3, device="cpu",
                                        inference_precision="fp32", seed=SEED))
    assert diag.loss_after < 0.05 * diag.loss_before, diag.to_dict()
    return policy


def test_cnn_taught_at_four_positions_reaches_new_ones_by_sight(tmp_path):
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    reach = load_task("reach")
    unseen = edge_midpoints(reach)
    train_pos = np.array([c.target_pose[:3] for c in reach.condition_list("train")])
    gaps = [float(np.min(np.linalg.norm(train_pos - p, axis=1))) for p in unseen]
    apart = [float(np.linalg.norm(np.subtract(a, b))) for a, b in itertools.combinations(unseen, 2)]
    assert len(unseen) == 4 and min(gaps) > reach.success_tolerance < min(apart) / 2, (gaps, apart)
    # the new positions as an evaluation set (start angles perturbed as in every evaluation set)
    task = task_from_dict({"extends": "reach", "conditions": {
        "validation": [{"target_position": p, "perturbation": 0.03} for p in unseen]}})

    sim = _sim_or_skip(task)
    teacher = Teacher(sim, task)
    try:
        obs, images, actions = collect_teacher_data(sim, teacher, np.random.default_rng(SEED), ROLLOUTS)
        # the torque error weighted as joint acceleration error (precision D^-2)
        policy = train_visuomotor(sim, obs, images, actions, 1.0 / teacher.d ** 2, tmp_path / "vision.safetensors")
        kw = {"sim": sim, "condition_sets": ("validation",), "trials_per_set": len(unseen), "seed": SEED}
        seen = evaluate_policy(policy, **kw).sets["validation"]
        blank = evaluate_policy(policy, ablation="blank", **kw).sets["validation"]
        swap = evaluate_policy(policy, ablation="swap", **kw).sets["validation"]
        world = _sim_or_skip(task, render=False)
        expert_actor = Teacher(world, task)
        try:
            expert = evaluate_policy("teacher", actor=expert_actor, **{**kw, "sim": world}).sets["validation"]
        finally:
            expert_actor.close()
            world.close()
    finally:
        teacher.close()
        sim.close()

    cm = {name: [round(100 * d, 1) for d in s.final_distance]
          for name, s in (("image", seen), ("swap", swap), ("blank", blank), ("teacher", expert))}
    assert all(expert.success), f"the new positions must be reachable: final distances (cm) {cm}"
    assert all(seen.success), f"the CNN must reach every new position from its image: {cm}"
    assert not any(swap.success), f"shown another position's image it must fail at every new position: {cm}"
    by_sight = [ok and not bl for ok, bl in zip(seen.success, blank.success, strict=True)]
    assert sum(by_sight) >= len(unseen) - 1, f"blanked, it must fail at all but at most one new position: {cm}"
