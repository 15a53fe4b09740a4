"""gps_controller against the real simulation node (lockstep) over DDS: reset, run_trial, Rollout."""

import os
import subprocess
import sys

import numpy as np
import pytest
import rclpy

from gps_core.linear_gaussian import LinearGaussianPolicy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from controller_rig import LIMITS, Trainer, _write_params, lg_request, subprocess_env  # noqa: E402

from gps_msgs.srv import RunTrial  # noqa: E402
from testing_helpers import wait_for_output  # noqa: E402

pytest.importorskip("gps_sim.sim_node")

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def sim_rig(tmp_path_factory):
    env = subprocess_env(domain_offset=57)
    params = _write_params(tmp_path_factory.mktemp("sim") / "controller.yaml", reset_mode="sim_service",
                           stale_timeout=3.0, horizon=12)
    procs = []
    try:
        for cmd, word in (([sys.executable, "-m", "gps_sim.sim_node"], None),
                          ([sys.executable, "-m", "gps_controller.controller_node", "--ros-args", "--params-file",
                            str(params)], "ready:")):
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(proc)
            if word:
                wait_for_output(proc, word)
        os.environ["ROS_DOMAIN_ID"], saved = env["ROS_DOMAIN_ID"], os.environ.get("ROS_DOMAIN_ID", "0")
        rclpy.init()
        trainer = Trainer()
        yield trainer, procs
        trainer.close()
        rclpy.shutdown()
        os.environ["ROS_DOMAIN_ID"] = saved
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_lockstep_trial_resets_and_is_deterministic(sim_rig):
    from gps_core.linear_gaussian import init_lqr
    from gps_sim import ArmSim, load_task

    trainer, procs = sim_rig
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
    # Replaying the commanded torques in a local simulation reproduces the recorded states.
    for t in range(11):
        sim.step(a.actions[t])
        np.testing.assert_allclose(a.states[t + 1], sim.state(), atol=1e-6)
    assert np.linalg.norm(a.states[-1, :7] - a.states[0, :7]) > 1e-3
    # Lockstep + same seed: the two trials are identical.
    np.testing.assert_allclose(a.states, b.states, atol=1e-9)
    np.testing.assert_allclose(a.actions, b.actions, atol=1e-9)
    assert np.all(np.abs(a.actions) <= LIMITS)
    assert all(p.poll() is None for p in procs)
    sim.close()
