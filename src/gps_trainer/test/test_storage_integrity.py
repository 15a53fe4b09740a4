"""RolloutStore on damaged files: flipped bytes, undecodable bodies, broken framing, a writer killed with
SIGKILL, standard MCAP readers, per-iteration reads; CheckpointStore falling back past a truncated one."""

import logging
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from mcap.exceptions import EndOfFile
from mcap.reader import make_reader
from mcap.records import Message
from mcap.stream_reader import StreamReader
from mcap.well_known import MessageEncoding, SchemaEncoding
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter
from mcap_ros2.reader import read_ros2_messages
from rclpy.serialization import serialize_message

from gps_controller import conversions as conv
from gps_trainer import storage
from gps_trainer.storage import CheckpointStore, RolloutStore, rollout_schema_text


def _cdr(i: int, iteration: int = 0, T: int = 12, image: int = 16, horizon: int | None = None) -> bytes:
    rng = np.random.default_rng([11, iteration, i])
    data = conv.RolloutData(
        states=rng.normal(size=(T, 5)), actions=rng.normal(size=(T, 2)), observations=rng.normal(size=(T, 3)),
        noise=rng.normal(size=(T, 2)), stamps=np.arange(T) * 0.05,
        images=rng.integers(0, 256, size=(T, image, image, 3), dtype=np.uint8),
        condition=i % 2, iteration=iteration, sample_index=i, rollout_id=f"ns/{iteration}/{i % 2}/{i}/{i:08x}",
    )
    msg = conv.rollout_to_msg(data)
    if horizon is not None:  # self-inconsistent: array sizes no longer match the stated horizon
        msg.horizon = horizon
    return serialize_message(msg)


def _fill(tmp_path, n: int = 5, close: bool = True):
    store = RolloutStore(tmp_path, fsync=False)
    recs = [store.add(_cdr(i)) for i in range(n)]
    if close:
        store.close()
    return store.segments()[0], recs


@pytest.mark.parametrize("closed", [True, False], ids=["closed-with-summary", "killed-no-summary"])
def test_a_flipped_byte_inside_a_record_is_detected_skipped_and_its_slot_resampled(tmp_path, caplog, closed):
    seg, recs = _fill(tmp_path, close=closed)
    raw = bytearray(seg.read_bytes())
    victim = recs[2]
    raw[victim.offset + 2000] ^= 0x10  # inside the chunk's records (the CDR body): covered by its CRC
    seg.write_bytes(bytes(raw))

    with caplog.at_level(logging.WARNING, logger="gps_trainer.storage"):
        store = RolloutStore(tmp_path, fsync=False)
        assert victim.slot not in store.slots(0)  # so the trainer samples that trial again
        got = store.load(0)  # never raises because of one bad record
    assert [r.sample_index for r in got] == [0, 1, 3, 4]
    for r in got:  # the other rollouts are intact, bit for bit
        np.testing.assert_array_equal(r.states, np.random.default_rng([11, 0, r.sample_index]).normal(size=(12, 5)))
    integ = store.integrity
    assert integ["corrupted_records"] == 1 and integ["missing_rollouts"] == 1 and integ["truncated_segments"] == 0
    assert any("CRC" in m for m in caplog.messages) and any(victim.rollout_id in m for m in caplog.messages)
    # The missing trial can be stored again (into a new segment) and then counts as present.
    assert store.add(_cdr(2)) is not None and victim.slot in store.slots(0)
    store.close()
    assert [r.sample_index for r in RolloutStore(tmp_path).load(0)] == [0, 1, 3, 4, 2]


def _write_raw_segment(path, bodies):
    """A chunked MCAP segment of arbitrary message bodies (valid CRCs): what a buggy writer could leave."""
    with open(path, "wb") as f:
        w = McapWriter(f, compression=CompressionType.NONE)
        w.start(profile="ros2")
        sid = w.register_schema(storage.ROLLOUT_SCHEMA, SchemaEncoding.ROS2, rollout_schema_text().encode())
        cid = w.register_channel(storage.ROLLOUT_TOPIC, MessageEncoding.CDR, sid)
        for t, body in enumerate(bodies):
            w.add_message(cid, log_time=t + 1, data=body, publish_time=t + 1)
            w.flush()
        w.finish()


def test_legacy_unchunked_segments_are_still_read_and_deduplicated(tmp_path):
    (tmp_path / "rollouts").mkdir()
    legacy = tmp_path / "rollouts" / "rollouts-00000.mcap"
    with open(legacy, "wb") as f:  # the pre-chunking layout: unchunked, all iterations in one file
        w = McapWriter(f, use_chunking=False, compression=CompressionType.NONE)
        w.start(profile="ros2")
        sid = w.register_schema(storage.ROLLOUT_SCHEMA, SchemaEncoding.ROS2, rollout_schema_text().encode())
        cid = w.register_channel(storage.ROLLOUT_TOPIC, MessageEncoding.CDR, sid)
        for t, body in enumerate([_cdr(0), _cdr(1), _cdr(0, iteration=1)]):
            w.add_message(cid, log_time=t + 1, data=body, publish_time=t + 1)
        w.finish()
    store = RolloutStore(tmp_path, fsync=False)
    assert store.slots(0) == {(0, 0, 0, "linear_gaussian"), (0, 1, 1, "linear_gaussian")}
    assert store.add(_cdr(1)) is None and store.add(_cdr(2)) is not None
    assert [r.sample_index for r in store.load(0)] == [0, 1, 2]
    assert [(r.iteration, r.sample_index) for r in store.load(1)] == [(1, 0)]
    store.close()
    assert [p.name for p in store.segments()] == ["rollouts-00000.mcap", "iter_00000-00.mcap"]


def test_a_body_that_does_not_decode_or_validate_is_skipped_not_fatal(tmp_path):
    store_dir = tmp_path / "rollouts"
    store_dir.mkdir()
    good = [_cdr(0), _cdr(1), _cdr(2, iteration=1)]
    # Body 2: CDR cut short (decoder fails); body 3: wrong iteration for this segment; body 4: sizes off.
    _write_raw_segment(store_dir / "iter_00000-00.mcap",
                       [good[0], good[1][: len(good[1]) // 2], good[2], _cdr(3, horizon=13)])
    store = RolloutStore(tmp_path)
    assert store.slots(0) == {(0, 0, 0, "linear_gaussian")}
    assert [r.sample_index for r in store.load(0)] == [0]
    assert store.integrity["corrupted_records"] == 3
    assert len(store.problems) == 3
    # add() refuses a body it could never load back.
    with pytest.raises(ValueError, match="does not decode"):
        store.add(good[1][: len(good[1]) // 2])


def test_damaged_framing_in_a_killed_segment_resyncs_on_the_next_chunk(tmp_path):
    seg, recs = _fill(tmp_path, close=False)
    raw = bytearray(seg.read_bytes())
    raw[recs[1].offset + 3] ^= 0x40  # the chunk record's length field: outside any CRC
    seg.write_bytes(bytes(raw))
    store = RolloutStore(tmp_path, fsync=False)
    assert sorted(s[2] for s in store.slots(0)) == [0, 2, 3, 4]
    assert store.integrity["corrupted_records"] == 1 and store.integrity["missing_rollouts"] == 1


@pytest.mark.parametrize("where", ["summary", "footer"])
def test_a_damaged_summary_falls_back_to_scanning_the_chunks(tmp_path, where):
    seg, _recs = _fill(tmp_path)
    raw = bytearray(seg.read_bytes())
    raw[-20 if where == "footer" else -200] ^= 0xFF
    seg.write_bytes(bytes(raw))
    store = RolloutStore(tmp_path)
    assert len(store.load(0)) == 5
    assert store.integrity["corrupted_records"] == 0


_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from rclpy.serialization import serialize_message
    from gps_controller import conversions as conv
    from gps_trainer.storage import RolloutStore

    store = RolloutStore(sys.argv[1], fsync=True)
    rng = np.random.default_rng(0)
    T = 100
    for i in range(10_000):
        it = i // 40
        data = conv.RolloutData(
            states=rng.normal(size=(T, 26)), actions=rng.normal(size=(T, 7)), observations=rng.normal(size=(T, 14)),
            noise=rng.normal(size=(T, 7)), stamps=np.arange(T) * 0.05,
            images=rng.integers(0, 256, size=(T, 64, 64, 3), dtype=np.uint8), condition=i % 4, iteration=it,
            sample_index=i % 40 // 4, rollout_id=f"arm/{it}/{i % 4}/{i % 40 // 4}/{i:08x}")
        cdr = serialize_message(conv.rollout_to_msg(data))
        rec = store.add(cdr)
        print("ack", rec.rollout_id, flush=True)
""")


def test_kill_9_of_a_writer_mid_stream_loses_no_acknowledged_rollout(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    acked = []
    try:
        for line in proc.stdout:
            acked.append(line.split()[1])
            if len(acked) == 45:  # into the second iteration's segment, while the next add is in flight
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    store = RolloutStore(tmp_path)
    stored = {r.rollout_id for r in store.records()}
    assert set(acked) <= stored  # the in-flight one may or may not have made it
    assert store.integrity["missing_rollouts"] == 0 and store.integrity["corrupted_records"] == 0
    assert len(store.load(0)) == 40 and len(store.load(1)) >= 5
    # Iteration 0's segment was closed when the writer moved on to iteration 1: it has a summary.
    with open(store.segments(0)[0], "rb") as f:
        assert make_reader(f).get_summary().statistics.message_count == 40


def test_standard_mcap_readers_read_closed_and_killed_segments(tmp_path):
    seg, _ = _fill(tmp_path, n=4)
    with open(seg, "rb") as f:
        summary = make_reader(f).get_summary()
    assert summary.statistics.message_count == 4 and summary.statistics.chunk_count == 4
    assert len(summary.chunk_indexes) == 4 and all(ci.compression == "" for ci in summary.chunk_indexes)
    assert [m.ros_msg.sample_index for m in read_ros2_messages(str(seg))] == [0, 1, 2, 3]
    # A segment of a killed writer has no summary; the reference reader still reads it by scanning.
    store = RolloutStore(tmp_path, fsync=False)
    store.add(_cdr(0, iteration=1))
    store.add(_cdr(1, iteration=1))
    killed = store.segments(1)[0]
    assert not killed.read_bytes().endswith(b"\x89MCAP0\r\n")  # no footer yet
    msgs = []
    with open(killed, "rb") as f, pytest.raises(EndOfFile):  # the reference stream reader, up to the cut
        for rec in StreamReader(f).records:
            msgs += [rec] if isinstance(rec, Message) else []
    assert [RolloutStore(tmp_path)._decode(m.data).sample_index for m in msgs] == [0, 1]
    store.close()
    assert [m.ros_msg.sample_index for m in read_ros2_messages(str(killed))] == [0, 1]


def test_load_of_one_iteration_opens_only_its_segments(tmp_path, monkeypatch):
    with RolloutStore(tmp_path, fsync=False) as store:
        for k in range(3):
            for i in range(3):
                store.add(_cdr(i, iteration=k))
    assert [p.name for p in store.segments()] == [f"iter_{k:05d}-00.mcap" for k in range(3)]
    store.segments(0)[0].write_bytes(b"\x00" * 100)  # iteration 0 wrecked: must not matter for iteration 1
    opened = []
    real_open = open

    def spy(path, *a, **kw):
        opened.append(str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(storage, "open", spy, raising=False)
    fresh = RolloutStore(tmp_path, fsync=False)
    assert [r.sample_index for r in fresh.load(1)] == [0, 1, 2]
    assert fresh.slots(1) == {(1, i % 2, i, "linear_gaussian") for i in range(3)}
    mcaps = [p for p in opened if p.endswith(".mcap")]
    assert mcaps and all("iter_00001-" in p for p in mcaps), opened
    assert fresh.integrity["corrupted_records"] == 0
    assert fresh.stored_count() == 9  # iterations 0 and 2 not read: their acknowledged counts
    assert all("iter_00001-" in p for p in opened if p.endswith(".mcap"))
    assert fresh.slots(0) == set() and fresh.integrity["missing_rollouts"] == 3
    assert fresh.stored_count() == 6 and len(fresh) == 6
    assert fresh.integrity["corrupted_records"] == 1  # one damaged region, not one count per garbage byte


def test_truncated_newest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog):
    ckpts = CheckpointStore(tmp_path)
    for k in range(3):
        ckpts.save(k, {"x": np.full(1000, float(k))}, {"k": np.zeros(3)}, None, {"costs": [k]})
    alg = ckpts.path(2) / "algorithm.npz"
    alg.write_bytes(alg.read_bytes()[:500])  # truncated by a full disk / a copy cut short
    (ckpts.path(1) / "metadata.json").write_text("{")  # and the one before has broken metadata
    with caplog.at_level(logging.WARNING, logger="gps_trainer.storage"):
        latest = ckpts.latest()
    assert latest.iteration == 0 and latest.algorithm["x"][0] == 0.0
    assert [s["iteration"] for s in ckpts.skipped_checkpoints] == [2, 1]
    assert "SHA-256 mismatch" in ckpts.skipped_checkpoints[0]["reason"]
    assert "metadata.json unreadable" in ckpts.skipped_checkpoints[1]["reason"]
    assert sum("checkpoint of iteration" in m and "skipped" in m for m in caplog.messages) == 2
