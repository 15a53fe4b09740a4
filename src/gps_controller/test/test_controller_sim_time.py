"""gps_controller under sim time (use_sim_time: true) against the real lockstep gps_sim node over DDS."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from controller_rig import lg_request, pd_controller  # noqa: E402
from test_controller_sim import _rig  # noqa: E402

from gps_msgs.srv import RunTrial  # noqa: E402

pytest.importorskip("gps_sim.sim_node")

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def sim_time_rig(tmp_path_factory):
    yield from _rig(tmp_path_factory, 59, use_sim_time=True)


def test_a_trial_runs_under_sim_time_with_the_lockstep_sim(sim_time_rig):
    """use_sim_time: the lockstep sim's /clock only advances when a command arrives, so nothing in the
    controller may wait on ROS time before the first command (issue 14's deadlock)."""
    trainer, peers = sim_time_rig
    arrays = pd_controller(T=12, bias_joint4=2.0)
    assert trainer.call("set_linear_gaussian", lg_request(1, arrays)).success
    for _ in range(2):
        resp = trainer.call("run_trial", RunTrial.Request(condition=1, policy_type="linear_gaussian", use_noise=True,
                                                          seed=3, record_images=True), timeout=60)
        assert resp.success and resp.steps == 12 and not resp.aborted, resp.message
        r = trainer.wait_rollout(resp.rollout_id)
        # Stamps on the sim's clock (0.05 s per lockstep step since the sim started), not the wall clock.
        assert np.all(r.stamps < 1e5) and np.all(np.diff(r.stamps) >= 0) and r.stamps[-1] > r.stamps[0]
    trainer.spin_for(0.5)
    line = [ln for ln in peers.log(peers.controller).splitlines() if resp.rollout_id in ln][-1]
    assert "observation age p50" in line and "e+" not in line, line  # one clock: sim time
    assert all(p.poll() is None for p in peers.procs)
