"""What arrives on /gps/rollouts cannot poison training (issue 13, item 2), over real DDS: while an
iteration runs, rollouts from a namespace that is no configured controller, for slots no trial asked
for, with self-consistent but foreign dimensions (dX=5, dO=0), with an empty rollout_id, and bytes that
are not a Rollout are rejected and counted; the trainer keeps running, completes the iteration and
stores exactly the rollouts its trials produced. The controller is ``fake_controller_peer.py`` (no
simulation needed for what this tests)."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.serialization import serialize_message

from gps_controller import conversions as conv
from gps_controller.qos import ROLLOUT_QOS
from gps_msgs.msg import Rollout
from gps_msgs.srv import GetStatus, StartIteration
from gps_trainer.storage import RolloutStore
from testing_helpers import call_service, wait_for_output

pytestmark = pytest.mark.ros
HERE = Path(__file__).parent
M, N, T = 2, 3, 10


def _rollout(ns: str, rid: str, condition: int, sample: int, dX: int = 32, dO: int = 32) -> Rollout:
    rng = np.random.default_rng(0)
    return conv.rollout_to_msg(conv.RolloutData(
        states=rng.normal(size=(T + 1, dX)), actions=rng.normal(size=(T + 1, 7)),
        observations=rng.normal(size=(T + 1, dO)), noise=np.zeros((T + 1, 7)), stamps=np.arange(T + 1) * 0.05,
        condition=condition, iteration=0, sample_index=sample, robot_namespace=ns, rollout_id=rid))


def test_foreign_and_malformed_rollouts_are_rejected_and_counted(tmp_path, ros_env):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"name: rejects\nalgorithm: {{type: traj_opt}}\ntask: reach\nconditions: {M}\n"
                          f"horizon: {T}\nsamples_per_condition: {N}\niterations: 1\n")
    params = tmp_path / "trainer.yaml"
    params.write_text("gps_trainer:\n  ros__parameters:\n"
                      f"    experiment: {experiment}\n    output_dir: {tmp_path / 'out'}\n"
                      "    controller_namespaces: [robot1]\n    fsync: false\n    trial_timeout_s: 20.0\n")
    peer = subprocess.Popen([sys.executable, str(HERE / "fake_controller_peer.py"), "--namespace", "robot1",
                             "--horizon", str(T), "--delay", "0.4"], env=ros_env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    log = open(tmp_path / "trainer.log", "w")
    trainer = subprocess.Popen([sys.executable, "-m", "gps_trainer.trainer_node", "--ros-args", "--params-file",
                                str(params)], env=ros_env, stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    node = rclpy.create_node("rollout_intruder")
    try:
        wait_for_output(peer, "ready")
        pub = node.create_publisher(Rollout, "/gps/rollouts", ROLLOUT_QOS)
        get = node.create_client(GetStatus, "gps_trainer/get_status")
        start = node.create_client(StartIteration, "gps_trainer/start_iteration")
        assert call_service(node, start, StartIteration.Request(iterations=1), timeout=60.0).accepted
        deadline = time.monotonic() + 60
        while (st := call_service(node, get, GetStatus.Request()).status).phase != "sampling":
            assert time.monotonic() < deadline, st
            time.sleep(0.05)
        bad = [_rollout("intruder", "intruder/0/0/0/x", 0, 0),  # not a configured controller
               _rollout("robot1", "robot1/0/1/7/x", 1, 7),  # a slot no trial asked for
               _rollout("robot1", "robot1/0/1/2/x", 1, 2, dX=5, dO=0),  # foreign dimensions
               _rollout("robot1", "", 0, 1)]  # empty rollout_id
        for msg in bad:
            pub.publish(msg)
        pub.publish(serialize_message(bad[0])[:100])  # not a Rollout
        deadline = time.monotonic() + 120
        while (st := call_service(node, get, GetStatus.Request()).status).iterations_completed < 1:
            assert st.phase != "error", st.message
            assert trainer.poll() is None, "the trainer died"
            assert time.monotonic() < deadline, st
            time.sleep(0.2)
        assert st.rollouts_rejected >= len(bad) + 1, st
        assert trainer.poll() is None
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        for p in (trainer, peer):
            p.send_signal(2)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
    with RolloutStore(tmp_path / "out", fsync=False) as store:
        stored = store.load(0)
    assert len(stored) == M * (N + 1)  # the samples and the evaluation trials, nothing else
    assert {r.robot_namespace for r in stored} == {"robot1"} and all(r.states.shape == (T + 1, 32) for r in stored)
    text = (tmp_path / "trainer.log").read_text()
    assert "Traceback" not in text, text[-3000:]
