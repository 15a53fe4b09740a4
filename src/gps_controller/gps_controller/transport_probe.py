"""Cross-process transport probe: the peers of the DDS integration tests and of benchmarks/transport.py.

Run one role per process::

    python -m gps_controller.transport_probe sub --count 5 --out recv.json
    python -m gps_controller.transport_probe pub --count 5 --horizon 100 --image-size 240
    python -m gps_controller.transport_probe weights-server

``pub`` sends deterministic Rollouts (content derived from ``--seed`` and the sample index) on
``/gps/rollouts`` with the QoS the real nodes use; ``sub`` validates each one through
:mod:`gps_controller.conversions`, and records its latency and an image checksum to a JSON file.
``weights-server`` serves ``gps_controller/set_policy_weights`` and checks the payload envelope
(SHA-256), then parses the safetensors header and counts parameters without unpickling anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node

from gps_controller import conversions as conv
from gps_controller.qos import ROLLOUT_QOS
from gps_msgs.msg import Rollout
from gps_msgs.srv import SetPolicyWeights


def make_rollout(seed: int, index: int, horizon: int, image_size: int) -> conv.RolloutData:
    """A deterministic Rollout; the receiver regenerates it to check content."""
    rng = np.random.default_rng([seed, index])
    images = None
    if image_size > 0:
        images = rng.integers(0, 256, size=(horizon, image_size, image_size, 3), dtype=np.uint8)
    return conv.RolloutData(
        states=rng.normal(size=(horizon, 32)),
        actions=rng.normal(size=(horizon, 7)),
        observations=rng.normal(size=(horizon, 32)),
        noise=rng.normal(size=(horizon, 7)),
        stamps=np.arange(horizon) * 0.05,
        images=images,
        condition=index % 4,
        sample_index=index,
        rollout_id=f"probe/{seed}/{index}",
    )


def content_digest(data: conv.RolloutData) -> str:
    h = hashlib.sha256()
    for arr in (data.states, data.actions, data.observations, data.noise):
        h.update(np.ascontiguousarray(arr).tobytes())
    if data.images is not None:
        h.update(data.images.tobytes())
    return h.hexdigest()


def run_publisher(args) -> int:
    node = Node("transport_probe_pub")
    pub = node.create_publisher(Rollout, "/gps/rollouts", ROLLOUT_QOS)
    deadline = time.monotonic() + args.timeout
    while pub.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            print("pub: no subscriber matched", file=sys.stderr)
            return 2
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.2)  # let the reliable writer finish matching the reader's endpoints
    msgs = [conv.rollout_to_msg(make_rollout(args.seed, i, args.horizon, args.image_size)) for i in range(args.count)]
    for msg in msgs:
        msg.header.stamp = conv.seconds_to_time(time.time())
        pub.publish(msg)
        if args.period > 0:
            time.sleep(args.period)
    ok = pub.wait_for_all_acked(rclpy.duration.Duration(seconds=args.timeout))
    node.destroy_node()
    return 0 if ok else 3


def run_subscriber(args) -> int:
    node = Node("transport_probe_sub")
    received: list[dict] = []
    errors: list[str] = []

    def on_rollout(msg: Rollout) -> None:
        t_recv = time.time()
        try:
            data = conv.rollout_from_msg(msg)
        except conv.MessageValidationError as exc:
            errors.append(str(exc))
            return
        received.append({
            "sample_index": data.sample_index,
            "latency_s": t_recv - conv.time_to_seconds(msg.header.stamp),
            "recv_time": t_recv,
            "bytes": len(msg.images) + 8 * (len(msg.states) + len(msg.actions) + len(msg.observations)
                                            + len(msg.noise) + len(msg.stamps)),
            "digest": content_digest(data),
            "shape": [data.horizon, 0 if data.images is None else data.images.shape[1]],
        })

    node.create_subscription(Rollout, "/gps/rollouts", on_rollout, ROLLOUT_QOS)
    print("sub: ready", flush=True)
    deadline = time.monotonic() + args.timeout
    while len(received) + len(errors) < args.count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    # Checked after the loop so that regenerating the expected content does not delay delivery.
    for rec in received:
        expected = make_rollout(args.seed, rec["sample_index"], *rec["shape"])
        rec["content_ok"] = rec.pop("digest") == content_digest(expected)
    with open(args.out, "w") as f:
        json.dump({"received": received, "errors": errors}, f)
    node.destroy_node()
    return 0 if len(received) == args.count else 4


def safetensors_parameter_count(blob: bytes) -> int:
    """Parameter count from a safetensors header (8-byte little-endian length + JSON); no tensor is loaded."""
    if len(blob) < 8:
        raise conv.MessageValidationError("weights", "is too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > len(blob) - 8:
        raise conv.MessageValidationError("weights", "safetensors header length exceeds the payload")
    try:
        header = json.loads(blob[8 : 8 + header_len])
    except ValueError as exc:
        raise conv.MessageValidationError("weights", f"safetensors header is not JSON ({exc})") from None
    return sum(int(np.prod(v["shape"], dtype=np.int64)) for k, v in header.items() if k != "__metadata__")


def run_weights_server(args) -> int:
    node = Node("transport_probe_weights")

    def on_request(request, response):
        try:
            blob = conv.check_weights_payload(request.architecture, request.weights, request.sha256)
            response.num_parameters = safetensors_parameter_count(blob)
            response.success, response.message = True, "accepted"
        except conv.MessageValidationError as exc:
            response.success, response.message, response.num_parameters = False, str(exc), 0
        return response

    node.create_service(SetPolicyWeights, "gps_controller/set_policy_weights", on_request)
    print("weights-server: ready", flush=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["pub", "sub", "weights-server"])
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--period", type=float, default=0.0, help="seconds between publishes")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--out", default="transport_probe.json")
    args = parser.parse_args(argv)
    rclpy.init()
    try:
        return {"pub": run_publisher, "sub": run_subscriber, "weights-server": run_weights_server}[args.role](args)
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
