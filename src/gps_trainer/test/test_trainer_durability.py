"""Trainer node over real DDS: trials spread over two controller namespaces, SIGKILL mid-iteration,
restart with the same output directory -> resumes, and the MCAP holds every rollout exactly once. A
segment cut inside a chunk before the restart: the lost rollout is counted in the status and its trial
sampled again.

The controllers are ``fake_controller_peer.py`` (deterministic random Rollouts, no simulation, so the kill
lands at a controlled moment): acceptable for this durability test only; the trajectory optimization runs
on their data as on any, and the learning tests use the real controller and sim nodes.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from mcap.exceptions import EndOfFile
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from mcap_ros2.decoder import DecoderFactory

from gps_msgs.srv import GetStatus, StartIteration
from testing_helpers import call_service, wait_for_output

pytestmark = pytest.mark.ros
HERE = Path(__file__).parent
M, N, T = 2, 4, 10


def _start_trainer(tmp_path, ros_env, experiment, namespaces=("robot1", "robot2")):
    params = tmp_path / "trainer.yaml"
    params.write_text(
        "gps_trainer:\n  ros__parameters:\n"
        f"    experiment: {experiment}\n    output_dir: {tmp_path / 'out'}\n"
        f"    controller_namespaces: [{', '.join(namespaces)}]\n    fsync: false\n    trial_timeout_s: 20.0\n")
    log = open(tmp_path / f"trainer-{time.monotonic_ns()}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "gps_trainer.trainer_node", "--ros-args", "--params-file",
                             str(params)], env=ros_env, stdout=log, stderr=subprocess.STDOUT, text=True)


def _read_all(directory: Path) -> list:
    """Every Rollout in every segment, with the reference MCAP reader (streaming: a segment of a killed
    run has no footer, which is the point of this test)."""
    out, factory = [], DecoderFactory()
    for seg in sorted(directory.glob("*.mcap")):
        schemas, channels = {}, {}
        with open(seg, "rb") as f:
            try:
                for rec in StreamReader(f).records:
                    if isinstance(rec, Schema):
                        schemas[rec.id] = rec
                    elif isinstance(rec, Channel):
                        channels[rec.id] = rec
                    elif isinstance(rec, Message):
                        ch = channels[rec.channel_id]
                        assert ch.topic == "/gps/rollouts" and ch.message_encoding == "cdr"
                        out.append(factory.decoder_for("cdr", schemas[ch.schema_id])(rec.data))
            except EndOfFile:
                pass
    return out


def _status(node, client, timeout=60.0):
    """get_status, retried: after a SIGKILL the client may first match the dead server's endpoint."""
    deadline = time.monotonic() + timeout
    while True:
        assert client.wait_for_service(timeout_sec=timeout)
        future = client.call_async(GetStatus.Request())
        rclpy.spin_until_future_complete(node, future, timeout_sec=3.0)
        if future.done():
            return future.result().status
        client.remove_pending_request(future)
        assert time.monotonic() < deadline, "get_status never answered"


@pytest.mark.slow
def test_kill_mid_iteration_resume_and_every_rollout_exactly_once(tmp_path, ros_env):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"name: durability\nalgorithm: {{type: traj_opt}}\ntask: reach\nconditions: {M}\n"
                          f"horizon: {T}\nsamples_per_condition: {N}\niterations: 3\n")
    peers = [subprocess.Popen([sys.executable, str(HERE / "fake_controller_peer.py"), "--namespace", ns,
                               "--horizon", str(T), "--delay", "0.25"],
                              env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for ns in ("robot1", "robot2")]
    trainer = None
    rclpy.init()
    node = rclpy.create_node("durability_client")
    try:
        for p in peers:
            wait_for_output(p, "ready")
        start = node.create_client(StartIteration, "gps_trainer/start_iteration")
        get = node.create_client(GetStatus, "gps_trainer/get_status")

        trainer = _start_trainer(tmp_path, ros_env, experiment)
        assert not call_service(node, start, StartIteration.Request(iterations=0)).accepted  # invalid: rejected
        res = call_service(node, start, StartIteration.Request(iterations=3))
        assert res.accepted and res.first_iteration == 0, res.message
        assert not call_service(node, start, StartIteration.Request(iterations=1)).accepted  # busy

        # Kill (SIGKILL) in the middle of iteration 1, with some but not all of its rollouts stored.
        deadline = time.monotonic() + 90
        while True:
            st = _status(node, get)
            if st.iteration == 1 and st.phase == "sampling" and 2 <= st.rollouts_received < M * N - 2:
                break
            assert time.monotonic() < deadline, f"never reached mid-iteration 1: {st}"
            time.sleep(0.05)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=10)
        out = tmp_path / "out"
        before = {m.rollout_id for m in _read_all(out / "rollouts")}
        assert M * N + 2 <= len(before) < 2 * M * N

        trainer = _start_trainer(tmp_path, ros_env, experiment)
        st = _status(node, get)
        assert st.iterations_completed == 1 and st.iteration == 1, st
        res = call_service(node, start, StartIteration.Request(iterations=2))
        assert res.accepted and res.first_iteration == 1, res.message
        deadline = time.monotonic() + 120
        while (st := _status(node, get)).iterations_completed < 3:
            assert st.phase != "error", st.message
            assert time.monotonic() < deadline, st
            time.sleep(0.2)
        assert st.rollouts_received == M * (N + 1) and st.phase == "idle"  # samples + one evaluation trial each
    finally:
        node.destroy_node()
        rclpy.shutdown()
        for p in [*peers, trainer]:
            if p is not None:
                p.kill()
                p.wait(timeout=10)

    messages = _read_all(out / "rollouts")
    ids = [m.rollout_id for m in messages]
    slots = [(m.iteration, m.condition, m.sample_index) for m in messages]
    samples = [s for s in slots if s[2] < N]
    assert len(ids) == len(set(ids)) == 3 * M * (N + 1)  # every rollout, exactly once
    assert sorted(samples) == sorted((i, m, n) for i in range(3) for m in range(M) for n in range(N))
    assert before <= set(ids)  # rollouts recorded before the kill were reused, not re-run
    assert {m.robot_namespace for m in messages} == {"robot1", "robot2"}  # trials spread over both robots
    assert len(list((out / "rollouts").glob("iter_00001-*.mcap"))) == 2  # the restart opened a new segment
    meta = json.loads((out / "checkpoints" / "iter_00001" / "metadata.json").read_text())
    assert meta["iteration"] == 1 and meta["metrics"]["evaluated"] == "local_controllers"
    assert (out / "cost_per_iteration.png").stat().st_size > 1000
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_a_segment_cut_inside_a_chunk_is_counted_in_the_status_and_its_trial_sampled_again(tmp_path, ros_env):
    """Issue 22: the interrupted iteration's segment truncated inside a chunk, then resumed. The trial is
    sampled again and the status's rollouts_corrupted counts the loss (it counted CRC failures only)."""
    from gps_trainer.storage import RolloutStore

    m_, n_ = 2, 2
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"name: cut\nalgorithm: {{type: traj_opt}}\ntask: reach\nconditions: {m_}\n"
                          f"horizon: {T}\nsamples_per_condition: {n_}\niterations: 1\n")
    peer = subprocess.Popen([sys.executable, str(HERE / "fake_controller_peer.py"), "--namespace", "robot1",
                             "--horizon", str(T), "--delay", "0.3"],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    trainer = None
    out = tmp_path / "out"
    rclpy.init()
    node = rclpy.create_node("cut_segment_client")
    try:
        wait_for_output(peer, "ready")
        start = node.create_client(StartIteration, "gps_trainer/start_iteration")
        get = node.create_client(GetStatus, "gps_trainer/get_status")
        trainer = _start_trainer(tmp_path, ros_env, experiment, namespaces=("robot1",))
        assert call_service(node, start, StartIteration.Request(iterations=1)).accepted
        deadline = time.monotonic() + 90
        while not ((st := _status(node, get)).phase == "sampling" and 2 <= st.rollouts_received < m_ * n_):
            assert time.monotonic() < deadline, f"never reached mid-iteration 0: {st}"
            time.sleep(0.05)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=10)
        # Cut the segment inside the chunk of the last acknowledged rollout (the journal says where).
        journal = [json.loads(line) for line in (out / "rollouts" / "iter_00000.journal").read_text().splitlines()
                   if line.endswith("}")]
        lost = journal[-1]
        segment = out / "rollouts" / lost["segment"]
        segment.write_bytes(segment.read_bytes()[:lost["offset"] + 20])

        trainer = _start_trainer(tmp_path, ros_env, experiment, namespaces=("robot1",))
        assert _status(node, get).iterations_completed == 0  # the restarted trainer answers
        res = call_service(node, start, StartIteration.Request(iterations=1))
        assert res.accepted and res.first_iteration == 0, res.message
        deadline = time.monotonic() + 120
        while (st := _status(node, get)).iterations_completed < 1:
            assert st.phase != "error", st.message
            assert time.monotonic() < deadline, st
            time.sleep(0.2)
        assert st.rollouts_corrupted == 1, st
    finally:
        node.destroy_node()
        rclpy.shutdown()
        for p in (peer, trainer):
            if p is not None:
                p.kill()
                p.wait(timeout=10)
    with RolloutStore(out, fsync=False) as store:
        stored = {(r.condition, r.sample_index): r.rollout_id for r in store.records(0)}
        assert store.integrity["rollouts_lost"] == 1 and store.integrity["truncated_segments"] == 1
    assert len(stored) == m_ * (n_ + 1)  # every sample and evaluation trial, the lost one sampled again
    slot = tuple(lost["slot"][:2])
    assert stored[slot] != lost["id"] and stored[slot].startswith(f"robot1/0/{slot[0]}/{slot[1]}/")
    # The store's warning reached the trainer's log (the logging bridge, every severity).
    logs = "".join(p.read_text() for p in tmp_path.glob("trainer-*.log"))
    assert "acknowledged rollout(s) lost" in logs, logs[-3000:]
