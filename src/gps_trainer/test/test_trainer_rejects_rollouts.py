"""What arrives on /gps/rollouts cannot poison training (issue 13, item 2), over real DDS: while an
iteration runs, rollouts from a namespace that is no configured controller, for slots no trial asked
for, with self-consistent but foreign dimensions (dX=5, dO=0), with an empty rollout_id, and bytes that
are not a Rollout are rejected and counted; the trainer keeps running, completes the iteration and
stores exactly the rollouts its trials produced. A trial is answered only by a rollout the store
accepted (issue 22): a well-formed Rollout for the trial in flight that carries the id of a rollout
stored already is refused, counted, and the trial waits for the robot's own. The controller is
``fake_controller_peer.py`` (no simulation needed for what this tests)."""

import contextlib
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
TRIAL_TIMEOUT = 30.0  # far above an iteration here (8 trials of 1 s): a trial that waited for it shows


def _rollout(ns: str, rid: str, condition: int, sample: int, dX: int = 32, dO: int = 32,
             iteration: int = 0) -> Rollout:
    rng = np.random.default_rng(0)
    return conv.rollout_to_msg(conv.RolloutData(
        states=rng.normal(size=(T + 1, dX)), actions=rng.normal(size=(T + 1, 7)),
        observations=rng.normal(size=(T + 1, dO)), noise=np.zeros((T + 1, 7)), stamps=np.arange(T + 1) * 0.05,
        condition=condition, iteration=iteration, sample_index=sample, robot_namespace=ns, rollout_id=rid))


def test_a_refused_rollout_answers_no_trial(tmp_path):
    """NodeSampler.offer on a real rclpy node and store: a rollout the store refuses (its id, or its slot,
    stored already) is rejected and counted, and its trial stays outstanding for the real rollout."""
    from gps_core.tasks import load_task
    from gps_trainer.node_sampler import NodeSampler, Trial

    rclpy.init()
    node = rclpy.create_node("offer_probe")
    store = RolloutStore(tmp_path, fsync=False)
    try:
        sampler = NodeSampler(node, ["robot1"], store, load_task("reach"), T)
        first, second = Trial(0, 0, 0), Trial(0, 1, 0)
        sampler.book.expect(first, "robot1")
        assert sampler.offer(serialize_message(_rollout("robot1", "robot1/0/0/0/a", 0, 0))) == ""
        sampler.book.expect(second, "robot1")
        forged = serialize_message(_rollout("robot1", "robot1/0/0/0/a", 1, 0))  # the first one's id
        reason = sampler.offer(forged)
        assert "not stored, its id is stored already" in reason
        assert sampler.book.rejected == 1 and second.slot in sampler.book.outstanding
        real = serialize_message(_rollout("robot1", "robot1/0/1/0/b", 1, 0))
        assert sampler.offer(real) == "" and second.slot not in sampler.book.outstanding
        assert sampler.book.rejected == 1
        # The same slot again under a fresh id, while a re-run of that trial is outstanding: refused too.
        sampler.book.expect(second, "robot1")
        reason = sampler.offer(serialize_message(_rollout("robot1", "robot1/0/1/0/c", 1, 0)))
        assert f"its trial {second.slot} is stored already" in reason and sampler.book.rejected == 2
        assert [r.rollout_id for r in store.load(0)] == ["robot1/0/0/0/a", "robot1/0/1/0/b"]
        sampler.close()
    finally:
        store.close()
        node.destroy_node()
        rclpy.try_shutdown()


@contextlib.contextmanager
def _trainer_and_peer(tmp_path, ros_env, delay: float):
    """The trainer node (robot ``robot1``, M x N samples of T steps) beside the fake controller, and an
    rclpy node of this process: yields (node, get_status client, start_iteration client, trainer process)."""
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"name: rejects\nalgorithm: {{type: traj_opt}}\ntask: reach\nconditions: {M}\n"
                          f"horizon: {T}\nsamples_per_condition: {N}\niterations: 1\n")
    params = tmp_path / "trainer.yaml"
    params.write_text("gps_trainer:\n  ros__parameters:\n"
                      f"    experiment: {experiment}\n    output_dir: {tmp_path / 'out'}\n"
                      f"    controller_namespaces: [robot1]\n    fsync: false\n    trial_timeout_s: {TRIAL_TIMEOUT}\n")
    peer = subprocess.Popen([sys.executable, str(HERE / "fake_controller_peer.py"), "--namespace", "robot1",
                             "--horizon", str(T), "--delay", str(delay)], env=ros_env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    log = open(tmp_path / "trainer.log", "w")
    trainer = subprocess.Popen([sys.executable, "-m", "gps_trainer.trainer_node", "--ros-args", "--params-file",
                                str(params)], env=ros_env, stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    node = rclpy.create_node("rollout_intruder")
    try:
        wait_for_output(peer, "ready")
        get = node.create_client(GetStatus, "gps_trainer/get_status")
        start = node.create_client(StartIteration, "gps_trainer/start_iteration")
        yield node, get, start, trainer
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        for p in (trainer, peer):
            p.send_signal(2)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def _wait_for_the_iteration(node, get, trainer, timeout: float):
    deadline = time.monotonic() + timeout
    while (st := call_service(node, get, GetStatus.Request()).status).iterations_completed < 1:
        assert st.phase != "error", st.message
        assert trainer.poll() is None, "the trainer died"
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    return st


def test_foreign_and_malformed_rollouts_are_rejected_and_counted(tmp_path, ros_env):
    with _trainer_and_peer(tmp_path, ros_env, delay=0.4) as (node, get, start, trainer):
        pub = node.create_publisher(Rollout, "/gps/rollouts", ROLLOUT_QOS)
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
        st = _wait_for_the_iteration(node, get, trainer, 120)
        assert st.rollouts_rejected >= len(bad) + 1, st
        assert trainer.poll() is None
    with RolloutStore(tmp_path / "out", fsync=False) as store:
        stored = store.load(0)
    assert len(stored) == M * (N + 1)  # the samples and the evaluation trials, nothing else
    assert {r.robot_namespace for r in stored} == {"robot1"} and all(r.states.shape == (T + 1, 32) for r in stored)
    text = (tmp_path / "trainer.log").read_text()
    assert "Traceback" not in text, text[-3000:]


def test_a_forged_duplicate_id_does_not_answer_the_trial_in_flight(tmp_path, ros_env):
    """A Rollout for the trial in flight (right robot, sizes and steps) carrying the id of a rollout stored
    already: the store refuses it, so it is rejected and counted, and the robot's own rollout answers
    the trial (before the fix the forgery took the trial off the book, the real rollout was refused and
    the trial failed after its timeout)."""
    delay = 1.0  # the peer answers each trial after this: the forgery lands while the next trial waits
    real: list[Rollout] = []
    with _trainer_and_peer(tmp_path, ros_env, delay=delay) as (node, get, start, trainer):
        pub = node.create_publisher(Rollout, "/gps/rollouts", ROLLOUT_QOS)
        node.create_subscription(Rollout, "/gps/rollouts", real.append, ROLLOUT_QOS)
        assert call_service(node, start, StartIteration.Request(iterations=1), timeout=60.0).accepted
        t0 = time.monotonic()
        while not any(r.robot_namespace == "robot1" for r in real):  # the first trial's rollout, stored
            assert time.monotonic() - t0 < 60, "no rollout from the robot"
            rclpy.spin_once(node, timeout_sec=0.05)
        first = next(r for r in real if r.robot_namespace == "robot1")
        assert (first.condition, first.sample_index) == (0, 0)
        time.sleep(0.3 * delay)  # trials run condition-major per sample: (1, 0) is in flight now
        pub.publish(_rollout("robot1", first.rollout_id, 1, 0))
        st = _wait_for_the_iteration(node, get, trainer, 120)
        elapsed = time.monotonic() - t0
        assert st.rollouts_rejected == 1, st
    # No trial waited for its timeout: the iteration took about its trials' time.
    assert elapsed < TRIAL_TIMEOUT, elapsed
    text = (tmp_path / "trainer.log").read_text()
    assert f"rollout {first.rollout_id!r} from 'robot1': not stored, its id is stored already" in text, text[-3000:]
    assert "failed" not in text and "Traceback" not in text, text[-3000:]
    with RolloutStore(tmp_path / "out", fsync=False) as store:
        stored = {(r.condition, r.sample_index): r for r in store.load(0)}
    assert len(stored) == M * (N + 1)
    assert stored[(1, 0)].rollout_id.startswith("robot1/0/1/0/")  # the robot's own rollout
    assert stored[(0, 0)].rollout_id == first.rollout_id
