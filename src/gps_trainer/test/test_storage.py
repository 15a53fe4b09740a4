"""RolloutStore (MCAP, de-dup, truncation tolerance) and CheckpointStore (atomic, no pickle)."""

import json

import numpy as np
import pytest
from mcap_ros2.reader import read_ros2_messages
from rclpy.serialization import serialize_message

from gps_controller import conversions as conv
from gps_trainer.storage import CheckpointStore, RolloutStore


def _cdr(i: int, iteration: int = 0, rid: str | None = None, images: bool = False) -> bytes:
    rng = np.random.default_rng([7, i])
    T = 12
    data = conv.RolloutData(
        states=rng.normal(size=(T, 5)), actions=rng.normal(size=(T, 2)), observations=rng.normal(size=(T, 3)),
        noise=rng.normal(size=(T, 2)), stamps=np.arange(T) * 0.05,
        images=rng.integers(0, 256, size=(T, 4, 4, 3), dtype=np.uint8) if images else None,
        condition=i % 2, iteration=iteration, sample_index=i,
        rollout_id=f"ns/{iteration}/{i % 2}/{i}/abcd{i:04d}" if rid is None else rid,
    )
    return serialize_message(conv.rollout_to_msg(data))


def test_roundtrip_and_dedup_within_a_run(tmp_path):
    with RolloutStore(tmp_path) as store:
        assert store.add(_cdr(0, images=True)) is not None
        assert store.add(_cdr(1)) is not None
        assert store.add(_cdr(0, images=True)) is None  # same id: not stored twice
        assert store.add(_cdr(2, iteration=1)) is not None
        assert len(store) == 3
        got = store.load(0)
    assert [r.sample_index for r in got] == [0, 1]
    rng = np.random.default_rng([7, 0])
    np.testing.assert_array_equal(got[0].states, rng.normal(size=(12, 5)))
    assert got[0].images.shape == (12, 4, 4, 3) and got[1].images is None


def test_dedup_across_restart_uses_a_new_segment_and_standard_readers_agree(tmp_path):
    with RolloutStore(tmp_path) as store:
        store.add(_cdr(0))
        store.add(_cdr(1))
    store = RolloutStore(tmp_path)
    assert set(r.rollout_id for r in store.records()) == {"ns/0/0/0/abcd0000", "ns/0/1/1/abcd0001"}
    assert store.add(_cdr(1)) is None
    assert store.add(_cdr(3)) is not None
    store.close()
    segments = store.segments()
    assert [s.name for s in segments] == ["iter_00000-00.mcap", "iter_00000-01.mcap"]
    # The files are ordinary ROS 2 MCAP: the reference reader decodes them with the embedded schema.
    ids = [m.ros_msg.rollout_id for s in segments for m in read_ros2_messages(str(s))]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 3
    assert all(m.channel.topic == "/gps/rollouts" for m in read_ros2_messages(str(segments[0])))
    assert store.integrity["corrupted_records"] == 0 and store.integrity["missing_rollouts"] == 0


def test_truncated_segment_of_a_killed_run_is_read_up_to_the_cut_and_the_loss_reported(tmp_path):
    store = RolloutStore(tmp_path, fsync=False)
    starts = [store.add(_cdr(i, images=True)).offset for i in range(4)]
    # No close(): like SIGKILL, the file has no summary/footer. Then also cut into the records.
    seg = store.segments()[0]
    full = seg.read_bytes()
    starts.append(len(full))
    for cut, expected in ((len(full), 4), (starts[3] + 100, 3), (starts[2] + 7, 2), (starts[2], 2),
                          (starts[0] + 30, 0), (5, 0)):
        seg.write_bytes(full[:cut])
        reopened = RolloutStore(tmp_path, fsync=False)
        assert [r.sample_index for r in reopened.load(0)] == list(range(expected)), cut
        assert len(reopened) == expected, cut
        integrity = reopened.integrity
        # Every acknowledged rollout past the cut is reported lost (the journal names them) ...
        assert integrity["missing_rollouts"] == 4 - expected, (cut, integrity)
        # ... and a cut inside a record is a truncated tail with its bytes counted.
        inside = cut not in (len(full), starts[2])
        assert integrity["truncated_segments"] == int(inside), (cut, integrity)
        assert integrity["lost_bytes"] == (cut - (starts[expected] if cut > 8 else 0)) * inside, (cut, integrity)
        # Each lost rollout counted once (the status's rollouts_corrupted), not once per way it was found.
        assert integrity["rollouts_lost"] == 4 - expected, (cut, integrity)
        reopened.close()
        for extra in reopened.segments()[1:]:
            extra.unlink()
    # Without the journal (its lines lost with a power cut) a cut inside a chunk is still a loss.
    (tmp_path / "rollouts" / "iter_00000.journal").unlink()
    seg.write_bytes(full[:starts[3] + 100])
    reopened = RolloutStore(tmp_path, fsync=False)
    assert len(reopened.load(0)) == 3
    assert reopened.integrity["missing_rollouts"] == 0 and reopened.integrity["rollouts_lost"] == 1
    reopened.close()


def test_empty_rollout_id_is_refused(tmp_path):
    store = RolloutStore(tmp_path)
    with pytest.raises(ValueError, match="rollout_id"):
        store.add(_cdr(0, rid=""))
    assert len(store) == 0


def test_checkpoint_roundtrip_atomic_and_verified(tmp_path):
    ckpts = CheckpointStore(tmp_path)
    assert ckpts.latest() is None
    from gps_controller.policies.neural import make_policy
    from gps_controller.policies.serialization import load_policy

    policy = make_policy({"type": "mlp", "net": {"hidden": [8]}}, 4, 2, seed=0)
    ckpts.save(0, {"cond0/K": np.ones((3, 2, 4))}, {"cond0/k": np.zeros((3, 2))}, None, {"costs": [1.5]})
    ckpts.save(1, {"cond0/K": 2 * np.ones((3, 2, 4)), "eta": np.array([0.5])}, {}, policy, {"costs": [1.0]})
    latest = ckpts.latest()
    assert latest.iteration == 1
    np.testing.assert_array_equal(latest.algorithm["cond0/K"], 2 * np.ones((3, 2, 4)))
    assert latest.metadata["costs"] == [1.0]
    # The checkpoint's policy is a policy file as `gps eval` takes it (architecture inside).
    loaded = load_policy(latest.policy_path)
    for name, tensor in policy.state_dict().items():
        assert (loaded.state_dict()[name] == tensor).all(), name

    # A crash before the rename leaves only a temporary directory: it is not a checkpoint.
    (ckpts.directory / ".tmp-iter_00002-999").mkdir()
    (ckpts.directory / ".tmp-iter_00002-999" / "metadata.json").write_text(json.dumps({"iteration": 2}))
    assert ckpts.latest().iteration == 1
    assert ckpts.cleanup_temporaries() == 1

    # A damaged file in the newest checkpoint makes it invalid: resume falls back to the previous one.
    (ckpts.path(1) / "algorithm.npz").write_bytes(b"garbage")
    assert ckpts.iterations() == [0]
    assert ckpts.latest().iteration == 0
    assert [(s["iteration"], "algorithm.npz" in s["reason"]) for s in ckpts.skipped_checkpoints] == [(1, True)]


def test_checkpoint_refuses_object_arrays(tmp_path):
    ckpts = CheckpointStore(tmp_path)
    with pytest.raises(TypeError, match="pickle"):
        ckpts.save(0, {"bad": np.array([{"a": 1}], dtype=object)})
    assert ckpts.iterations() == []


def test_a_rerun_of_the_same_trial_slot_is_not_stored_twice(tmp_path):
    with RolloutStore(tmp_path) as store:
        assert store.add(_cdr(4)) is not None
        # Same (iteration, condition, sample_index, policy_type), new id (controller's uuid suffix).
        assert store.add(_cdr(4, rid="ns/0/0/4/ffffffff")) is None
    assert RolloutStore(tmp_path).slots(0) == {(0, 0, 4, "linear_gaussian")}
