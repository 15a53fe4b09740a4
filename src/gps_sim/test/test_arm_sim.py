"""Physics, kinematics and API tests of the embedded arm (no ROS)."""

import numpy as np
import pytest

from gps_core.kinematics import ArmKinematics
from gps_sim import JOINT_NAMES, ArmSim, load_task

SHOULDER_PAN_ORIGIN = np.array([-0.05, -0.188, 0.7397])


@pytest.fixture(scope="module")
def sim():
    s = ArmSim("reach")
    yield s
    s.close()


def ik(kin, target, q, lo, hi, limited, iters=300):
    return kin.solve_ee_points(target, q, np.stack([lo, hi], axis=1), limited, iterations=iters)


def test_api_shapes_and_names(sim):
    obs = sim.reset(0)
    assert obs.image is None and obs.config.shape == (32,)
    assert (sim.dX, sim.dU, sim.dO) == (32, 7, 32)
    assert sim.joint_names == JOINT_NAMES and len(JOINT_NAMES) == 7
    assert JOINT_NAMES[0] == "r_shoulder_pan_joint" and JOINT_NAMES[-1] == "r_wrist_roll_joint"
    np.testing.assert_allclose(sim.effort_limits, [30, 30, 30, 30, 30, 10, 10])
    assert sim.state().shape == (32,)
    assert sim.ee_points().shape == (3, 3) and sim.target_points().shape == (3, 3)
    assert sim.ee_point_jacobians().shape == (9, 7)
    assert sim.target_pose().shape == (7,)
    assert sim.num_conditions("train") == 4 and sim.num_conditions("spatial_test") >= 1
    assert sim.num_conditions("visual_test") >= 1
    assert sim.control_dt == pytest.approx(0.05) and sim.model.opt.timestep == pytest.approx(0.002)


def test_state_and_config_layout(sim):
    sim.reset(1)
    rng = np.random.default_rng(3)
    for _ in range(3):
        sim.step(rng.uniform(-5, 5, 7))
    x, o = sim.state(), sim.config()
    np.testing.assert_allclose(x[:7], sim.joint_positions())
    np.testing.assert_allclose(x[7:14], sim.joint_velocities())
    np.testing.assert_allclose(x[14:23], (sim.ee_points() - sim.target_points()).ravel())
    np.testing.assert_allclose(o[14:23], sim.ee_points().ravel())
    np.testing.assert_allclose(x[23:], o[23:])
    # EE velocities: derivative of the EE points along the joint velocity
    kin = ArmKinematics(sim.task.ee_points)
    q, qd, eps = sim.joint_positions(), sim.joint_velocities(), 1e-6
    fd = (kin.ee_points(q + eps * qd) - kin.ee_points(q - eps * qd)).ravel() / (2 * eps)
    np.testing.assert_allclose(x[23:], fd, atol=1e-6)
    assert np.linalg.norm(x[23:]) > 1e-3


def test_zero_torque_gravity_off_holds_still(sim):
    sim.reset(2)
    q0 = sim.joint_positions()
    for _ in range(20):
        sim.step(np.zeros(7))
    np.testing.assert_allclose(sim.joint_positions(), q0, atol=1e-9)
    np.testing.assert_allclose(sim.joint_velocities(), 0.0, atol=1e-9)
    assert sim.time == pytest.approx(20 * 0.05)


def test_gravity_on_makes_arm_fall():
    s = ArmSim("reach", gravity=True)
    s.reset(0)
    z0 = s.ee_points()[0, 2]
    for _ in range(10):
        s.step(np.zeros(7))
    assert s.ee_points()[0, 2] < z0 - 0.01


@pytest.mark.parametrize("joint", range(7))
def test_positive_torque_turns_joint_positive(sim, joint):
    sim.reset(0)
    u = np.zeros(7)
    u[joint] = 0.5 * sim.effort_limits[joint]
    q0 = sim.joint_positions()
    sim.step(u)
    dq = sim.joint_positions() - q0
    assert dq[joint] > 1e-3
    assert abs(dq[joint]) == pytest.approx(np.max(np.abs(dq)))


def test_joint_rotation_directions_about_axes():
    """At zero angles the arm points along base x: +pan moves the tool to +y, +lift moves it down,
    +elbow flex / +wrist flex would move it down too (PR2 convention: flex limits are <= 0)."""
    kin = ArmKinematics()
    p0 = kin.ee_points(np.zeros(7))[0]
    for joint, axis, sign in [(0, 1, +1), (1, 2, -1), (3, 2, -1), (5, 2, -1)]:
        q = np.zeros(7)
        q[joint] = 0.01
        d = kin.ee_points(q)[0] - p0
        assert sign * d[axis] > 1e-3
        assert abs(d[axis]) > 10 * abs(d[(axis + 1) % 3])
    # roll joints turn the cross-gripper point about the arm's x axis: +roll moves +y towards +z
    for joint in (2, 4, 6):
        q = np.zeros(7)
        q[joint] = 0.1
        assert kin.ee_points(q)[1, 2] > kin.ee_points(np.zeros(7))[1, 2] + 1e-3


def test_torques_clipped_to_effort_limits(sim):
    sim.reset(0)
    sim.step(np.full(7, 1e3))
    np.testing.assert_allclose(sim.applied_efforts(), sim.effort_limits)
    sim.step(np.full(7, -1e3))
    np.testing.assert_allclose(sim.applied_efforts(), -sim.effort_limits)


@pytest.mark.parametrize("sign", [+1.0, -1.0])
def test_joint_limits_hold(sim, sign):
    lo, hi = sim.joint_limits[:, 0], sim.joint_limits[:, 1]
    for j in np.flatnonzero(sim.joint_limited):
        sim.reset(0)
        u = np.zeros(7)
        u[j] = sign * sim.effort_limits[j]
        for _ in range(60):
            sim.step(u)
        q = sim.joint_positions()
        bound = hi[j] if sign > 0 else lo[j]
        assert lo[j] - 0.03 <= q[j] <= hi[j] + 0.03
        assert q[j] == pytest.approx(bound, abs=0.03), (j, q[j], bound)


def test_tool_frame_at_zero_angles():
    kin = ArmKinematics()
    pos, rot = kin.tool_pose(np.zeros(7))
    np.testing.assert_allclose(pos - SHOULDER_PAN_ORIGIN, [1.001, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(rot, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(kin.ee_points(np.zeros(7))[0], pos)


def test_jacobians_match_finite_differences(sim):
    kin = ArmKinematics(sim.task.ee_points)
    rng = np.random.default_rng(0)
    lo, hi = sim.joint_limits[:, 0], sim.joint_limits[:, 1]
    for _ in range(3):
        q = np.where(sim.joint_limited, rng.uniform(lo, hi), rng.uniform(-np.pi, np.pi, 7))
        jac = kin.ee_point_jacobians(q)
        fd = np.zeros((9, 7))
        for j in range(7):
            e = np.zeros(7)
            e[j] = 1e-6
            fd[:, j] = (kin.ee_points(q + e) - kin.ee_points(q - e)).ravel() / 2e-6
        np.testing.assert_allclose(jac, fd, atol=1e-6)
        sim.set_joint_state(q)
        # MuJoCo's kinematics against ours, both float64 on ~1 m lengths: a few ulps per op chain (1e-16
        # relative), so 1e-12 is rounding with margin, not a modelling slack
        np.testing.assert_allclose(sim.ee_point_jacobians(), jac, atol=1e-12)
        np.testing.assert_allclose(sim.ee_points(), kin.ee_points(q), atol=1e-12)


def test_reset_determinism():
    rng_u = np.random.default_rng(7).uniform(-10, 10, (15, 7))
    trajs = []
    for _ in range(2):
        s = ArmSim("reach")
        s.reset(1, seed=5)
        trajs.append(np.array([s.step(u).config for u in rng_u]))
    np.testing.assert_array_equal(trajs[0], trajs[1])
    s = ArmSim("reach")
    s.reset(0, seed=1, condition_set="visual_test")
    a = s.data.mocap_pos.copy()
    s.reset(0, seed=1, condition_set="visual_test")
    np.testing.assert_array_equal(s.data.mocap_pos, a)
    s.reset(0, seed=2, condition_set="visual_test")
    assert not np.array_equal(s.data.mocap_pos, a)


def test_conditions_targets_vary_10_to_20cm():
    task = load_task("reach")
    pos = np.array([c.target_pose[:3] for c in task.condition_list("train")])
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    nearest = np.sort(d, axis=1)[:, 1]
    assert np.all(nearest >= 0.1) and np.all(nearest <= 0.2)


@pytest.mark.parametrize("task_name", ["reach", "shape_sorting"])
def test_target_points_reachable_within_limits(task_name):
    s = ArmSim(task_name)
    kin = ArmKinematics(s.task.ee_points)
    lo, hi, lim = s.joint_limits[:, 0], s.joint_limits[:, 1], s.joint_limited
    for cset in ("train", "spatial_test"):
        for c in range(s.num_conditions(cset)):
            s.reset(c, condition_set=cset)
            assert not s.is_success()
            q = ik(kin, s.target_points(), s.joint_positions(), lo, hi, lim)
            assert np.abs(kin.ee_points(q) - s.target_points()).max() < 1e-3
            s.set_joint_state(q)
            assert s.is_success()


def test_reach_in_5s_with_pd_within_effort_limits():
    """A joint PD towards the IK solution reaches every training target within T = 100 steps."""
    s = ArmSim("reach")
    kin = ArmKinematics(s.task.ee_points)
    lo, hi, lim = s.joint_limits[:, 0], s.joint_limits[:, 1], s.joint_limited
    kp, kd = np.array([80, 80, 15, 30, 6, 6, 6.0]), np.array([10, 10, 1.5, 3, 0.6, 0.6, 0.6])
    for c in range(s.num_conditions()):
        s.reset(c)
        q_goal = ik(kin, s.target_points(), s.joint_positions(), lo, hi, lim)
        for _ in range(s.task.horizon):
            s.step(kp * (q_goal - s.joint_positions()) - kd * s.joint_velocities())
        assert s.is_success(), s.mean_distance()


def test_target_at_different_image_positions():
    s = ArmSim("reach", image_size=64, render_images=True)
    centroids = []
    for c in range(s.num_conditions()):
        img = s.reset(c).image.astype(int)
        assert img.shape == (64, 64, 3) and img.dtype == np.int64
        red = (img[..., 0] > 140) & (img[..., 1] < 70) & (img[..., 2] < 70)
        assert red.sum() >= 3, f"target not visible in condition {c}"
        ys, xs = np.nonzero(red)
        centroids.append((xs.mean(), ys.mean()))
    cen = np.array(centroids)
    d = np.linalg.norm(cen[:, None] - cen[None], axis=-1)
    assert np.all(d[np.triu_indices(len(cen), 1)] > 3.0)
    s.close()


def test_visual_test_changes_pixels_and_image_size():
    s = ArmSim("reach", image_size=32, render_images=True)
    a = s.reset(0, condition_set="train").image
    b = s.reset(0, condition_set="visual_test").image
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    # the paper's visual test: the training positions, with distractors and a changed table colour
    task = load_task("reach")
    np.testing.assert_allclose([c.target_pose for c in task.condition_list("visual_test")],
                               [c.target_pose for c in task.condition_list("train")])
    for name in ("reach", "shape_sorting"):  # the target object keeps its training colour
        assert all("target" not in c.colors for c in load_task(name).condition_list("visual_test"))
    assert np.mean(np.any(a != b, axis=-1)) > 0.05
    s.close()


def test_invalid_inputs_rejected(sim):
    sim.reset(0)
    with pytest.raises(ValueError):
        sim.step(np.zeros(6))
    with pytest.raises(ValueError):
        sim.step(np.array([np.nan] + [0.0] * 6))
    with pytest.raises(KeyError):
        sim.reset(0, condition_set="bogus")
    with pytest.raises(IndexError):
        sim.reset(99)
    with pytest.raises(ValueError):
        sim.set_target_pose(np.zeros(7))
    with pytest.raises(ValueError):
        sim.set_joint_state(np.zeros(5))


def test_explicit_target_pose_and_side_by_side():
    a, b = ArmSim("reach"), ArmSim("reach")
    a.reset(0)
    b.reset(3)
    pose = np.array([0.6, -0.2, 0.5, 1.0, 0.0, 0.0, 0.0])
    a.set_target_pose(pose)
    np.testing.assert_allclose(a.target_pose(), pose)
    np.testing.assert_allclose(a.target_points(), pose[:3] + a.task.target_points)
    assert not np.allclose(b.target_pose(), pose)
    a.step(np.full(7, 5.0))
    assert b.time == 0.0 and a.time == pytest.approx(0.05)


def test_load_task_by_path_and_errors(tmp_path):
    task = load_task("reach")
    assert load_task(task.path).name == "reach" and task.horizon == 100
    with pytest.raises(FileNotFoundError):
        load_task("no_such_task")
