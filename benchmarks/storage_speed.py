"""RolloutStore speed: add() latency of a 64x64, T=100 rollout (~1.3 MB CDR) with fsync, and the time to
load one iteration of 20 rollouts from a reopened store holding several iterations.

Prints a table, then one JSON line with the figures. Uses a temporary directory on the default tmp
filesystem (set TMPDIR to measure another disk).

    . scripts/setup.sh && flock /tmp/gps-heavy.lock python benchmarks/storage_speed.py [--iterations 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np
from rclpy.serialization import serialize_message

from gps_controller import conversions as conv
from gps_trainer.storage import RolloutStore


def rollout_cdr(iteration: int, i: int, T: int = 100, size: int = 64) -> bytes:
    """One realistic rollout: 7-DoF arm state (dX=26), dU=7, dO=14, T x size x size rgb8 images."""
    rng = np.random.default_rng([iteration, i])
    data = conv.RolloutData(
        states=rng.normal(size=(T, 26)), actions=rng.normal(size=(T, 7)), observations=rng.normal(size=(T, 14)),
        noise=rng.normal(size=(T, 7)), stamps=np.arange(T) * 0.05,
        images=rng.integers(0, 256, size=(T, size, size, 3), dtype=np.uint8),
        condition=i % 4, iteration=iteration, sample_index=i // 4, policy_type="linear_gaussian",
        rollout_id=f"arm0/{iteration}/{i % 4}/{i // 4}/{i:08x}",
    )
    return serialize_message(conv.rollout_to_msg(data))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=3, help="iterations of 20 rollouts to store")
    ap.add_argument("--per-iteration", type=int, default=20)
    args = ap.parse_args()
    blobs = {(k, i): rollout_cdr(k, i) for k in range(args.iterations) for i in range(args.per_iteration)}
    size_mb = len(next(iter(blobs.values()))) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        add_ms = []
        with RolloutStore(tmp, fsync=True) as store:
            for key in sorted(blobs):
                t0 = time.perf_counter()
                assert store.add(blobs[key]) is not None
                add_ms.append(1e3 * (time.perf_counter() - t0))
        open_ms, load_ms, slots_ms = [], [], []
        for k in range(args.iterations):
            t0 = time.perf_counter()
            store = RolloutStore(tmp, fsync=True)
            t1 = time.perf_counter()
            got = store.load(k)
            t2 = time.perf_counter()
            store.slots(k)
            t3 = time.perf_counter()
            store.close()
            assert len(got) == args.per_iteration, len(got)
            open_ms.append(1e3 * (t1 - t0))
            load_ms.append(1e3 * (t2 - t1))
            slots_ms.append(1e3 * (t3 - t2))
    res = {
        "rollout_mb": round(size_mb, 3),
        "add_ms_median": round(statistics.median(add_ms), 2),
        "add_ms_p90": round(float(np.percentile(add_ms, 90)), 2),
        "open_ms_median": round(statistics.median(open_ms), 1),
        "load_iteration_ms_median": round(statistics.median(load_ms), 1),
        "rollouts_per_iteration": args.per_iteration,
        "iterations_stored": args.iterations,
    }
    print(f"rollout size            {size_mb:.2f} MB")
    print(f"add() with fsync        median {res['add_ms_median']} ms, p90 {res['add_ms_p90']} ms ({len(add_ms)} adds)")
    print(f"open (reopen store)     median {res['open_ms_median']} ms ({args.iterations} iterations stored)")
    print(f"load one iteration      median {res['load_iteration_ms_median']} ms ({args.per_iteration} rollouts)")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
