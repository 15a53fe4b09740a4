"""The safety layer and the state assembly as plain numpy (no ROS)."""

import numpy as np
import pytest

from gps_controller.observation import JointOrderError, JointReorder, StateAssembler, target_points_from_pose
from gps_controller.safety import DeadlineCounter, SafetyLayer

LIMITS = np.array([30.0, 30.0, 30.0, 30.0, 30.0, 10.0, 10.0])
LOWER = np.array([-2.2854, -0.5236, -3.9, -2.3213, -np.inf, -2.18, -np.inf])
UPPER = np.array([0.7146, 1.3963, 0.8, 0.0, np.inf, 0.0, np.inf])
Q_MID = np.array([-0.72, -0.44, -1.32, -1.83, -1.43, -1.54, -1.94])


def layer(**kw):
    return SafetyLayer(LIMITS, LOWER, UPPER, joint_limit_margin=0.05, stale_timeout=0.1, **kw)


def test_clamps_to_effort_limits_and_never_exceeds_them():
    rng = np.random.default_rng(0)
    s = layer()
    for _ in range(200):
        u = rng.normal(scale=100.0, size=7)
        r = s.filter(u, Q_MID)
        assert not r.fault
        assert np.all(np.abs(r.torque) <= LIMITS)
        inside = np.abs(u) <= LIMITS
        assert np.array_equal(r.torque[inside], u[inside])
    r = s.filter([50, -50, 1, 2, 3, 20, -20], Q_MID)
    assert r.clamped
    assert r.torque.tolist() == [30, -30, 1, 2, 3, 10, -10]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_torque_gives_zero_and_a_fault(bad):
    u = np.ones(7)
    u[5] = bad
    r = layer(joint_names=tuple(f"j{i}" for i in range(7))).filter(u, Q_MID)
    assert np.array_equal(r.torque, np.zeros(7))
    assert "non-finite" in r.fault and "j5" in r.fault


def test_wrong_size_torque_is_a_fault_with_zero_output():
    r = layer().filter(np.ones(6), Q_MID)
    assert r.fault and np.array_equal(r.torque, np.zeros(7))


def test_joint_limit_guard_zeroes_only_outward_torque():
    s = layer()
    q = Q_MID.copy()
    q[3] = -0.01  # elbow within the margin of its upper limit 0
    q[1] = -0.52  # shoulder lift within the margin of its lower limit
    r = s.filter([0, -5, 0, 5, 0, 0, 0], q)
    assert r.torque[3] == 0 and r.torque[1] == 0
    assert set(r.limited_joints) == {1, 3}
    r = s.filter([0, 5, 0, -5, 0, 0, 0], q)  # pulling back in is allowed
    assert r.torque[3] == -5 and r.torque[1] == 5
    q[4] = 100.0  # continuous joint: no guard
    assert s.filter([0, 0, 0, 0, 7, 0, 0], q).torque[4] == 7


def test_stale_data_detection():
    s = layer()
    assert s.check_fresh(10.0, None).startswith("joint states stale")
    assert s.check_fresh(10.0, 9.95) == ""
    assert s.check_fresh(10.0, 9.8).startswith("joint states stale")
    assert s.check_fresh(10.0, 9.95, None, need_image=True).startswith("camera stale")
    assert s.check_fresh(10.0, 9.95, 9.7, need_image=True).startswith("camera stale")
    assert s.check_fresh(10.0, 9.95, 9.7, need_image=False) == ""


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError):
        SafetyLayer([30.0, 0.0])
    with pytest.raises(ValueError):
        SafetyLayer([30.0, np.nan])
    with pytest.raises(ValueError):
        SafetyLayer([30.0], [1.0], [0.0])


def test_deadline_counter():
    d = DeadlineCounter(0.05, slack=0.5)
    assert not d.record(0.00, periodic=True)
    assert not d.record(0.06, periodic=True)
    assert d.record(0.20, periodic=True)  # 140 ms after the previous command
    assert d.record(0.30, observation_time=0.24, periodic=False)  # 60 ms compute > one period
    assert not d.record(0.40, observation_time=0.39, periodic=False)
    assert d.misses == 2


def test_joint_reorder():
    names = ["a", "b", "c"]
    r = JointReorder(names, strict=True)
    q, qd = r(["c", "a", "b"], [3.0, 1.0, 2.0], [30.0, 10.0, 20.0])
    assert q.tolist() == [1, 2, 3] and qd.tolist() == [10, 20, 30]
    with pytest.raises(JointOrderError, match="missing"):
        r(["a", "b"], [1.0, 2.0], [0.0, 0.0])
    with pytest.raises(JointOrderError, match="unknown"):
        r(["a", "b", "c", "d"], [1.0, 2.0, 3.0, 4.0], [0.0] * 4)
    with pytest.raises(JointOrderError, match="NaN"):
        r(["a", "b", "c"], [1.0, np.nan, 3.0], [0.0] * 3)
    with pytest.raises(JointOrderError, match="velocities"):
        r(["a", "b", "c"], [1.0, 2.0, 3.0], [])
    loose = JointReorder(names, strict=False)
    q, _ = loose(["d", "c", "b", "a"], [9.0, 3.0, 2.0, 1.0], [0.0] * 4)
    assert q.tolist() == [1, 2, 3]


def test_state_matches_the_simulation():
    """x and o assembled from joint states + target pose equal ArmSim.state()/config()."""
    from gps_controller.observation import MujocoKinematics
    from gps_sim import ArmSim, load_task

    task = load_task("reach")
    sim = ArmSim(task)
    sim.reset(2)
    rng = np.random.default_rng(1)
    for _ in range(3):
        sim.step(rng.normal(scale=5.0, size=7))
    q, qd = sim.joint_positions().copy(), sim.joint_velocities().copy()
    asm = StateAssembler(MujocoKinematics(task.ee_points), task.target_points)
    x, o = asm.assemble(q, qd, sim.target_pose())
    # the controller's FK against MuJoCo's, float64: rounding (1e-16 relative) on metre-scale points
    np.testing.assert_allclose(x, sim.state(), atol=1e-9)
    np.testing.assert_allclose(o, sim.config(), atol=1e-9)
    np.testing.assert_allclose(target_points_from_pose(sim.target_pose(), task.target_points),
                               sim.target_points(), atol=1e-12)
    sim.close()
