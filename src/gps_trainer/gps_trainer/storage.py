"""Durable trainer storage: every Rollout in MCAP as it arrives, and atomic per-iteration checkpoints.

Rollouts
    :class:`RolloutStore` keeps ``<output>/rollouts/rollouts-NNNNN.mcap`` segment files (ROS 2 profile,
    ``gps_msgs/msg/Rollout`` schema, CDR messages: the rosbag2 storage format, readable by
    ``ros2 bag`` / Foxglove). Each message is written unchunked and flushed (and fsync'ed by default)
    before :meth:`RolloutStore.add` returns, so a process killed at any moment loses nothing that was
    already acknowledged. On open, every segment is scanned (a truncated last record of a killed run is
    skipped, everything before it is kept) and the ids seen are loaded; a new segment is started for
    the new writes instead of appending to a possibly truncated file. A rollout id is stored at most
    once across all segments.

Checkpoints
    :class:`CheckpointStore` writes ``<output>/checkpoints/iter_NNNNN/`` with ``algorithm.npz``
    (numpy arrays, loaded with ``allow_pickle=False``), ``controllers.npz``, optional
    ``policy.safetensors`` (save_policy: the architecture in its metadata), and ``metadata.json`` (iteration index,
    SHA-256 of each file). It is written into a temporary directory, fsync'ed and renamed into place,
    so a checkpoint directory either exists complete or not at all. Nothing is ever pickled.

This module imports no rclpy: messages are handled as CDR bytes (the trainer node subscribes raw)
and decoded with ``mcap_ros2``'s schema-driven decoder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mcap.exceptions import McapError
from mcap.records import Message, Schema
from mcap.stream_reader import StreamReader
from mcap.well_known import MessageEncoding, SchemaEncoding
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter
from mcap_ros2._dynamic import generate_dynamic

from gps_controller.conversions import RolloutData, rollout_from_msg

__all__ = [
    "CheckpointStore",
    "Checkpoint",
    "RolloutRecord",
    "RolloutStore",
    "rollout_schema_text",
    "ROLLOUT_TOPIC",
    "ROLLOUT_SCHEMA",
]

ROLLOUT_TOPIC = "/gps/rollouts"
ROLLOUT_SCHEMA = "gps_msgs/msg/Rollout"
_SEGMENT_RE = re.compile(r"^rollouts-(\d{5})\.mcap$")
_CKPT_RE = re.compile(r"^iter_(\d{5})$")
_SEP = "=" * 80


# --------------------------------------------------------------------------- schema


def _msg_text(package: str, name: str) -> str:
    """The .msg definition of ``package/msg/name`` from the ament index (install or venv share)."""
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(package), "msg", f"{name}.msg").read_text()


def rollout_schema_text() -> str:
    """ROS 2 concatenated message definition of gps_msgs/Rollout (the rosbag2 'ros2msg' schema)."""
    parts = [_msg_text("gps_msgs", "Rollout")]
    for pkg, name in (("std_msgs", "Header"), ("builtin_interfaces", "Time")):
        parts.append(f"{_SEP}\nMSG: {pkg}/{name}\n{_msg_text(pkg, name)}")
    return "\n".join(parts)


# --------------------------------------------------------------------------- rollouts


@dataclass(frozen=True)
class RolloutRecord:
    """Where one stored rollout is, and what it is."""

    rollout_id: str
    iteration: int
    condition: int
    sample_index: int
    policy_type: str
    robot_namespace: str
    segment: str
    log_time: int

    @property
    def slot(self) -> tuple[int, int, int, str]:
        """(iteration, condition, sample_index, policy_type): one stored rollout per slot."""
        return (self.iteration, self.condition, self.sample_index, self.policy_type)


def _iter_messages(path: Path):
    """Yield (schema, message) from an MCAP file, stopping quietly at a truncated or corrupt tail."""
    schemas: dict[int, Schema] = {}
    channels: dict[int, int] = {}
    with open(path, "rb") as f:
        # Read the whole file: truncated segments are small enough, and a BytesIO gives clean EOFs.
        buf = io.BytesIO(f.read())
    reader = StreamReader(buf, skip_magic=False)
    try:
        for record in reader.records:
            if isinstance(record, Schema):
                schemas[record.id] = record
            elif record.__class__.__name__ == "Channel":
                channels[record.id] = record.schema_id
            elif isinstance(record, Message):
                schema = schemas.get(channels.get(record.channel_id, -1))
                yield schema, record
    except (McapError, EOFError, struct.error):
        # A killed writer leaves a partial last record (and no footer): everything before it is kept.
        return


class RolloutStore:
    """Append-only, de-duplicating MCAP store of Rollout messages (CDR bytes).

    ``add(cdr)`` returns the :class:`RolloutRecord` when the rollout was written, ``None`` when its
    id, or its slot (iteration, condition, sample_index, policy_type), was already stored (in any
    segment, including those of earlier runs).
    """

    def __init__(self, directory: str | Path, fsync: bool = True):
        self.directory = Path(directory) / "rollouts"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._schema_text = rollout_schema_text()
        self._decode = generate_dynamic(ROLLOUT_SCHEMA, self._schema_text)[ROLLOUT_SCHEMA]
        self._records: dict[str, RolloutRecord] = {}
        self._slots: dict[tuple, str] = {}
        self._lock = threading.RLock()  # add() runs in a subscription thread, reads in the worker
        self._file = None
        self._writer: McapWriter | None = None
        self._channel_id = 0
        self._sequence = 0
        self.skipped_on_open = 0
        segments = self.segments()
        for seg in segments:
            self._scan(seg)
        last = int(_SEGMENT_RE.match(segments[-1].name).group(1)) if segments else -1
        self._next_segment = last + 1

    # ---- reading

    def segments(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if _SEGMENT_RE.match(p.name))

    def _scan(self, seg: Path) -> None:
        for _schema, msg in _iter_messages(seg):
            try:
                decoded = self._decode(msg.data)
            except Exception:  # a corrupt message body: skip it (never crash on reading history)
                self.skipped_on_open += 1
                continue
            rec = self._record(decoded, seg.name, msg.log_time)
            if rec.rollout_id in self._records or rec.slot in self._slots:  # not through add()
                self.skipped_on_open += 1
                continue
            self._records[rec.rollout_id] = rec
            self._slots[rec.slot] = rec.rollout_id

    @staticmethod
    def _record(decoded: Any, segment: str, log_time: int) -> RolloutRecord:
        return RolloutRecord(
            rollout_id=decoded.rollout_id,
            iteration=int(decoded.iteration),
            condition=int(decoded.condition),
            sample_index=int(decoded.sample_index),
            policy_type=decoded.policy_type,
            robot_namespace=decoded.robot_namespace,
            segment=segment,
            log_time=log_time,
        )

    def __contains__(self, rollout_id: str) -> bool:
        return rollout_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def records(self, iteration: int | None = None, policy_type: str | None = None) -> list[RolloutRecord]:
        """Stored records (optionally of one iteration / policy type), in arrival order."""
        with self._lock:
            out = [r for r in self._records.values()
                   if (iteration is None or r.iteration == iteration)
                   and (policy_type is None or r.policy_type == policy_type)]
            return out

    def load(self, iteration: int, policy_type: str | None = None) -> list[RolloutData]:
        """All rollouts of ``iteration`` (validated through conversions), in arrival order."""
        with self._lock:
            wanted = {r.rollout_id for r in self.records(iteration, policy_type)}
            out: list[RolloutData] = []
            if not wanted:
                return out
            for seg in sorted({r.segment for r in self._records.values() if r.rollout_id in wanted}):
                for _schema, msg in _iter_messages(self.directory / seg):
                    decoded = self._decode(msg.data)
                    if decoded.rollout_id in wanted:
                        out.append(rollout_from_msg(decoded))
            return out

    # ---- writing

    def _open_segment(self) -> None:
        path = self.directory / f"rollouts-{self._next_segment:05d}.mcap"
        self._next_segment += 1
        self._file = open(path, "xb")  # never reuse an existing (possibly truncated) file
        self._segment_name = path.name
        # Unchunked: every message record goes straight to the file (chunks would buffer it).
        self._writer = McapWriter(self._file, use_chunking=False, compression=CompressionType.NONE,
                                  use_statistics=True, use_summary_offsets=True)
        self._writer.start(profile="ros2", library="gps_trainer.storage")
        schema_id = self._writer.register_schema(ROLLOUT_SCHEMA, SchemaEncoding.ROS2, self._schema_text.encode())
        self._channel_id = self._writer.register_channel(ROLLOUT_TOPIC, MessageEncoding.CDR, schema_id)
        self._sync()

    def _sync(self) -> None:
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def add(self, cdr: bytes, log_time: int | None = None) -> RolloutRecord | None:
        """Persist one CDR-serialized Rollout unless its id is already stored; durable on return."""
        with self._lock:
            decoded = self._decode(bytes(cdr))
            if not decoded.rollout_id:
                raise ValueError("rollout_id: is empty; a stored rollout needs an id")
            if decoded.rollout_id in self._records:
                return None
            slot = (int(decoded.iteration), int(decoded.condition), int(decoded.sample_index), decoded.policy_type)
            if slot in self._slots:  # the same trial re-run (e.g. re-requested after a restart): keep the first
                return None
            if self._writer is None:
                self._open_segment()
            log_time = time.time_ns() if log_time is None else log_time
            self._writer.add_message(self._channel_id, log_time=log_time, data=bytes(cdr),
                                     publish_time=log_time, sequence=self._sequence)
            self._sequence += 1
            self._sync()
            rec = self._record(decoded, self._segment_name, log_time)
            self._records[rec.rollout_id] = rec
            self._slots[rec.slot] = rec.rollout_id
            return rec

    def slots(self, iteration: int) -> set[tuple[int, int, int, str]]:
        with self._lock:
            return {s for s in self._slots if s[0] == iteration}

    def close(self) -> None:
        """Finish the open segment (summary + footer); safe to call twice."""
        with self._lock:
            if self._writer is not None:
                self._writer.finish()
                self._sync()
                self._file.close()
                self._writer = None
                self._file = None

    def __enter__(self) -> RolloutStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """One loaded checkpoint: ``iteration`` is the index of the last completed iteration."""

    iteration: int
    path: Path
    algorithm: dict[str, np.ndarray]
    controllers: dict[str, np.ndarray]
    metadata: dict[str, Any]

    @property
    def policy_path(self) -> Path | None:
        """The checkpoint's policy file (gps_controller.policies.serialization.save_policy's format:
        safetensors with the architecture in its metadata, what ``gps eval --policy`` takes), if any."""
        path = self.path / "policy.safetensors"
        return path if path.exists() else None


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """Atomic per-iteration checkpoints under ``<output>/checkpoints``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory) / "checkpoints"
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, iteration: int) -> Path:
        return self.directory / f"iter_{iteration:05d}"

    def save(
        self,
        iteration: int,
        algorithm: dict[str, np.ndarray],
        controllers: dict[str, np.ndarray] | None = None,
        policy: Any = None,
        metadata: dict[str, Any] | None = None,
    ) -> Path:
        """Write the checkpoint of completed ``iteration``; returns its directory.

        ``policy``: a GaussianPolicy, written with ``save_policy`` (the one policy file format).
        """
        final = self.path(iteration)
        tmp = self.directory / f".tmp-{final.name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        files: dict[str, str] = {}
        np.savez(tmp / "algorithm.npz", **_check_arrays(algorithm, "algorithm"))
        np.savez(tmp / "controllers.npz", **_check_arrays(controllers or {}, "controllers"))
        if policy is not None:
            from gps_controller.policies.serialization import save_policy

            save_policy(policy, tmp / "policy.safetensors")
        for p in sorted(tmp.iterdir()):
            files[p.name] = _sha256_file(p)
            _fsync_path(p)
        meta = {"iteration": int(iteration), "created": time.time(), "files": files, **(metadata or {})}
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default))
        _fsync_path(tmp / "metadata.json")
        _fsync_path(tmp)
        if final.exists():  # re-running a completed iteration replaces it (rename is atomic per dir)
            old = self.directory / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_path(self.directory)
        return final

    def iterations(self) -> list[int]:
        """Iterations with a complete, verified checkpoint, ascending."""
        out = []
        for p in self.directory.iterdir():
            m = _CKPT_RE.match(p.name)
            if m and self._verify(p):
                out.append(int(m.group(1)))
        return sorted(out)

    @staticmethod
    def _verify(path: Path) -> bool:
        try:
            meta = json.loads((path / "metadata.json").read_text())
            return all(_sha256_file(path / name) == digest for name, digest in meta["files"].items())
        except (OSError, ValueError, KeyError):
            return False

    def latest(self) -> Checkpoint | None:
        its = self.iterations()
        return self.load(its[-1]) if its else None

    def load(self, iteration: int) -> Checkpoint:
        path = self.path(iteration)
        if not self._verify(path):
            raise FileNotFoundError(f"no complete checkpoint for iteration {iteration} at {path}")
        meta = json.loads((path / "metadata.json").read_text())
        with np.load(path / "algorithm.npz", allow_pickle=False) as z:
            algorithm = {k: z[k] for k in z.files}
        with np.load(path / "controllers.npz", allow_pickle=False) as z:
            controllers = {k: z[k] for k in z.files}
        return Checkpoint(int(meta["iteration"]), path, algorithm, controllers, meta)

    def cleanup_temporaries(self) -> int:
        """Remove leftovers of checkpoints interrupted before their rename; returns how many."""
        n = 0
        for p in self.directory.iterdir():
            if p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        return n


def _check_arrays(arrays: dict[str, Any], what: str) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        a = np.asarray(v)
        if a.dtype == object:
            raise TypeError(f"{what}[{k!r}]: object arrays would need pickle; store numeric arrays only")
        out[k] = a
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
