"""Cross-process transport benchmark: Rollout messages (64x64 and 240x240 images) and weight pushes.

Two processes per measurement (gps_controller.transport_probe), real Fast DDS, this session's own
ROS_DOMAIN_ID and localhost-only discovery. Prints a table, then one JSON line with the figures.

    . scripts/setup.sh && python benchmarks/transport.py [--rollouts 20] [--pushes 20]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np

PROBE = [sys.executable, "-m", "gps_controller.transport_probe"]


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(101, 160)))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def rollout_stream(image_size: int, count: int, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "recv.json")
        sub = subprocess.Popen([*PROBE, "sub", "--count", str(count), "--out", out, "--timeout", "300"],
                               env=env, stdout=subprocess.PIPE, text=True)
        while "ready" not in sub.stdout.readline():
            pass
        pub = subprocess.run([*PROBE, "pub", "--count", str(count), "--image-size", str(image_size),
                              "--timeout", "300"], env=env, capture_output=True, text=True)
        sub.wait(timeout=300)
        result = json.load(open(out))
    rec = result["received"]
    lat = np.array([r["latency_s"] for r in rec])
    span = rec[-1]["recv_time"] - rec[0]["recv_time"] + lat[0] if rec else float("nan")
    total_mb = sum(r["bytes"] for r in rec) / 1e6
    return {
        "image_size": image_size,
        "sent": count,
        "received": len(rec),
        "content_ok": all(r["content_ok"] for r in rec),
        "publisher_rc": pub.returncode,
        "message_mb": round(rec[0]["bytes"] / 1e6, 2) if rec else None,
        "latency_first_ms": round(1e3 * lat[0], 1) if rec else None,
        "latency_p50_ms": round(1e3 * float(np.median(lat)), 1) if rec else None,
        "throughput_mb_s": round(total_mb / span, 1) if rec else None,
        "rollouts_per_s": round(len(rec) / span, 2) if rec else None,
    }


def weight_pushes(count: int, env: dict) -> dict:
    import rclpy
    from safetensors.numpy import save

    from gps_controller import conversions as conv
    from gps_msgs.srv import SetPolicyWeights

    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    server = subprocess.Popen([*PROBE, "weights-server", "--timeout", "300"], env=env, stdout=subprocess.PIPE,
                              text=True)
    while "ready" not in server.stdout.readline():
        pass
    rng = np.random.default_rng(0)
    blob = save({"w": rng.normal(size=92_423).astype(np.float32)})
    sha = hashlib.sha256(blob).hexdigest()
    rclpy.init()
    node = rclpy.create_node("transport_bench_client")
    client = node.create_client(SetPolicyWeights, "gps_controller/set_policy_weights")
    client.wait_for_service(timeout_sec=30)
    times, ok = [], 0
    for _ in range(count):
        t0 = time.perf_counter()
        req = SetPolicyWeights.Request(architecture="{}", weights=conv.to_uint8_array(blob), sha256=sha)
        fut = client.call_async(req)
        rclpy.spin_until_future_complete(node, fut, timeout_sec=30)
        times.append(time.perf_counter() - t0)
        ok += bool(fut.done() and fut.result().success)
    node.destroy_node()
    rclpy.shutdown()
    server.kill()
    t = np.array(times) * 1e3
    return {"pushes": count, "accepted": ok, "payload_kb": round(len(blob) / 1e3, 1),
            "round_trip_p50_ms": round(float(np.median(t)), 2), "round_trip_max_ms": round(float(t.max()), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=20, help="rollouts per stream (one iteration's worth)")
    parser.add_argument("--pushes", type=int, default=20)
    args = parser.parse_args()
    env = _env()
    figures = {
        "fastdds_builtin_transports": env.get("FASTDDS_BUILTIN_TRANSPORTS", "DEFAULT"),
        "rollout_64": rollout_stream(64, args.rollouts, env),
        "rollout_240": rollout_stream(240, args.rollouts, env),
        "weights": weight_pushes(args.pushes, env),
    }
    for key in ("rollout_64", "rollout_240"):
        r = figures[key]
        print(f"{key}: {r['received']}/{r['sent']} received, {r['message_mb']} MB each, first "
              f"{r['latency_first_ms']} ms, p50 {r['latency_p50_ms']} ms, {r['throughput_mb_s']} MB/s")
    w = figures["weights"]
    print(f"weights: {w['accepted']}/{w['pushes']} accepted, {w['payload_kb']} kB, p50 {w['round_trip_p50_ms']} ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
