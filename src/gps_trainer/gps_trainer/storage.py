"""Durable trainer storage: every Rollout in MCAP as it arrives, and atomic per-iteration checkpoints.

Rollouts
    :class:`RolloutStore` keeps ``<output>/rollouts/iter_KKKKK-NN.mcap``: one or more segments per
    GPS iteration K (a new segment NN after every restart: a file of a killed run is never appended
    to). Each is a chunked MCAP file (ROS 2 profile, ``gps_msgs/msg/Rollout`` schema, CDR messages:
    the rosbag2 storage format, readable by ``ros2 bag`` / Foxglove). Every rollout is its own chunk
    (with the chunk's CRC-32 of its records) and is flushed and fsync'ed before :meth:`RolloutStore.add`
    returns, so a process killed at any moment loses nothing that was already acknowledged. When a
    segment is closed (the store moves to another iteration, or :meth:`RolloutStore.close`), the MCAP
    summary is written: schemas, channels, statistics and the chunk index, with the summary CRC.

    Reading iteration K opens only K's segments (lazily, the first time K is asked for). A segment
    with a valid summary is read through its chunk index; one without (a killed run) is recovered by
    scanning its chunks, re-synchronising on the next valid chunk after damaged framing. Every chunk's
    CRC is checked and every body is decoded and validated; a bad record is skipped, counted and
    logged, and its trial slot is not reported by :meth:`RolloutStore.slots`, so the trainer samples
    it again. A truncated tail is counted with its bytes, and an append-only journal
    (``iter_KKKKK.journal``, one JSON line per acknowledged rollout, written after the fsync of its
    chunk) names the acknowledged rollouts that could not be recovered. :attr:`RolloutStore.integrity`
    sums all of this for the trainer's status.

    Legacy ``rollouts-NNNNN.mcap`` segments (unchunked, all iterations in one file) are still read.

Checkpoints
    :class:`CheckpointStore` writes ``<output>/checkpoints/iter_NNNNN/`` with ``algorithm.npz``
    (numpy arrays, loaded with ``allow_pickle=False``), ``controllers.npz``, optional
    ``policy.safetensors`` (save_policy: the architecture in its metadata), and ``metadata.json`` (iteration index,
    SHA-256 of each file). It is written into a temporary directory, fsync'ed and renamed into place,
    so a checkpoint directory either exists complete or not at all. Nothing is ever pickled.
    :meth:`CheckpointStore.latest` falls back past damaged newer checkpoints, logs a warning for each
    and lists them in :attr:`CheckpointStore.skipped_checkpoints`.

This module imports no rclpy: messages are handled as CDR bytes (the trainer node subscribes raw)
and decoded with ``mcap_ros2``'s schema-driven decoder.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.records import ChunkIndex, Statistics
from mcap.stream_reader import get_chunk_data_stream
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

log = logging.getLogger("gps_trainer.storage")

ROLLOUT_TOPIC = "/gps/rollouts"
ROLLOUT_SCHEMA = "gps_msgs/msg/Rollout"
_SEGMENT_RE = re.compile(r"^iter_(\d{5})-(\d{2,})\.mcap$")
_LEGACY_RE = re.compile(r"^rollouts-(\d{5})\.mcap$")
_CKPT_RE = re.compile(r"^iter_(\d{5})$")
_SEP = "=" * 80
_MAGIC = b"\x89MCAP0\r\n"
_REC_HEAD = struct.Struct("<BQ")  # opcode, record length
_CHUNK_HEAD = struct.Struct("<QQQI")  # message start/end time, uncompressed size, uncompressed crc
_MSG_HEAD = struct.Struct("<HIQQ")  # channel id, sequence, log time, publish time
_MAX_UNCOMPRESSED = 1 << 30  # a compressed chunk (other writers) may not claim more than this
_FOOTER_LEN = 1 + 8 + 20  # opcode, length, summary_start, summary_offset_start, summary_crc


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


# --------------------------------------------------------------------------- segment scanning


@dataclass
class _Scan:
    """What one segment file holds: intact messages (offset of their chunk, log time, CDR) and damage."""

    messages: list[tuple[int, int, bytes]] = field(default_factory=list)
    corrupted: int = 0  # chunks (or records) whose CRC failed or that could not be parsed
    truncated: bool = False  # the file ends inside a record
    lost_bytes: int = 0  # bytes that could not be used: truncated tail + damaged regions
    summary: bool = False  # read through a valid summary (chunk index)
    problems: list[str] = field(default_factory=list)


def _chunk_messages(body: memoryview) -> list[tuple[int, bytes]]:
    """(log_time, data) of the Message records of a Chunk record body; raises on a CRC mismatch or bad framing."""
    start_t, end_t, usize, crc = _CHUNK_HEAD.unpack_from(body, 0)
    (clen,) = struct.unpack_from("<I", body, _CHUNK_HEAD.size)
    pos = _CHUNK_HEAD.size + 4
    compression = bytes(body[pos:pos + clen]).decode("utf-8")
    pos += clen
    (rlen,) = struct.unpack_from("<Q", body, pos)
    pos += 8
    if pos + rlen != len(body):
        raise ValueError(f"chunk records length {rlen} does not match its record ({len(body) - pos} bytes)")
    if compression:  # not written by this store, but a valid MCAP chunk: let mcap decompress and check it
        from mcap.records import Chunk

        if usize > _MAX_UNCOMPRESSED:  # the size read from the file sizes the allocation: bound it
            raise ValueError(f"compressed chunk claims {usize} bytes uncompressed (limit {_MAX_UNCOMPRESSED})")
        chunk = Chunk(compression=compression, data=bytes(body[pos:]), message_start_time=start_t,
                      message_end_time=end_t, uncompressed_crc=crc, uncompressed_size=usize)
        try:
            stream, n = get_chunk_data_stream(chunk, validate_crc=True)
            records = memoryview(stream.read(n))
        except Exception as e:  # noqa: BLE001 - zstd/lz4/mcap errors of a damaged chunk
            raise ValueError(f"{compression} chunk does not decompress: {type(e).__name__}: {e}") from e
    else:
        records = body[pos:]
        if crc != 0 and zlib.crc32(records) != crc:
            raise ValueError(f"chunk CRC mismatch (stored {crc:#010x}, computed {zlib.crc32(records):#010x})")
    out = []
    pos = 0
    while pos < len(records):
        opcode, length = _REC_HEAD.unpack_from(records, pos)
        pos += _REC_HEAD.size
        if pos + length > len(records):
            raise ValueError("a record inside the chunk overruns it")
        if opcode == Opcode.MESSAGE:
            _ch, _seq, log_time, _pub = _MSG_HEAD.unpack_from(records, pos)
            out.append((log_time, bytes(records[pos + _MSG_HEAD.size:pos + length])))
        pos += length
    return out


def _plausible_chunk(data: memoryview, pos: int, end: int) -> bool:
    """A cheap test that a CHUNK record of this store's kind (uncompressed) starts at ``pos``."""
    if pos + _REC_HEAD.size + _CHUNK_HEAD.size + 12 > end:
        return False
    opcode, length = _REC_HEAD.unpack_from(data, pos)
    if opcode != Opcode.CHUNK or pos + _REC_HEAD.size + length > end:
        return False
    _s, _e, usize, _crc = _CHUNK_HEAD.unpack_from(data, pos + _REC_HEAD.size)
    (clen,) = struct.unpack_from("<I", data, pos + _REC_HEAD.size + _CHUNK_HEAD.size)
    return clen == 0 and length == _CHUNK_HEAD.size + 4 + 8 + usize


def _read_summary_chunks(data: memoryview) -> tuple[list[ChunkIndex], int] | None:
    """The chunk index and message count of a cleanly closed segment; None if footer or summary is bad."""
    n = len(data)
    if n < 2 * len(_MAGIC) + _FOOTER_LEN or bytes(data[n - 8:]) != _MAGIC:
        return None
    fpos = n - 8 - _FOOTER_LEN
    opcode, length = _REC_HEAD.unpack_from(data, fpos)
    if opcode != Opcode.FOOTER or length != 20:
        return None
    summary_start, summary_offset_start, summary_crc = struct.unpack_from("<QQI", data, fpos + 9)
    if not 8 <= summary_start <= fpos:
        return None
    summary = data[summary_start:fpos]
    crc = zlib.crc32(struct.pack("<BQQQ", Opcode.FOOTER, 20, summary_start, summary_offset_start),
                     zlib.crc32(summary))
    if summary_crc != 0 and crc != summary_crc:
        return None
    chunks: list[ChunkIndex] = []
    messages = -1
    pos = 0
    try:
        while pos < len(summary):
            opcode, length = _REC_HEAD.unpack_from(summary, pos)
            body = summary[pos + 9:pos + 9 + length]
            if opcode == Opcode.CHUNK_INDEX:
                chunks.append(ChunkIndex.read(ReadDataStream(io.BytesIO(body))))
            elif opcode == Opcode.STATISTICS:
                messages = Statistics.read(ReadDataStream(io.BytesIO(body))).message_count
            pos += 9 + length
    except Exception:  # noqa: BLE001 - a summary that passed its CRC but does not parse: scan instead
        return None
    return chunks, messages


def _scan_segment(data: memoryview) -> _Scan:
    """Every intact message of one MCAP segment, with what was damaged (never raises on file content)."""
    scan = _Scan()
    end = len(data)
    if end < len(_MAGIC):
        scan.truncated, scan.lost_bytes = True, end
        scan.problems.append(f"truncated: {end} bytes, shorter than the MCAP magic")
        return scan
    if bytes(data[:8]) != _MAGIC:
        scan.problems.append("bad magic (reading on)")
    summary = _read_summary_chunks(data)
    if summary is not None and summary[0]:  # an unchunked (legacy) file has no chunk index: scan it
        chunks, _message_count = summary
        scan.summary = True
        for ci in chunks:
            pos, length = ci.chunk_start_offset, ci.chunk_length
            try:
                opcode, rlen = _REC_HEAD.unpack_from(data, pos)
                if opcode != Opcode.CHUNK or rlen + 9 != length or pos + length > end:
                    raise ValueError(f"no chunk record at offset {pos}")
                scan.messages.extend((pos, t, d) for t, d in _chunk_messages(data[pos + 9:pos + length]))
            except (ValueError, struct.error, UnicodeDecodeError) as e:
                scan.corrupted += 1
                scan.lost_bytes += length
                scan.problems.append(f"chunk at offset {pos}: {e}")
        return scan
    pos = 8
    while pos < end:
        if pos + _REC_HEAD.size > end:
            scan.truncated = True
            scan.lost_bytes += end - pos
            scan.problems.append(f"truncated: the last {end - pos} bytes (from offset {pos}) are an incomplete record")
            break
        opcode, length = _REC_HEAD.unpack_from(data, pos)
        known = opcode in _KNOWN_OPCODES
        if not known or length > end - pos - _REC_HEAD.size:  # framing broken: a truncated tail, or damage followed by more chunks
            nxt = _resync(data, pos + 1, end)
            if nxt is None and not known:
                scan.corrupted += 1
                scan.lost_bytes += end - pos
                scan.problems.append(f"damaged from offset {pos} to the end ({end - pos} bytes): no valid chunk after it")
                break
            if nxt is None:
                scan.truncated = True
                scan.lost_bytes += end - pos
                scan.problems.append(f"truncated: the last {end - pos} bytes (from offset {pos}) are an incomplete record")
                break
            scan.corrupted += 1
            scan.lost_bytes += nxt - pos
            scan.problems.append(f"damaged framing at offset {pos}: {nxt - pos} bytes skipped to the next chunk")
            pos = nxt
            continue
        body = data[pos + 9:pos + 9 + length]
        try:
            if opcode == Opcode.CHUNK:
                scan.messages.extend((pos, t, d) for t, d in _chunk_messages(body))
            elif opcode == Opcode.MESSAGE:  # legacy unchunked segments
                _ch, _seq, log_time, _pub = _MSG_HEAD.unpack_from(body, 0)
                scan.messages.append((pos, log_time, bytes(body[_MSG_HEAD.size:])))
            elif opcode == Opcode.DATA_END:
                scan.problems.append("summary or footer damaged (data section read in full)")
                break
        except (ValueError, struct.error, UnicodeDecodeError) as e:
            scan.corrupted += 1
            scan.lost_bytes += 9 + length
            scan.problems.append(f"record at offset {pos}: {e}")
        pos += 9 + length
    return scan


_KNOWN_OPCODES = {int(o) for o in Opcode}


def _resync(data: memoryview, start: int, end: int) -> int | None:
    """Offset of the next chunk record at or after ``start`` whose CRC checks, or None."""
    raw = data.obj if isinstance(data.obj, bytes | bytearray) and len(data.obj) == end else bytes(data)
    pos = raw.find(b"\x06", start)
    while pos != -1:
        if _plausible_chunk(data, pos, end):
            _o, length = _REC_HEAD.unpack_from(data, pos)
            try:
                _chunk_messages(data[pos + 9:pos + 9 + length])
                return pos
            except (ValueError, struct.error, UnicodeDecodeError):
                pass
        pos = raw.find(b"\x06", pos + 1)
    return None


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
    offset: int = 0  # byte offset of its chunk (of its message record in a legacy segment)

    @property
    def slot(self) -> tuple[int, int, int, str]:
        """(iteration, condition, sample_index, policy_type): one stored rollout per slot."""
        return (self.iteration, self.condition, self.sample_index, self.policy_type)


_INTEGRITY_KEYS = ("corrupted_records", "truncated_segments", "lost_bytes", "missing_rollouts",
                   "duplicates_skipped", "segments_without_summary")


def _rollouts_lost(integrity: dict[str, int]) -> int:
    """Rollouts of one iteration lost to damage. The journal names every acknowledged rollout that was
    not recovered (missing_rollouts), whether a CRC failure, a cut inside its chunk or a wrecked file
    lost it; a damaged record or a truncated tail is at least one rollout, which also covers what the
    journal cannot name (a rollout being written when the run was killed, journal lines lost with a
    power cut, legacy segments). Counting both would count most losses twice: the larger is the count."""
    damaged = integrity["corrupted_records"] + integrity["truncated_segments"]
    return max(integrity["missing_rollouts"], damaged)


@dataclass
class _Iteration:
    """The verified contents of one iteration's segments."""

    records: dict[str, RolloutRecord] = field(default_factory=dict)  # id -> record, arrival order
    slots: dict[tuple, str] = field(default_factory=dict)
    integrity: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_INTEGRITY_KEYS, 0))


class RolloutStore:
    """Append-only, de-duplicating, per-iteration MCAP store of Rollout messages (CDR bytes).

    ``add(cdr)`` returns the :class:`RolloutRecord` when the rollout was written, ``None`` when its
    id, or its slot (iteration, condition, sample_index, policy_type), was already stored for that
    iteration (in any segment, including those of earlier runs); it raises ``ValueError`` for a
    body that does not decode or validate (such a rollout is never stored).
    """

    def __init__(self, directory: str | Path, fsync: bool = True):
        self.directory = Path(directory) / "rollouts"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._schema_text = rollout_schema_text()
        self._decode = generate_dynamic(ROLLOUT_SCHEMA, self._schema_text)[ROLLOUT_SCHEMA]
        self._lock = threading.RLock()  # add() runs in a subscription thread, reads in the worker
        self._iters: dict[int, _Iteration] = {}  # indexed (verified) iterations
        self._legacy: dict[int, _Iteration] | None = None
        self._file = None
        self._journal = None
        self._writer: McapWriter | None = None
        self._writing: int | None = None  # iteration of the open segment
        self._segment_name = ""
        self._channel_id = 0
        self._sequence = 0
        self.problems: list[str] = []  # one line per damage found (also logged)
        self._reported: set[str] = set()

    # ---- files

    def segments(self, iteration: int | None = None) -> list[Path]:
        """Segment files (of one iteration), in write order; legacy segments only when ``iteration`` is None."""
        out = []
        for p in self.directory.iterdir():
            m = _SEGMENT_RE.match(p.name)
            if m and (iteration is None or int(m.group(1)) == iteration):
                out.append((int(m.group(1)), int(m.group(2)), p))
            elif iteration is None and _LEGACY_RE.match(p.name):
                out.append((-1, int(_LEGACY_RE.match(p.name).group(1)), p))
        return [p for _k, _n, p in sorted(out)]

    def iterations(self) -> list[int]:
        """Iterations that have segment files (nothing is read)."""
        its = {int(m.group(1)) for p in self.directory.iterdir() if (m := _SEGMENT_RE.match(p.name))}
        return sorted(its | set(self._iters) | set(self._legacy_iterations()))

    def _journal_path(self, iteration: int) -> Path:
        return self.directory / f"iter_{iteration:05d}.journal"

    # ---- verification

    def _report(self, line: str) -> None:
        if line not in self._reported:  # re-verifying an iteration finds the same damage again
            self._reported.add(line)
            self.problems.append(line)
            log.warning("rollout store: %s", line)

    def _decode_valid(self, cdr: bytes) -> tuple[Any, RolloutData]:
        """Decode and validate one body; ValueError naming the cause otherwise."""
        try:
            decoded = self._decode(cdr)
        except Exception as e:  # noqa: BLE001 - any decoder failure means a bad body
            raise ValueError(f"rollout body does not decode as {ROLLOUT_SCHEMA}: {type(e).__name__}: {e}") from e
        return decoded, rollout_from_msg(decoded)

    def _read_segments(self, paths: list[Path], iteration: int | None,
                       it: _Iteration) -> list[tuple[RolloutRecord, RolloutData]]:
        """Verify ``paths`` into ``it`` (records, slots, integrity); return every intact rollout."""
        out: list[tuple[RolloutRecord, RolloutData]] = []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    raw = f.read()
            except OSError as e:
                self._report(f"{path.name}: unreadable ({e})")
                it.integrity["corrupted_records"] += 1
                continue
            scan = _scan_segment(memoryview(raw))
            open_now = path.name == self._segment_name and self._writer is not None
            if not scan.summary and not open_now and not _LEGACY_RE.match(path.name):
                it.integrity["segments_without_summary"] += 1
            it.integrity["corrupted_records"] += scan.corrupted
            it.integrity["truncated_segments"] += int(scan.truncated)
            it.integrity["lost_bytes"] += scan.lost_bytes
            for line in scan.problems:
                if "summary or footer damaged" in line or not (scan.corrupted or scan.truncated or "magic" in line):
                    log.info("rollout store: %s: %s", path.name, line)
                else:
                    self._report(f"{path.name}: {line}")
            for offset, log_time, cdr in scan.messages:
                try:
                    decoded, data = self._decode_valid(cdr)
                    if iteration is not None and int(decoded.iteration) != iteration:
                        raise ValueError(f"iteration {decoded.iteration} in a segment of iteration {iteration}")
                    if not decoded.rollout_id:
                        raise ValueError("empty rollout_id")
                except ValueError as e:
                    it.integrity["corrupted_records"] += 1
                    self._report(f"{path.name}: record at offset {offset} skipped: {e}")
                    continue
                rec = self._record(decoded, path.name, log_time, offset)
                if rec.rollout_id in it.records or rec.slot in it.slots:
                    it.integrity["duplicates_skipped"] += 1
                    continue
                it.records[rec.rollout_id] = rec
                it.slots[rec.slot] = rec.rollout_id
                out.append((rec, data))
        return out

    def _check_journal(self, iteration: int, it: _Iteration) -> None:
        """Count (and name) acknowledged rollouts of ``iteration`` that were not recovered intact."""
        path = self._journal_path(iteration)
        if not path.exists():
            return
        missing = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
                rid, slot = entry["id"], tuple(entry["slot"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of a killed run (written after the data's fsync)
            if rid not in it.records and (iteration, *slot) not in it.slots:
                missing.append(f"{rid} (segment {entry.get('segment')})")
        if missing:
            it.integrity["missing_rollouts"] += len(missing)
            self._report(f"iteration {iteration}: {len(missing)} acknowledged rollout(s) lost "
                         f"(truncated or corrupted; their trials will be sampled again): {', '.join(missing[:10])}")

    def _index(self, iteration: int) -> list[tuple[RolloutRecord, RolloutData]]:
        """(Re)read and verify every segment of ``iteration``; returns its intact rollouts."""
        it = _Iteration()
        out = self._read_segments(self.segments(iteration), iteration, it)
        self._check_journal(iteration, it)
        self._iters[iteration] = it
        return out

    def _iteration(self, iteration: int) -> _Iteration:
        with self._lock:
            if iteration not in self._iters:
                self._index(iteration)
            return self._iters[iteration]

    def _legacy_iterations(self) -> dict[int, _Iteration]:
        """Records of legacy (pre-chunking, all-iterations) segments, read once."""
        if self._legacy is None:
            self._legacy = {}
            paths = [p for p in self.segments() if _LEGACY_RE.match(p.name)]
            if paths:
                everything = _Iteration()
                self._read_segments(paths, None, everything)
                for rec in everything.records.values():
                    sub = self._legacy.setdefault(rec.iteration, _Iteration())
                    sub.records[rec.rollout_id] = rec
                    sub.slots[rec.slot] = rec.rollout_id
                if self._legacy:
                    first = self._legacy[min(self._legacy)]
                    for k, v in everything.integrity.items():
                        first.integrity[k] += v
        return self._legacy

    def _view(self, iteration: int) -> _Iteration:
        """Verified records of ``iteration``: its own segments plus any legacy ones."""
        it = self._iteration(iteration)
        old = self._legacy_iterations().get(iteration)
        if old is None:
            return it
        merged = _Iteration(dict(old.records), dict(old.slots))
        for rid, rec in it.records.items():
            if rid not in merged.records and rec.slot not in merged.slots:
                merged.records[rid] = rec
                merged.slots[rec.slot] = rid
        return merged

    @property
    def integrity(self) -> dict[str, int]:
        """Damage found so far in the iterations read (counts; ``problems`` has the lines).

        corrupted_records: chunks/records whose CRC failed, that did not parse, decode or validate;
        truncated_segments: segments ending inside a record; lost_bytes: bytes of those tails and
        damaged regions; missing_rollouts: acknowledged (journaled) rollouts not recovered intact;
        duplicates_skipped; segments_without_summary: closed by a kill (recovered by scanning);
        rollouts_lost: every rollout lost to damage, whatever found it (:func:`_rollouts_lost`).
        """
        with self._lock:
            total = dict.fromkeys(_INTEGRITY_KEYS, 0)
            total["rollouts_lost"] = 0
            for it in [*self._iters.values(), *self._legacy_iterations().values()]:
                for k, v in it.integrity.items():
                    total[k] += v
                total["rollouts_lost"] += _rollouts_lost(it.integrity)
            total["iterations_checked"] = len(self._iters)
            return total

    def verify(self) -> dict[str, int]:
        """Read and verify every iteration now (re-reading those read before); returns :attr:`integrity`."""
        with self._lock:
            for k in self.iterations():
                self._index(k)
            return self.integrity

    # ---- reading

    @staticmethod
    def _record(decoded: Any, segment: str, log_time: int, offset: int) -> RolloutRecord:
        return RolloutRecord(
            rollout_id=decoded.rollout_id,
            iteration=int(decoded.iteration),
            condition=int(decoded.condition),
            sample_index=int(decoded.sample_index),
            policy_type=decoded.policy_type,
            robot_namespace=decoded.robot_namespace,
            segment=segment,
            log_time=log_time,
            offset=offset,
        )

    def __contains__(self, rollout_id: str) -> bool:
        return any(r.rollout_id == rollout_id for r in self.records())

    def __len__(self) -> int:
        """Stored rollouts of all iterations (reads every iteration not read yet)."""
        return len(self.records())

    def stored_count(self) -> int:
        """Rollouts stored, cheaply: verified counts of the iterations read so far, acknowledged
        (journaled) counts of the others, which are not read (``len()`` reads and verifies them all)."""
        with self._lock:
            n = 0
            for k in self.iterations():
                if k in self._iters:
                    n += len(self._view(k).records)
                else:
                    path = self._journal_path(k)
                    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
                    n += sum(1 for line in lines if line.endswith("}"))
                    n += len(self._legacy_iterations().get(k, _Iteration()).records)
            return n

    def records(self, iteration: int | None = None, policy_type: str | None = None) -> list[RolloutRecord]:
        """Intact stored records (of one iteration, or all: reads every iteration) in arrival order."""
        with self._lock:
            its = [iteration] if iteration is not None else self.iterations()
            return [r for k in its for r in self._view(k).records.values()
                    if policy_type is None or r.policy_type == policy_type]

    def slots(self, iteration: int) -> set[tuple[int, int, int, str]]:
        """(iteration, condition, sample_index, policy_type) of every intact rollout of ``iteration``."""
        with self._lock:
            return set(self._view(iteration).slots)

    def load(self, iteration: int, policy_type: str | None = None) -> list[RolloutData]:
        """All intact rollouts of ``iteration`` (validated through conversions), in arrival order.

        Reads only that iteration's segments and re-verifies them; a record damaged since it was
        indexed is skipped, counted and its slot dropped. Never raises because of file content.
        """
        with self._lock:
            out: list[RolloutData] = []
            old = self._legacy_iterations().get(iteration)
            if old is not None:  # rollouts of this iteration in pre-chunking segments
                paths = sorted({self.directory / r.segment for r in old.records.values()})
                for rec, data in self._read_segments(paths, None, _Iteration()):
                    if rec.rollout_id in old.records and policy_type in (None, rec.policy_type):
                        out.append(data)
            taken = set(old.slots) if old is not None else set()
            for rec, data in self._index(iteration):
                if rec.slot not in taken and policy_type in (None, rec.policy_type):
                    out.append(data)
            return out

    # ---- writing

    def _open_segment(self, iteration: int) -> None:
        existing = [int(_SEGMENT_RE.match(p.name).group(2)) for p in self.segments(iteration)]
        n = max(existing) + 1 if existing else 0
        path = self.directory / f"iter_{iteration:05d}-{n:02d}.mcap"
        self._file = open(path, "xb")  # never reuse an existing (possibly truncated) file
        self._segment_name = path.name
        self._writing = iteration
        self._journal = open(self._journal_path(iteration), "a", encoding="utf-8")
        if self.fsync:  # the new files' directory entries must survive a power cut too
            _fsync_path(self.directory)
        # One chunk per rollout (flushed in add): each carries its own CRC, and the chunk index in the
        # summary lets readers (ros2 bag, Foxglove) seek. No compression: add() latency matters more.
        self._writer = McapWriter(self._file, chunk_size=1 << 62, compression=CompressionType.NONE,
                                  use_statistics=True, use_summary_offsets=True, enable_crcs=True)
        self._writer.start(profile="ros2", library="gps_trainer.storage")
        schema_id = self._writer.register_schema(ROLLOUT_SCHEMA, SchemaEncoding.ROS2, self._schema_text.encode())
        self._channel_id = self._writer.register_channel(ROLLOUT_TOPIC, MessageEncoding.CDR, schema_id)
        self._sequence = 0

    def _sync(self) -> None:
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def _abandon_segment(self) -> None:
        """Drop the open segment without a summary (after a write error): the next add opens a new one."""
        for f in (self._file, self._journal):
            try:
                f.close()
            except Exception:  # noqa: BLE001 - the file is being given up after an I/O error
                pass
        self._writer = self._file = self._journal = None
        self._writing = None

    def add(self, cdr: bytes, log_time: int | None = None) -> RolloutRecord | None:
        """Persist one CDR-serialized Rollout unless its id or slot is already stored; durable on return."""
        with self._lock:
            cdr = bytes(cdr)
            decoded, _data = self._decode_valid(cdr)
            if not decoded.rollout_id:
                raise ValueError("rollout_id: is empty; a stored rollout needs an id")
            iteration = int(decoded.iteration)
            view = self._view(iteration)
            if decoded.rollout_id in view.records:
                return None
            slot = (iteration, int(decoded.condition), int(decoded.sample_index), decoded.policy_type)
            if slot in view.slots:  # the same trial re-run (e.g. re-requested after a restart): keep the first
                return None
            if self._writer is not None and self._writing != iteration:
                self._finish_segment()
            if self._writer is None:
                self._open_segment(iteration)
            log_time = time.time_ns() if log_time is None else log_time
            offset = self._file.tell()
            try:
                self._writer.add_message(self._channel_id, log_time=log_time, data=cdr,
                                         publish_time=log_time, sequence=self._sequence)
                self._writer.flush()  # closes this rollout's chunk (CRC) and writes it
                self._sync()
                # Journal after the data is durable: it can lag the data, never lead it.
                self._journal.write(json.dumps({"id": decoded.rollout_id, "slot": list(slot[1:]),
                                                "segment": self._segment_name, "offset": offset}) + "\n")
                self._journal.flush()
            except OSError:
                self._abandon_segment()
                raise
            self._sequence += 1
            rec = self._record(decoded, self._segment_name, log_time, offset)
            it = self._iters[iteration]
            it.records[rec.rollout_id] = rec
            it.slots[rec.slot] = rec.rollout_id
            return rec

    def _finish_segment(self) -> None:
        try:
            self._writer.finish()
            self._sync()
            self._journal.flush()
            if self.fsync:
                os.fsync(self._journal.fileno())
            self._file.close()
            self._journal.close()
        finally:
            self._writer = self._file = self._journal = None
            self._writing = None

    def close(self) -> None:
        """Finish the open segment (summary with chunk index + footer); safe to call twice."""
        with self._lock:
            if self._writer is not None:
                self._finish_segment()

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
        # Checkpoints newer than the one latest() returned that were damaged: {iteration, path, reason}.
        self.skipped_checkpoints: list[dict[str, Any]] = []

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
        return [k for k in self._candidates() if self._damage(self.path(k)) is None]

    def _candidates(self) -> list[int]:
        """Iterations with a checkpoint directory (complete or not), ascending."""
        return sorted(int(m.group(1)) for p in self.directory.iterdir() if (m := _CKPT_RE.match(p.name)))

    @staticmethod
    def _damage(path: Path) -> str | None:
        """Why the checkpoint at ``path`` cannot be used, or None if every file matches its SHA-256."""
        try:
            meta = json.loads((path / "metadata.json").read_text())
            files = meta["files"]
            if not isinstance(files, dict) or not {"algorithm.npz", "controllers.npz"} <= set(files):
                return "metadata.json: 'files' does not list algorithm.npz and controllers.npz"
            if int(meta["iteration"]) != int(_CKPT_RE.match(path.name).group(1)):
                return f"metadata.json: iteration {meta['iteration']} does not match the directory {path.name}"
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"metadata.json unreadable: {type(e).__name__}: {e}"
        for name, digest in files.items():
            if "/" in name or name.startswith("."):
                return f"metadata.json names a file outside the checkpoint: {name!r}"
            try:
                if _sha256_file(path / name) != digest:
                    return f"{name}: SHA-256 mismatch (damaged or truncated)"
            except OSError as e:
                return f"{name}: unreadable ({type(e).__name__}: {e})"
        return None

    def latest(self) -> Checkpoint | None:
        """The newest usable checkpoint; damaged newer ones are logged and listed in ``skipped_checkpoints``."""
        self.skipped_checkpoints = []
        for k in reversed(self._candidates()):
            try:
                return self.load(k)
            except (FileNotFoundError, OSError, ValueError, KeyError) as e:
                reason = str(e.args[0]) if isinstance(e, _DamagedCheckpoint) else f"{type(e).__name__}: {e}"
                self.skipped_checkpoints.append({"iteration": k, "path": str(self.path(k)), "reason": reason})
                log.warning("checkpoint of iteration %d skipped (%s); falling back to an older one", k, reason)
        return None

    def load(self, iteration: int) -> Checkpoint:
        path = self.path(iteration)
        if not path.is_dir():
            raise FileNotFoundError(f"no checkpoint for iteration {iteration} at {path}")
        damage = self._damage(path)
        if damage is not None:
            raise _DamagedCheckpoint(f"checkpoint of iteration {iteration} at {path}: {damage}")
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


class _DamagedCheckpoint(FileNotFoundError):
    """A checkpoint directory exists but is incomplete or damaged (a FileNotFoundError: not usable)."""


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
