"""The paper's coat-hanger, toy-hammer and bottle-cap tasks: scripted motions that complete the task
succeed under the task's success rule (gps_core.tasks.task_success); near misses fail."""

import numpy as np
import pytest

from gps_core.kinematics import ArmKinematics
from gps_core.layout import quat_wxyz_to_matrix
from gps_core.tasks import load_task, task_success
from gps_sim import ArmSim

KP = np.array([80, 80, 15, 30, 6, 6, 6.0])
KD = np.array([10, 10, 1.5, 3, 0.6, 0.6, 0.6])


def _track(sim: ArmSim, kin: ArmKinematics, waypoints, steps: int, q_ref=None, roll_rate: float = 0.0):
    """Follow EE-point waypoints (a function of the step -> (3, 3) base-frame points) with a stiff joint PD
    on IK solutions, as a position-controlled arm would; roll_rate (rad/step) turns the wrist on top."""
    limits = sim.joint_limits
    q_ref = sim.joint_positions() if q_ref is None else q_ref
    roll = 0.0
    for k in range(steps):
        q_ref = kin.solve_ee_points(waypoints(k), q_ref, limits, sim.joint_limited, iterations=30)
        roll += roll_rate
        q_cmd = q_ref.copy()
        q_cmd[6] += roll
        sim.step(KP * (q_cmd - sim.joint_positions()) - KD * sim.joint_velocities())
    return q_ref


def _start_above(task, condition: int, offset_target: np.ndarray, lift: float):
    """A sim at the condition with the EE points `lift` above their targets shifted by offset_target (m,
    target frame). Returns (sim, kin, goal points, start points)."""
    sim = ArmSim(task)
    kin = ArmKinematics(task.ee_points)
    sim.reset(condition)
    rot = sim._target_rotation()
    goal = sim.target_points() + rot @ offset_target
    above = goal + np.array([0.0, 0.0, lift])
    sim.set_joint_state(kin.solve_ee_points(above, sim.joint_positions(), sim.joint_limits, sim.joint_limited))
    return sim, kin, goal, above


# ------------------------------------------------------------------------------------------- coat hanger
def _hang(offset_y: float, condition: int = 0, lift: float = 0.06) -> tuple[bool, ArmSim]:
    task = load_task("coat_hanger")
    sim, kin, goal, above = _start_above(task, condition, np.array([0.0, offset_y, 0.0]), lift)
    _track(sim, kin, lambda k: above + (goal - above) * min(1.0, k / 40), 60)
    return sim.is_success(), sim


@pytest.mark.parametrize("condition", [0, 3])
def test_hanger_lowered_onto_the_rail_hangs(condition):
    ok, sim = _hang(0.0, condition)
    assert ok
    pts = sim.ee_points()
    assert np.linalg.norm(pts - sim.target_points(), axis=1).max() < 0.01


@pytest.mark.parametrize("offset_y", [-0.035, 0.035])
def test_hanger_lowered_beside_the_rail_fails(offset_y):
    ok, sim = _hang(offset_y)
    assert not ok


def test_hanger_held_above_the_rail_fails():
    task = load_task("coat_hanger")
    sim, kin, goal, above = _start_above(task, 0, np.zeros(3), 0.03)
    _track(sim, kin, lambda k: above, 20)
    assert not sim.is_success()


def test_hook_on_rail_rule_on_the_target_points():
    """At the target points the rule holds; moving the hook sideways by more than its opening, up off the
    rail or off the rail's end breaks it."""
    task = load_task("coat_hanger")
    pose = task.condition_list("train")[0].target_pose
    x = np.zeros(32)
    assert task_success(task, x, pose)
    rot_x = quat_wxyz_to_matrix(pose[3:])
    for shift, ok in [([0, 0.004, 0], True), ([0, 0.03, 0], False), ([0, -0.03, 0], False),
                      ([0, 0, 0.005], True), ([0, 0, 0.03], False), ([0.3, 0, 0], False), ([-0.1, 0, 0], False)]:
        x[14:23] = np.tile(rot_x @ np.array(shift, float), 3)
        assert task_success(task, x, pose) == ok, shift
