"""The gps_sim node in lockstep over real DDS, running in a separate process."""

import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import Point, Pose, Quaternion  # noqa: E402
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, UInt64  # noqa: E402

from gps_msgs.srv import ResetCondition  # noqa: E402
from gps_sim.arm_sim import JOINT_NAMES  # noqa: E402

pytestmark = pytest.mark.ros

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _stamp(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


class Probe:
    def __init__(self, ns: str):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("sim_probe", namespace=ns, context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.joint_states, self.images, self.rejected = [], [], []
        self.node.create_subscription(JointState, "joint_states", self.joint_states.append, RELIABLE)
        self.node.create_subscription(Image, "camera/image_raw", self.images.append, RELIABLE)
        self.node.create_subscription(UInt64, "gps_sim/rejected_commands",
                                      lambda m: self.rejected.append(m.data), LATCHED)
        self.cmd_pub = self.node.create_publisher(Float64MultiArray, "effort_controller/commands", RELIABLE)
        self.reset_client = self.node.create_client(ResetCondition, "gps_sim/reset")

    def wait_for(self, pred, timeout=20.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return pred()

    def reset(self, timeout=20.0, **fields):
        req = ResetCondition.Request(**fields)
        fut = self.reset_client.call_async(req)
        assert self.wait_for(fut.done, timeout), "reset service did not answer"
        return fut.result()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture(scope="module")
def sim_process(tmp_path_factory):
    ns = "/simtest_" + uuid.uuid4().hex[:8]
    log = tmp_path_factory.mktemp("sim") / "sim_node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gps_sim.sim_node", "--ros-args", "-r", f"__ns:={ns}",
             "-p", "image_size:=32", "-p", "mode:=lockstep"],
            stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True)
    probe = Probe(ns)
    try:
        if not probe.reset_client.wait_for_service(timeout_sec=60.0):
            raise RuntimeError(f"gps_sim did not come up; log:\n{log.read_text()}")
        ok = probe.wait_for(lambda: probe.cmd_pub.get_subscription_count() > 0, 30.0)
        assert ok, "command subscription not matched"
        yield proc, probe, log
    finally:
        probe.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_lockstep_n_commands_n_states_and_images(sim_process):
    proc, probe, log = sim_process
    res = probe.reset(condition=1, condition_set="train")
    assert res.success, res.message
    assert len(res.joint_positions) == 7
    # the reset publishes the new state (and image) once
    assert probe.wait_for(lambda: probe.joint_states and probe.images), log.read_text()
    # The probe may have matched the joint-state publisher before the image publisher at start-up, so
    # the totals can differ by the initial message; the reset's state and image carry the same stamp.
    assert probe.wait_for(lambda: _stamp(probe.joint_states[-1]) == _stamp(probe.images[-1]), 5.0)
    time.sleep(0.3)
    probe.executor.spin_once(timeout_sec=0.05)
    n0_js, n0_img = len(probe.joint_states), len(probe.images)
    js0 = probe.joint_states[-1]
    assert list(js0.name) == list(JOINT_NAMES)
    n = 10
    for k in range(n):
        probe.cmd_pub.publish(Float64MultiArray(data=[5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
        assert probe.wait_for(lambda k=k: len(probe.joint_states) >= n0_js + k + 1, 10.0), log.read_text()
    assert probe.wait_for(lambda: len(probe.images) >= n0_img + n, 10.0)
    probe.wait_for(lambda: False, 0.3)  # nothing extra arrives
    assert len(probe.joint_states) == n0_js + n and len(probe.images) == n0_img + n
    last = probe.joint_states[-1]
    t0 = js0.header.stamp.sec + js0.header.stamp.nanosec * 1e-9
    t1 = last.header.stamp.sec + last.header.stamp.nanosec * 1e-9
    assert t1 - t0 == pytest.approx(n * 0.05, abs=1e-6)
    assert last.position[0] > js0.position[0] + 1e-3  # +pan torque turned the pan joint
    assert last.effort[0] == pytest.approx(5.0)
    img = probe.images[-1]
    assert (img.height, img.width, img.encoding) == (32, 32, "rgb8") and len(img.data) == 32 * 32 * 3


def test_invalid_commands_ignored_and_counted(sim_process):
    proc, probe, log = sim_process
    assert probe.wait_for(lambda: probe.rejected, 10.0)
    before = probe.rejected[-1]
    n_js = len(probe.joint_states)
    probe.cmd_pub.publish(Float64MultiArray(data=[1.0, 2.0, 3.0]))
    assert probe.wait_for(lambda: probe.rejected[-1] == before + 1, 10.0)
    probe.cmd_pub.publish(Float64MultiArray(data=[float("nan")] + [0.0] * 6))
    assert probe.wait_for(lambda: probe.rejected[-1] == before + 2, 10.0)
    probe.wait_for(lambda: False, 0.3)
    assert len(probe.joint_states) == n_js  # the sim did not advance
    # a valid command afterwards still works
    probe.cmd_pub.publish(Float64MultiArray(data=[0.0] * 7))
    assert probe.wait_for(lambda: len(probe.joint_states) == n_js + 1, 10.0)
    assert proc.poll() is None
    assert "ignoring effort command" in log.read_text()


def test_reset_service_validation(sim_process):
    proc, probe, _ = sim_process
    for fields, word in [
        (dict(condition=99), "unknown condition"),
        (dict(condition=0, condition_set="bogus"), "condition_set"),
        (dict(condition=-1, joint_positions=[0.0] * 3), "expected 7"),
        (dict(condition=-1, joint_positions=[float("nan")] * 7), "NaN"),
        (dict(condition=-5), "unknown condition"),
        (dict(condition=-1, joint_positions=[1e6] * 7), "r_shoulder_pan_joint: 1e+06 rad is outside the joint's range"),
        (dict(condition=-1, joint_positions=[-0.5, -0.1, -1.6, -1.7, 100.0, -1.3, -2.0]),
         "r_forearm_roll_joint: 100 rad is outside"),
        (dict(condition=-1, joint_positions=[-0.5, -0.1, -1.6, -1.7, -1.8, -1.3, -2.0], set_target_pose=True,
              target_pose=Pose(position=Point(x=1e6), orientation=Quaternion(w=1.0))), "more than 10 m"),
    ]:
        res = probe.reset(**fields)
        assert not res.success and word in res.message, (fields, res.message)
    q = [-0.5, -0.1, -1.6, -1.7, -1.8, -1.3, -2.0]
    res = probe.reset(condition=-1, joint_positions=q)
    assert res.success and np.allclose(res.joint_positions, q)
    assert probe.wait_for(lambda: np.allclose(probe.joint_states[-1].position, q), 5.0)
    res = probe.reset(condition=0, condition_set="visual_test", seed=3)
    assert res.success
    assert proc.poll() is None


def _set_parameter(probe, name: str, value: ParameterValue):
    client = probe.node.create_client(SetParameters, "gps_sim/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=10.0)
        fut = client.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=value)]))
        assert probe.wait_for(fut.done, 10.0), "set_parameters did not answer"
        return fut.result().results[0]
    finally:
        probe.node.destroy_client(client)


def test_parameters_not_applied_at_run_time_are_refused_with_a_reason(sim_process):
    """`ros2 param set /gps_sim gravity true` used to report success and change nothing: a parameter the
    node reads only at start-up is read-only (refused, named); a run-time one is checked and applied."""
    proc, probe, log = sim_process
    true = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=True)
    for name, value in (("gravity", true), ("image_size", ParameterValue(type=ParameterType.PARAMETER_INTEGER,
                                                                          integer_value=-5))):
        res = _set_parameter(probe, name, value)
        assert not res.successful and name in res.reason and "read-only" in res.reason, res.reason
    res = _set_parameter(probe, "publish_images", ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                                 string_value="no"))
    assert not res.successful and "publish_images: must be a boolean, got 'no'" in res.reason, res.reason
    off = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=False)
    try:
        assert _set_parameter(probe, "publish_images", off).successful
        n_js, n_img = len(probe.joint_states), len(probe.images)
        probe.cmd_pub.publish(Float64MultiArray(data=[0.0] * 7))
        assert probe.wait_for(lambda: len(probe.joint_states) > n_js, 10.0)
        probe.wait_for(lambda: False, 0.3)
        assert len(probe.images) == n_img  # applied: the step published its state, no image
    finally:
        assert _set_parameter(probe, "publish_images", true).successful
    assert probe.reset(condition=0).success and proc.poll() is None  # the node keeps answering


@pytest.mark.parametrize("arg, words", [
    ("image_size:=-5", "-p image_size:=-5: image_size: must be >= 8 and <= 2048, got -5"),
    ("seed:=-1", "seed: must be >= 0 and <= 4294967295, got -1"),
    ("condition:=99", "condition: set 'train' of task 'reach' has 4 conditions, got 99"),
    ("gravty:=true", "unknown parameter 'gravty' (value True)"),
])
def test_bad_start_up_parameters_stop_the_node_naming_the_key_and_value(arg, words):
    res = subprocess.run([sys.executable, "-m", "gps_sim.sim_node", "--ros-args", "-p", arg],
                         env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr[-2000:]
    assert words in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]


def test_the_shipped_parameter_file_names_every_parameter_with_its_default():
    import yaml

    from gps_core.tasks import repo_root
    from gps_sim.sim_node import DEFAULTS, SPECS

    values = yaml.safe_load((repo_root() / "config" / "sim.yaml").read_text())["/**/gps_sim"]["ros__parameters"]
    assert set(values) == set(SPECS) == set(DEFAULTS)
    assert values == DEFAULTS


def test_a_reset_to_an_ood_set_publishes_the_perturbed_images_the_api_renders(sim_process):
    """Robustness probing through the nodes (issue 24): gps_sim/reset to an out-of-distribution set applies
    its family at run time; the published images are those ArmSim renders for the same reset and steps
    (image noise per frame included)."""
    from gps_sim import ArmSim

    proc, probe, log = sim_process
    api = ArmSim("reach", image_size=32, render_images=True)
    try:
        def node_image(**fields) -> np.ndarray:
            n = len(probe.images)
            assert probe.reset(**fields).success
            assert probe.wait_for(lambda: len(probe.images) > n, 10.0), log.read_text()
            return np.frombuffer(bytes(probe.images[-1].data), np.uint8).reshape(32, 32, 3)

        plain = node_image(condition=1, condition_set="train_perturbed", seed=3)
        np.testing.assert_array_equal(plain, api.reset(1, seed=3, condition_set="train_perturbed").image)
        for cset in ("ood_lighting_3_validation", "ood_camera_3_test", "ood_image_noise_2_validation"):
            img = node_image(condition=1, condition_set=cset, seed=3)
            want = api.reset(1, seed=3, condition_set=cset).image
            np.testing.assert_array_equal(img, want)
            assert not np.array_equal(img, plain)
        n = len(probe.images)
        probe.cmd_pub.publish(Float64MultiArray(data=[0.0] * 7))
        assert probe.wait_for(lambda: len(probe.images) > n, 10.0)
        np.testing.assert_array_equal(np.frombuffer(bytes(probe.images[-1].data), np.uint8).reshape(32, 32, 3),
                                      api.step(np.zeros(7)).image)
    finally:
        api.close()
    assert proc.poll() is None
