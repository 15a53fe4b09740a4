"""gps_controller against the real simulation node (lockstep) over DDS: reset, run_trial, Rollout."""

import os
import sys

import numpy as np
import pytest
import rclpy

from gps_core.linear_gaussian import LinearGaussianPolicy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from controller_rig import (  # noqa: E402
    LIMITS,
    SimPeers,
    Trainer,
    _write_params,
    lg_request,
    pd_controller,
    subprocess_env,
)

from gps_msgs.srv import RunTrial  # noqa: E402

pytest.importorskip("gps_sim.sim_node")

pytestmark = pytest.mark.ros


def _rig(tmp_path_factory, domain_offset, **params):
    env = subprocess_env(domain_offset=domain_offset)
    params = _write_params(tmp_path_factory.mktemp("sim") / "controller.yaml", reset_mode="sim_service",
                           stale_timeout=3.0, horizon=12, **params)
    peers = SimPeers(env, params)
    try:
        os.environ["ROS_DOMAIN_ID"], saved = env["ROS_DOMAIN_ID"], os.environ.get("ROS_DOMAIN_ID", "0")
        rclpy.init()
        trainer = Trainer()
        yield trainer, peers
        trainer.close()
        rclpy.shutdown()
        os.environ["ROS_DOMAIN_ID"] = saved
    finally:
        peers.close()


@pytest.fixture(scope="module")
def sim_rig(tmp_path_factory):
    yield from _rig(tmp_path_factory, 57)


def test_lockstep_trial_resets_and_is_deterministic(sim_rig):
    from gps_core.linear_gaussian import init_lqr
    from gps_sim import ArmSim, load_task

    trainer, peers = sim_rig
    procs = peers.procs
    task = load_task("reach")
    sim = ArmSim(task)
    sim.reset(2)
    x0 = sim.state()
    lg = init_lqr(x0, 7, 12, 0.05, init_var=0.5)
    arrays = LinearGaussianPolicy(lg.K, lg.k + 2.0, lg.pol_covar)  # a constant push so the arm moves
    assert trainer.call("set_linear_gaussian", lg_request(2, arrays)).success
    rollouts = []
    for _ in range(2):
        resp = trainer.call("run_trial", RunTrial.Request(condition=2, policy_type="linear_gaussian",
                                                          record_images=True, use_noise=True, seed=5), timeout=120)
        assert resp.success and resp.steps == 12 and not resp.aborted, resp.message
        rollouts.append(trainer.wait_rollout(resp.rollout_id))
    a, b = rollouts
    # Reset to condition 2: the first state is the simulation's state right after reset.
    np.testing.assert_allclose(a.states[0], x0, atol=1e-6)
    assert a.images.shape == (12, 64, 64, 3) and a.images.std() > 1.0
    # Replaying the commanded torques in a local simulation reproduces the recorded states (float64 MuJoCo
    # in two processes, the controller's x from its own FK: rounding only; 1e-6 leaves margin for the
    # 11-step replay and is far below the millimetres a wrong torque moves the arm).
    for t in range(11):
        sim.step(a.actions[t])
        np.testing.assert_allclose(a.states[t + 1], sim.state(), atol=1e-6)
    assert np.linalg.norm(a.states[-1, :7] - a.states[0, :7]) > 1e-3
    # Lockstep + same seed: the two trials are the same computation in the same processes (float64).
    np.testing.assert_allclose(a.states, b.states, atol=1e-9)
    np.testing.assert_allclose(a.actions, b.actions, atol=1e-9)
    assert np.all(np.abs(a.actions) <= LIMITS)
    assert all(p.poll() is None for p in procs)
    sim.close()


def test_a_wall_clock_controller_reports_no_observation_age_against_sim_time_stamps(sim_rig):
    """The sim stamps joint states with sim time; a controller on wall time must not subtract them
    from the wall clock (issue 14: it reported 1.8e12 ms)."""
    trainer, peers = sim_rig
    assert trainer.call("set_linear_gaussian", lg_request(0, pd_controller(T=12))).success
    resp = trainer.call("run_trial", RunTrial.Request(condition=0, policy_type="linear_gaussian"), timeout=120)
    assert resp.success and resp.steps == 12, resp.message
    trainer.spin_for(0.5)
    lines = [ln for ln in peers.log(peers.controller).splitlines() if resp.rollout_id in ln]
    assert lines and "observation age n/a" in lines[-1], lines
