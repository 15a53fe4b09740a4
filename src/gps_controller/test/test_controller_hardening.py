"""Issue 13's controller faults reproduced over real DDS: each test failed on the node before the fix.

A stand-in robot (fake_robot) or the real lockstep gps_sim and the controller run as subprocesses; this
test process is the trainer (service calls) or the attacker (floods of bad messages)."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rclpy
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from controller_rig import (  # noqa: E402
    CONTROLLER_MODULE,
    Peers,
    SimPeers,
    Trainer,
    _write_params,
    lg_request,
    pd_controller,
    subprocess_env,
)

from gps_controller import conversions as conv  # noqa: E402
from gps_msgs.srv import RunTrial, SetLinearGaussian, SetPolicyWeights  # noqa: E402

pytestmark = pytest.mark.ros


class _Domain:
    """rclpy in this process on a rig's own ROS domain (restored afterwards)."""

    def __init__(self, env):
        self.saved = os.environ.get("ROS_DOMAIN_ID", "0")
        os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
        rclpy.init()
        self.trainer = Trainer()

    def close(self):
        self.trainer.close()
        rclpy.shutdown()
        os.environ["ROS_DOMAIN_ID"] = self.saved


@pytest.fixture
def rig(tmp_path_factory):
    env = subprocess_env(domain_offset=141)
    peers = Peers(env, _write_params(tmp_path_factory.mktemp("hard") / "controller.yaml"))
    try:
        domain = _Domain(env)
        yield peers, domain.trainer
        domain.close()
    finally:
        peers.close()


def test_unbounded_numbers_and_deep_json_get_error_responses_and_the_node_keeps_serving(rig):
    """Issue 13 item 1: smoothing 1e9 / 1e308 killed the service thread at the next noisy run_trial;
    an architecture nested 100,000 deep did the same through a RecursionError."""
    peers, trainer = rig
    for smoothing in (1e9, 1e308):
        msg = conv.linear_gaussian_to_msg(pd_controller(T=20))
        msg.noise_smoothing_std = smoothing
        resp = trainer.call("set_linear_gaussian", SetLinearGaussian.Request(condition=0, controller=msg))
        assert not resp.success and resp.message.startswith("noise_smoothing_std: must be between 0 and 1000")
        resp = trainer.call("run_trial", RunTrial.Request(condition=0, policy_type="linear_gaussian", horizon=5,
                                                          use_noise=True, seed=1), timeout=30)
        assert not resp.success and "no linear-Gaussian controller" in resp.message
    weights = b"x" * 64
    deep = "[" * 100_000 + "]" * 100_000
    resp = trainer.call("set_policy_weights", SetPolicyWeights.Request(
        architecture=deep, weights=conv.to_uint8_array(weights), sha256=hashlib.sha256(weights).hexdigest()))
    assert not resp.success and "nested 100000 deep" in resp.message and resp.num_parameters == 0
    huge = '{"format": "gps-ros2-policy", "version": ' + "1" * 5000 + "}"  # Python's int() refuses to read it
    resp = trainer.call("set_policy_weights", SetPolicyWeights.Request(
        architecture=huge, weights=conv.to_uint8_array(weights), sha256=hashlib.sha256(weights).hexdigest()))
    assert not resp.success and "an integer of 5000 digits, over the 19-digit limit" in resp.message, resp.message
    # Still healthy: a valid push with smoothing and a noisy trial.
    msg = conv.linear_gaussian_to_msg(pd_controller(T=20))
    msg.noise_smoothing_std = 2.0
    assert trainer.call("set_linear_gaussian", SetLinearGaussian.Request(condition=0, controller=msg)).success
    resp = trainer.call("run_trial", RunTrial.Request(condition=0, policy_type="linear_gaussian", horizon=5,
                                                      use_noise=True, seed=1), timeout=30)
    assert resp.success and resp.steps == 5, resp.message
    assert peers.controller.poll() is None


def _set_parameter(node, name, value):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = node.create_client(SetParameters, "gps_controller/set_parameters")
    assert client.wait_for_service(timeout_sec=20)
    future = client.call_async(SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
    rclpy.spin_until_future_complete(node, future, timeout_sec=20)
    node.destroy_client(client)
    return future.result().results[0]


def _get_parameter(node, name):
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    client = node.create_client(GetParameters, "gps_controller/get_parameters")
    assert client.wait_for_service(timeout_sec=20)
    future = client.call_async(GetParameters.Request(names=[name]))
    rclpy.spin_until_future_complete(node, future, timeout_sec=20)
    node.destroy_client(client)
    return parameter_value_to_python(future.result().values[0])


def test_runtime_parameter_changes_are_validated_and_applied_or_refused(rig):
    """Issue 13 item 5: `ros2 param set effort_limits` was reported successful and silently ignored."""
    _, trainer = rig
    node = trainer.node
    result = _set_parameter(node, "effort_limits", [1.0] * 7)
    assert not result.successful and "read-only" in result.reason.lower()
    assert _get_parameter(node, "effort_limits") == [30.0, 30.0, 30.0, 30.0, 30.0, 10.0, 10.0]
    result = _set_parameter(node, "joint_limit_margin", 0.5)
    assert not result.successful
    result = _set_parameter(node, "max_consecutive_deadline_misses", -1)
    assert not result.successful and "max_consecutive_deadline_misses: must be >= 0" in result.reason
    result = _set_parameter(node, "condition_set", "bogus")
    assert not result.successful and "condition_set: must be one of" in result.reason
    assert _set_parameter(node, "max_consecutive_deadline_misses", 7).successful
    assert _get_parameter(node, "max_consecutive_deadline_misses") == 7
    assert _set_parameter(node, "condition_set", "spatial_test").successful
    resp = trainer.call("set_linear_gaussian", lg_request(5, pd_controller(T=5)))  # spatial_test has 6 conditions
    assert resp.success, resp.message
    assert _set_parameter(node, "condition_set", "train").successful


def _slow_policy_and_rate():
    """A CNN whose commands are certainly late at the returned control rate, yet accepted by the
    controller's load-time check (inference_budget 10): the rate is set from this machine's measured
    inference time (best of 5, one thread, as the controller runs it), so the test holds on a fast idle
    core (a 16-8-8 trunk ran in 0.7 ms) and under CI load (64-32-32 took 12 ms there) alike."""
    import torch

    from gps_controller.policies import VisuomotorConfig, make_visuomotor_policy
    from gps_controller.trial import time_policy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for size in (64, 96, 128):
            policy = make_visuomotor_policy(VisuomotorConfig(config_dim=32, action_dim=7, image_height=size,
                                                             image_width=size, conv_filters=(64, 32, 32)), seed=0)
            _, best = time_policy(policy.eval(), 32, tuple(policy.image_shape), 0.0)
            # commands 2.5x the period late; the load-time budget is 4x the measured time
            rate = min(1000.0, 2.5 / best)
            if best * rate >= 2.5:
                return policy, size, rate, best
    finally:
        torch.set_num_threads(threads)
    pytest.skip(f"this CPU runs a 128x128 CNN in {best * 1e3:.2f} ms: too fast to miss a 1 kHz deadline")


def test_a_policy_too_slow_for_the_control_period_is_rejected_when_pushed(tmp_path):
    """Issue 13 item 4: a CNN whose inference took 10x the control period was accepted."""
    pytest.importorskip("torch")
    from gps_controller.policies import serialize_policy

    policy, size, rate, _ = _slow_policy_and_rate()  # inference >= 2.5 periods here: 3x the 0.8-period budget
    env = subprocess_env(domain_offset=143)
    peers = Peers(env, _write_params(tmp_path / "controller.yaml", control_rate_hz=rate, stale_timeout=0.5,
                                     image_size=size), robot_args=["--image-size", str(size)])
    domain = None
    try:
        domain = _Domain(env)
        arch, weights, sha = serialize_policy(policy)
        resp = domain.trainer.call("set_policy_weights", SetPolicyWeights.Request(
            architecture=arch, weights=conv.to_uint8_array(weights), sha256=sha))
        assert not resp.success and resp.message.startswith("policy too slow:"), resp.message
        assert f"over the {0.8e3 / rate:.1f} ms budget" in resp.message and resp.num_parameters == 0
        resp = domain.trainer.call("run_trial", RunTrial.Request(condition=0, policy_type="neural"))
        assert not resp.success and "no neural policy" in resp.message  # nothing installed
        assert peers.controller.poll() is None
    finally:
        if domain is not None:
            domain.close()
        peers.close()


@pytest.mark.parametrize("key, value, words", [
    ("efort_limits", [30.0] * 7, "unknown parameter 'efort_limits' (value [30.0"),
    ("image_size", -5, "image_size: must be >= 8 and <= 1024, got -5"),
    ("effort_limits", [30.0] * 6, "effort_limits: has 6 entries for the 7 joint_names"),
])
def test_a_bad_parameter_file_stops_the_node_naming_file_key_and_value(tmp_path, key, value, words):
    """Issue 13 item 8: unknown keys were silently accepted, ranges unchecked."""
    params = _write_params(tmp_path / "controller.yaml", **{key: value})
    env = subprocess_env(domain_offset=145)
    proc = subprocess.run([sys.executable, "-m", CONTROLLER_MODULE, "--ros-args", "--params-file", str(params)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{params}: " in proc.stderr and words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_empty_parameter_file_is_refused(tmp_path):
    params = tmp_path / "controller.yaml"
    params.write_text(yaml.safe_dump({"/**/gps_controller": {"ros__parameters": {"task": "reach"}}}))
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n")
    proc = subprocess.run([sys.executable, "-m", CONTROLLER_MODULE, "--ros-args", "--params-file", str(params),
                           "--params-file", str(empty)], env=subprocess_env(domain_offset=145),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and str(empty) in proc.stdout + proc.stderr


@pytest.mark.parametrize("flood_kind", ["joint_states", "images"])
def test_floods_of_bad_joint_states_and_huge_images_do_not_stall_a_lockstep_trial(tmp_path, flood_kind):
    """Issue 13 item 6: 300 malformed /joint_states or three 4000x4000 images evicted the sim's replies
    from the controller's queue and the lockstep trial aborted as 'joint states stale' (the joint-state
    burst still aborts the old node with a 3 s timeout). The images are dropped unread now; their
    144 MB still cross the loopback transport, which on this 2-core machine delays the sim's own
    messages by over a second: a bandwidth flood is bounded by the network, not the node
    (DDS security or network isolation bound it), hence the 3 s stale timeout here."""
    from sensor_msgs.msg import Image, JointState

    from gps_controller.qos import ROBOT_STATE_QOS

    env = subprocess_env(domain_offset=147)
    params = _write_params(tmp_path / "controller.yaml", reset_mode="sim_service", stale_timeout=3.0, horizon=100)
    peers = SimPeers(env, params)
    domain = None
    try:
        domain = _Domain(env)
        trainer = domain.trainer
        # RELIABLE, so the controller's lockstep (reliable) readers match and must reject every one.
        js_pub = trainer.node.create_publisher(JointState, "joint_states", ROBOT_STATE_QOS)
        img_pub = trainer.node.create_publisher(Image, "camera/image_raw", ROBOT_STATE_QOS)
        bad_js = JointState(name=["r_shoulder_pan_joint"], position=[0.0])  # no velocities, 6 joints missing
        big = Image(height=4000, width=4000, encoding="rgb8", step=12000)
        big.data = conv.to_uint8_array(np.zeros((4000, 4000, 3), dtype=np.uint8))
        assert trainer.call("set_linear_gaussian", lg_request(0, pd_controller(T=100, bias_joint4=2.0))).success
        time.sleep(1.0)  # discovery of the attacker's publishers
        stop = threading.Event()

        def flood():  # the bursts, once the trial runs: 300 bad joint states, or 3 huge images
            stop.wait(0.2)
            for _ in range(2):
                for _ in range(300 if flood_kind == "joint_states" else 0):
                    js_pub.publish(bad_js)
                for _ in range(3 if flood_kind == "images" else 0):
                    img_pub.publish(big)
                stop.wait(0.5)

        future = trainer.clients["run_trial"].call_async(RunTrial.Request(
            condition=0, policy_type="linear_gaussian", horizon=100, record_images=True))
        attacker = threading.Thread(target=flood, daemon=True)
        attacker.start()
        try:
            rclpy.spin_until_future_complete(trainer.node, future, timeout_sec=120)
        finally:
            stop.set()
            attacker.join(timeout=10)
        resp = future.result()
        log = peers.log(peers.controller)
        assert resp is not None, log[-3000:]
        assert resp is not None and resp.success and not resp.aborted and resp.steps == 100, (resp, log[-3000:])
        r = trainer.wait_rollout(resp.rollout_id)
        assert r.images.shape == (100, 64, 64, 3) and np.ptp(r.states[:, 4]) > 1e-3
        end = time.monotonic() + 20.0  # huge images take a while through the transport
        while f"rejected {flood_kind}" not in peers.log(peers.controller) and time.monotonic() < end:
            time.sleep(0.2)
        log = peers.log(peers.controller)
        assert f"rejected {flood_kind}" in log, log[-3000:]
        if flood_kind == "images":
            assert "4000x4000 exceeds max_image_side 2048" in log
        # Rate-limited: hundreds of rejections, a handful of log lines.
        assert log.count(f"rejected {flood_kind}") < 20, log.count(f"rejected {flood_kind}")
        assert all(p.poll() is None for p in peers.procs)
    finally:
        if domain is not None:
            domain.close()
        peers.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_trial_releases_the_arm_and_exits_without_a_traceback(tmp_path, sig):
    """Issue 14: SIGINT printed a controller error (Destroyable) although the process exited."""
    out = tmp_path / "robot.json"
    env = subprocess_env(domain_offset=149)
    peers = Peers(env, _write_params(tmp_path / "controller.yaml", horizon=400),
                  robot_args=["--out", str(out)])
    domain = None
    try:
        domain = _Domain(env)
        trainer = domain.trainer
        assert trainer.call("set_linear_gaussian", lg_request(0, pd_controller(T=400, bias_joint4=3.0))).success
        future = trainer.clients["run_trial"].call_async(RunTrial.Request(condition=0, policy_type="linear_gaussian"))
        # the trial is running (20 s long); with both cores busy its reset and settle took over 1.5 s (the signal
        # then arrived after one command in a loaded suite run here), so the signal comes 4 s in
        trainer.spin_for(4.0)
        assert not future.done()
        peers.controller.send_signal(sig)
        assert peers.controller.wait(timeout=15) == 0
        time.sleep(0.5)
        log = peers.log(peers.controller)
        assert "Traceback" not in log and "Destroyable" not in log and "invalid" not in log.lower(), log
    finally:
        if domain is not None:
            domain.close()
        peers.close()
    commands = json.loads(out.read_text())["commands"]
    assert len(commands) > 5 and any(abs(c[4]) > 1.0 for c in commands[:-1])
    assert commands[-1] == [0.0] * 7, "the last command before exit must be zero torque"


def test_a_controller_started_with_sigint_ignored_still_stops_on_sigint(tmp_path):
    """`gps down` killed an idle controller that "ignored SIGINT for 10 s" after the demo ran in the
    background: a non-interactive shell starts `cmd &` with SIGINT ignored, Python then installs no
    KeyboardInterrupt handler, and the node (which opts out of rclpy's signal handlers) never saw the
    signal. A ROS node asked to stop must stop, whatever it inherited."""
    out = tmp_path / "robot.json"
    peers = Peers(subprocess_env(domain_offset=151), _write_params(tmp_path / "controller.yaml"),
                  robot_args=["--out", str(out)], sigint_ignored=True)
    try:
        time.sleep(1.0)  # idle, spinning
        peers.controller.send_signal(signal.SIGINT)
        try:
            code = peers.controller.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the controller still runs 15 s after SIGINT:\n{peers.log(peers.controller)}")
        assert code == 0, peers.log(peers.controller)
        time.sleep(0.3)
        log = peers.log(peers.controller)
        assert "Traceback" not in log and "still waiting" not in log, log
    finally:
        peers.close()


def test_consecutive_deadline_misses_abort_the_trial_with_zero_torque(tmp_path):
    """Issue 13 item 4: missed deadlines were counted but never acted on. A CNN slower than the control
    period but within inference_budget 10 periods is accepted, but its commands are late: K = 3 late
    commands in a row abort the trial with zero torque."""
    pytest.importorskip("torch")
    from gps_controller.policies import serialize_policy

    policy, size, rate, best = _slow_policy_and_rate()
    out = tmp_path / "robot.json"
    arch, weights, sha = serialize_policy(policy)
    # The rate comes from this process's timing; the controller, beside a robot rendering at that rate and
    # whatever else loads the machine, can time the same CNN several times slower (13.2 ms against 3.0 ms in
    # one CI run) and refuse it. Then the rate is set again from the controller's own best time and the peers
    # restarted: the behaviour under test is what happens to late commands, not this machine's speed. That
    # time is a loaded one, and the load can pass before the trial (a retry at 2.5 of those periods then ran
    # all 50 steps on time in CI), so the retry puts it at 7 periods: within the budget of 10 when timed again
    # 40 % slower, and still late if the trial runs 7 times faster than the controller timed it.
    for attempt in range(4):
        env = subprocess_env(domain_offset=153)
        params = _write_params(tmp_path / "controller.yaml", control_rate_hz=rate, stale_timeout=0.5,
                               inference_budget=10.0, deadline_slack=0.0, image_size=size,
                               max_consecutive_deadline_misses=3, horizon=50)
        peers = Peers(env, params, robot_args=["--out", str(out), "--image-size", str(size)])
        domain = None
        try:
            domain = _Domain(env)
            resp = domain.trainer.call("set_policy_weights", SetPolicyWeights.Request(
                architecture=arch, weights=conv.to_uint8_array(weights), sha256=sha))
            refused = re.match(r"policy too slow: ([0-9.]+) ms per step at best", resp.message)
            if not resp.success and refused and attempt < 3:
                rate = min(1000.0, 7e3 / float(refused.group(1)))
                continue
            assert resp.success, (resp.message, f"measured here: {best * 1e3:.1f} ms")
            resp = domain.trainer.call("run_trial", RunTrial.Request(condition=0, policy_type="neural", horizon=50))
            # three late commands in a row (the first tick may still be on time when the machine is idle)
            assert resp.success and resp.aborted and resp.steps in (3, 4), resp
            assert resp.message.startswith("deadline missed 3 times in a row (period "), resp.message
            assert peers.controller.poll() is None
            break
        finally:
            if domain is not None:
                domain.close()
            peers.close()
    commands = json.loads(out.read_text())["commands"]
    steps = resp.steps
    assert len(commands) >= steps + 1 and commands[steps] == [0.0] * 7  # the trial's steps, then zero torque
