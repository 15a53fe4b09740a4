"""The paper's coat-hanger, toy-hammer and bottle-cap tasks: scripted motions that complete the task
succeed under the task's success rule (gps_core.tasks.task_success); near misses fail."""

import math

import mujoco
import numpy as np
import pytest

from gps_core.kinematics import ArmKinematics
from gps_core.layout import quat_wxyz_to_matrix
from gps_core.tasks import ee_points_in_target_frame, grasp_transform, load_task, task_success
from gps_sim import ArmSim
from gps_sim.scenes import CAMERA_HIDDEN_GROUP, bottle_thread_helix

KP = np.array([80, 80, 15, 30, 6, 6, 6.0])
KD = np.array([10, 10, 1.5, 3, 0.6, 0.6, 0.6])


def _track(sim: ArmSim, kin: ArmKinematics, waypoints, steps: int, q_ref=None, roll_torque: float | None = None):
    """Follow EE-point waypoints (a function of the step -> (3, 3) base-frame points) with a stiff joint PD
    on IK solutions, as a position-controlled arm would. With roll_torque (N m) the wrist roll joint gets
    that torque instead (turning a cap until it is tight: EE points on the roll axis leave the roll free).
    Returns the last reference."""
    q_ref = sim.joint_positions() if q_ref is None else q_ref.copy()
    for k in range(steps):
        q_ref = kin.solve_ee_points(waypoints(k), q_ref, sim.joint_limits, sim.joint_limited, iterations=30)
        u = KP * (q_ref - sim.joint_positions()) - KD * sim.joint_velocities()
        if roll_torque is not None:
            u[6] = roll_torque
            q_ref[6] = sim.joint_positions()[6]
        sim.step(u)
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
def _hang(offset_y: float, condition: int = 0, lift: float = 0.006, back: float = 0.10, settle: bool = True
          ) -> tuple[bool, ArmSim]:
    """Put the hook `back` behind its resting point on the rail (beyond the rail's free end), `lift` above
    it and offset_y to the side, and slide it along the rail to above the resting point, then (settle) down
    to the resting point."""
    task = load_task("coat_hanger")
    sim, kin, behind, start = _start_above(task, condition, np.array([-back, offset_y, 0.0]), lift)
    over, rest = start + np.array([back, 0.0, 0.0]), behind + np.array([back, 0.0, 0.0])
    rest = rest if settle else over
    q = _track(sim, kin, lambda k: start + (over - start) * min(1.0, k / 40), 50)
    _track(sim, kin, lambda k: rest + (over - rest) * max(0.0, 1 - k / 10), 30, q_ref=q)
    return sim.is_success(), sim


@pytest.mark.parametrize("condition", [0, 3])
def test_hanger_slid_onto_the_rail_hangs(condition):
    ok, sim = _hang(0.0, condition)
    assert ok
    assert np.linalg.norm(sim.ee_points() - sim.target_points(), axis=1).max() < 0.01


@pytest.mark.parametrize("offset_y", [-0.035, 0.035])
def test_hanger_slid_beside_the_rail_fails(offset_y):
    ok, sim = _hang(offset_y)
    assert not ok


def test_hanger_held_above_the_rail_fails():
    ok, sim = _hang(0.0, lift=0.03, settle=False)
    assert not ok


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


# -------------------------------------------------------------------------------------------- bottle cap
def _screw(condition: int, roll_torque: float | None, tilt: float = 0.0, steps: int = 60):
    """Lower the cap from 2 cm above the neck, then press (the EE points 4 mm below seated) for `steps`
    steps, turning the wrist with `roll_torque` (N m; None: the wrist holds its angle). tilt (rad) leans
    the reference axis. Returns (success, sim, wrist turn in rad while pressing)."""
    task = load_task("bottle_cap")
    sim, kin, goal, above = _start_above(task, condition, np.zeros(3), 0.02)
    press = goal - np.array([0.0, 0.0, 0.004]) + np.outer([0.0, 0.05, 0.10], [0.0, math.tan(tilt), 0.0])
    q = _track(sim, kin, lambda k: above + (press - above) * min(1.0, k / 20), 25)
    q6 = sim.joint_positions()[6]
    _track(sim, kin, lambda k: press, steps, q_ref=q, roll_torque=roll_torque)
    return sim.is_success(), sim, sim.joint_positions()[6] - q6


def _cap_in_bottle_frame(sim: ArmSim) -> np.ndarray:
    return ee_points_in_target_frame(sim.task, sim.state(), sim.target_pose())


def test_thread_helices_descend_clockwise():
    p = load_task("bottle_cap").scene_params
    h = bottle_thread_helix(p)
    assert h.shape[0] == p["thread_starts"]
    ang = np.unwrap(np.arctan2(h[0, :, 1], h[0, :, 0]))
    np.testing.assert_allclose(np.diff(h[0, :, 2]) / np.diff(ang), p["thread_lead"] / (2 * math.pi))  # dz/dang
    assert ang[-1] - ang[0] == pytest.approx(-2 * math.pi * p["thread_turns"])  # clockwise seen from above
    np.testing.assert_allclose(np.hypot(h[..., 0], h[..., 1]), p["thread_radius"])


def test_the_thread_collides_but_the_camera_does_not_draw_it():
    """The thread and the cap's lugs are contact detail in CAMERA_HIDDEN_GROUP: they keep colliding (the
    screwing tests below need them), and the head camera's image does not change when they grow to 4 cm
    (drawn, a 4 cm capsule covers many pixels of a 64x64 frame)."""
    sim = ArmSim("bottle_cap", image_size=64, render_images=True)
    names = [mujoco.mj_id2name(sim.model, mujoco.mjtObj.mjOBJ_GEOM, i) or "" for i in range(sim.model.ngeom)]
    hidden = np.flatnonzero(sim.model.geom_group == CAMERA_HIDDEN_GROUP)
    assert {names[i] for i in hidden} == {n for n in names if "thread" in n or "held_cap_lug" in n}
    assert len(hidden) > 30
    assert np.all((sim.model.geom_contype[hidden] | sim.model.geom_conaffinity[hidden]) > 0)
    sim.reset(0)
    before = sim.render()
    sim.model.geom_size[hidden, 0] = 0.04
    sim.model.geom_rbound[hidden] = 0.2
    np.testing.assert_array_equal(sim.render(), before)
    sim.model.geom_group[hidden] = 0  # the same change, drawn: the check above could fail
    assert np.any(sim.render() != before)


@pytest.mark.parametrize("condition", [0, 3])
def test_cap_pressed_and_turned_clockwise_is_screwed_on(condition):
    ok, sim, turned = _screw(condition, roll_torque=1.0)
    assert ok
    assert turned > math.radians(60)  # the thread made the cap turn on its way down (>= 90 deg from any landing)
    assert _cap_in_bottle_frame(sim)[0, 2] < 0.0025


@pytest.mark.parametrize("condition", [0, 3])
def test_cap_pressed_unturned_rests_on_the_thread(condition):
    ok, sim, turned = _screw(condition, roll_torque=None)
    assert not ok and abs(turned) < 0.05
    assert _cap_in_bottle_frame(sim)[0, 2] > 0.004  # held up by the thread: at least a quarter turn above seated


def test_cap_turned_the_wrong_way_stays_up():
    ok, sim, turned = _screw(0, roll_torque=-1.0)
    assert not ok and _cap_in_bottle_frame(sim)[0, 2] > 0.004


def test_cap_seated_rule_rejects_a_tilted_or_off_axis_cap():
    """Cross-threaded caps sit tilted: the rule needs the cap's axis within 6 degrees of the neck's and
    within 3 mm of it, and the inner top within 2.5 mm of the lip."""
    task = load_task("bottle_cap")
    pose = task.condition_list("train")[0].target_pose
    rot = quat_wxyz_to_matrix(pose[3:])

    def state(top, tilt):
        axis = np.array([math.sin(tilt), 0.0, math.cos(tilt)])
        pts = np.array(top) + np.outer([0.0, 0.05, 0.10], axis)  # bottle frame
        x = np.zeros(32)
        x[14:23] = ((pts - task.target_points) @ rot.T).ravel()
        return x

    assert task_success(task, state([0, 0, 0.001], 0.0), pose)
    assert task_success(task, state([0.002, 0, 0.002], math.radians(4)), pose)
    assert not task_success(task, state([0, 0, 0.001], math.radians(8)), pose)
    assert not task_success(task, state([0.004, 0, 0.001], 0.0), pose)
    assert not task_success(task, state([0, 0, 0.0045], 0.0), pose)


# -------------------------------------------------------------------------------------------- toy hammer
def _claw(condition: int, offset: np.ndarray, condition_set: str = "train", back: float = 0.06):
    """Put the claw `back` behind its goal (+ offset, nail frame) and slide it forward along the claw to the
    goal + offset, with the EE points of the condition's grasp."""
    task = load_task("toy_hammer")
    sim = ArmSim(task)
    sim.reset(condition, condition_set=condition_set)
    kin = ArmKinematics(sim._ee_offsets)
    rot = sim._target_rotation()
    goal = sim.target_points() + rot @ np.asarray(offset, float)
    start = goal - rot @ np.array([back, 0.0, 0.0])
    sim.set_joint_state(kin.solve_ee_points(start, sim.joint_positions(), sim.joint_limits, sim.joint_limited))
    _track(sim, kin, lambda k: start + (goal - start) * min(1.0, k / 30), 45)
    return sim.is_success(), sim


@pytest.mark.parametrize("condition,condition_set", [(0, "train"), (1, "train"), (2, "train"), (1, "spatial_test")])
def test_claw_slid_under_the_nail_head_succeeds(condition, condition_set):
    """Every grasp: the EE points follow the hammer in the gripper, so the same scripted slide works."""
    ok, sim = _claw(condition, np.zeros(3), condition_set)
    assert ok
    assert np.linalg.norm(sim.ee_points() - sim.target_points(), axis=1).max() < 0.005


@pytest.mark.parametrize("offset", [[0.0, 0.0, 0.012], [0.0, 0.02, 0.0], [-0.03, 0.0, 0.0]])
def test_claw_above_the_head_beside_or_short_of_the_nail_fails(offset):
    ok, sim = _claw(0, np.array(offset))
    assert not ok


def test_grasp_moves_the_hammer_and_its_ee_points_together():
    task = load_task("toy_hammer")
    sim = ArmSim(task)
    gid = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_GEOM, "held_hammer_prong0")
    slot, width, _, length = task.scene_params["claw"]
    for i, cond in enumerate(task.condition_list("train")):
        sim.reset(i)
        rot, shift = grasp_transform(cond.grasp)
        np.testing.assert_allclose(sim._ee_offsets, task.ee_points @ rot.T + shift)
        # the prong's centre lies half a prong ahead of the slot root (EE point 0) and half a slot + half a
        # prong aside, in the hammer's frame, wherever the grasp put the hammer in the tool frame
        tool_rot = sim.data.site_xmat[sim._site].reshape(3, 3)
        prong_tool = tool_rot.T @ (sim.data.geom_xpos[gid] - sim.data.site_xpos[sim._site])
        np.testing.assert_allclose(rot.T @ (prong_tool - shift),
                                   task.ee_points[0] + [length / 2, -(slot + width) / 2, 0.0], atol=1e-9)
    assert len({tuple(c.grasp) for c in task.condition_list("train")}) == 4
    new = {tuple(c.grasp) for c in task.condition_list("spatial_test")}
    assert not new & {tuple(c.grasp) for c in task.condition_list("train")}  # the spatial test's grasps are new


@pytest.mark.parametrize("condition", [0, 1, 2, 3])
def test_the_nail_head_stops_the_claw_whatever_the_grasp(condition):
    """Slid in 5 mm too high, the prongs meet the nail's head under every grasp: the hammer's contacts move
    with it (a regression test: moving the geoms of the compiled model, not its body, missed them)."""
    ok, sim = _claw(condition, np.array([0.0, 0.0, 0.005]))
    assert not ok
    root = ee_points_in_target_frame(sim.task, sim.state(), sim.target_pose())[0]
    assert root[0] < -0.02  # stopped short: the shaft never got 1 cm into the slot
