"""Integration over real DDS between separate processes: large Rollouts and weight pushes."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import rclpy
from safetensors.numpy import save as save_safetensors

from gps_controller import conversions as conv
from gps_msgs.srv import SetPolicyWeights
from testing_helpers import wait_for_output

pytestmark = pytest.mark.ros
PROBE = [sys.executable, "-m", "gps_controller.transport_probe"]


@pytest.mark.parametrize("image_size,count", [(64, 5), (240, 3)])
def test_rollout_crosses_processes_intact(tmp_path, ros_env, image_size, count):
    out = tmp_path / "recv.json"
    sub = subprocess.Popen([*PROBE, "sub", "--count", str(count), "--out", str(out), "--timeout", "90"],
                           env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_output(sub, "ready", timeout=30.0)
        pub = subprocess.run([*PROBE, "pub", "--count", str(count), "--horizon", "100",
                              "--image-size", str(image_size), "--timeout", "90"],
                             env=ros_env, capture_output=True, text=True, timeout=150)
        assert pub.returncode == 0, pub.stderr
        assert sub.wait(timeout=120) == 0, sub.stderr.read()
    finally:
        sub.kill()
    result = json.loads(out.read_text())
    assert result["errors"] == []
    got = sorted(r["sample_index"] for r in result["received"])
    assert got == list(range(count))
    assert all(r["content_ok"] for r in result["received"])
    expected_image_bytes = 100 * image_size * image_size * 3
    assert all(r["bytes"] >= expected_image_bytes for r in result["received"])


def _cnn_like_weights(rng) -> bytes:
    # The parameter shapes of the paper's CNN at 240x240 with a 39-d configuration: 92,423 parameters.
    shapes = {"conv1.weight": (64, 3, 7, 7), "conv1.bias": (64,), "conv2.weight": (32, 64, 5, 5),
              "conv2.bias": (32,), "conv3.weight": (32, 32, 5, 5), "conv3.bias": (32,),
              "fc1.weight": (40, 64 + 39), "fc1.bias": (40,),
              "fc2.weight": (40, 40), "fc2.bias": (40,), "fc3.weight": (7, 40), "fc3.bias": (7,)}
    return save_safetensors({k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()})


def test_weights_service_across_processes(ros_env):
    server = subprocess.Popen([*PROBE, "weights-server", "--timeout", "60"], env=ros_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rclpy.init()
    node = rclpy.create_node("weights_client")
    try:
        wait_for_output(server, "ready", timeout=30.0)
        client = node.create_client(SetPolicyWeights, "gps_controller/set_policy_weights")
        assert client.wait_for_service(timeout_sec=30.0)
        blob = _cnn_like_weights(np.random.default_rng(0))

        def call(sha):
            req = SetPolicyWeights.Request(architecture='{"type": "visuomotor_cnn"}',
                                           weights=conv.to_uint8_array(blob), sha256=sha, iteration=3)
            future = client.call_async(req)
            rclpy.spin_until_future_complete(node, future, timeout_sec=30.0)
            assert future.done(), "no answer from the weights server"
            return future.result()

        good = call(hashlib.sha256(blob).hexdigest())
        assert good.success, good.message
        assert good.num_parameters == 92_423
        bad = call(hashlib.sha256(blob + b"x").hexdigest())
        assert not bad.success
        assert bad.message.startswith("sha256: does not match the weights")
        assert bad.num_parameters == 0
        assert server.poll() is None, "the server must keep running after a rejected push"
    finally:
        node.destroy_node()
        rclpy.shutdown()
        server.kill()
