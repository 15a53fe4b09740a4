"""gps_controller node over real DDS: the node and a stand-in robot in separate processes, this
test process acting as the trainer (service calls, /gps/rollouts subscription)."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rclpy

from gps_core.linear_gaussian import LinearGaussianPolicy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from controller_rig import (  # noqa: E402
    DU,
    DX,
    LIMITS,
    PRECISION,
    TORCH_THREADS,
    Peers,
    Trainer,
    _write_params,
    lg_request,
    pd_controller,
    subprocess_env,
)

from gps_controller import conversions as conv  # noqa: E402
from gps_msgs.srv import RunTrial, SetLinearGaussian, SetPolicyWeights  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    env = subprocess_env()
    params = _write_params(tmp_path_factory.mktemp("ctrl") / "controller.yaml")
    peers = Peers(env, params)
    rclpy.init()
    trainer = Trainer()
    yield peers, trainer, env, tmp_path_factory
    trainer.close()
    rclpy.shutdown()
    peers.close()


def test_linear_gaussian_trial_publishes_a_consistent_rollout(rig):
    peers, trainer, *_ = rig
    arrays = pd_controller(bias_joint4=-1000.0)  # forces joint 4 against its effort limit
    resp = trainer.call("set_linear_gaussian", lg_request(1, arrays))
    assert resp.success, resp.message
    resp = trainer.call("run_trial", RunTrial.Request(condition=1, iteration=3, sample_index=2,
                                                      policy_type="linear_gaussian", horizon=20, use_noise=True,
                                                      seed=7, record_images=True))
    assert resp.success, resp.message
    assert resp.steps == 20 and not resp.aborted
    assert resp.rollout_id.startswith("/3/1/2/") or resp.rollout_id.startswith("3/1/2/") or "/3/1/2/" in resp.rollout_id
    r = trainer.wait_rollout(resp.rollout_id)
    assert r.states.shape == (20, DX) and r.actions.shape == (20, DU) and r.observations.shape == (20, 32)
    assert r.noise.shape == (20, DU) and r.images.shape == (20, 64, 64, 3)
    assert (r.condition, r.iteration, r.sample_index, r.seed) == (1, 3, 2, 7)
    assert r.policy_type == "linear_gaussian" and not r.aborted
    assert np.all(np.diff(r.stamps) > 0)
    # The commanded actions are the controller's law u = K x + k + chol(Sigma)^T noise, made safe.
    pol = arrays.copy()
    expected = np.array([pol.act(r.states[t], t, r.noise[t]) for t in range(20)])
    assert np.all(np.abs(r.actions) <= LIMITS + 1e-12)
    np.testing.assert_array_equal(r.actions[:, 4], -30.0)  # clamped, never beyond the limit
    free = [0, 1, 2, 3, 5, 6]
    clipped = np.clip(expected, -LIMITS, LIMITS)
    np.testing.assert_allclose(r.actions[:, free], clipped[:, free], atol=1e-9)
    # x and o agree on joints; the state moves (commands reached the robot).
    np.testing.assert_allclose(r.states[:, :14], r.observations[:, :14])
    assert np.ptp(r.states[:, 4]) > 1e-3
    # Noise is reproducible from the seed (smooth_noise with the pushed smoothing 0).
    from gps_core.linear_gaussian import smooth_noise
    np.testing.assert_allclose(r.noise, smooth_noise(np.random.default_rng(7), 20, DU, 0.0))


def test_every_command_names_the_observation_it_was_computed_from(rig):
    """gps/command_stamps (issue 22): per policy command a TimeReference with the command's publish time
    and the stamp of the observation it was computed from; the command's age can never be less than its
    computation (the tick's start, the rollout's stamp, lies between the two)."""
    from sensor_msgs.msg import TimeReference

    from gps_controller.qos import COMMAND_STAMPS_QOS

    peers, trainer, *_ = rig
    received = []
    sub = trainer.node.create_subscription(TimeReference, "gps/command_stamps", received.append, COMMAND_STAMPS_QOS)
    try:
        assert trainer.call("set_linear_gaussian", lg_request(1, pd_controller())).success  # (condition 0 stays empty)
        resp = trainer.call("run_trial", RunTrial.Request(condition=1, policy_type="linear_gaussian", horizon=15))
        assert resp.success and resp.steps == 15, resp.message
        r = trainer.wait_rollout(resp.rollout_id)
        trainer.spin_for(0.5)
    finally:
        trainer.node.destroy_subscription(sub)
    assert len(received) == 15
    published = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in received])
    observed = np.array([m.time_ref.sec + m.time_ref.nanosec * 1e-9 for m in received])
    assert all(m.source == "observation" for m in received)
    assert np.all(np.diff(observed) > 0)  # a new joint state per tick, stamped by the robot
    # observation stamp <= tick start (rollout stamp) <= command publish; 1 us: the float round trip of stamps
    assert np.all(observed <= r.stamps + 1e-6) and np.all(r.stamps <= published + 1e-6)
    assert np.all(published - observed < 1.0)


def test_bad_requests_get_reasons_and_the_node_keeps_running(rig):
    peers, trainer, *_ = rig
    good = pd_controller()
    # wrong sizes
    msg = conv.linear_gaussian_to_msg(good)
    msg.gains = conv.to_float64_array(np.zeros(10))
    resp = trainer.call("set_linear_gaussian", SetLinearGaussian.Request(condition=0, controller=msg))
    assert not resp.success and resp.message.startswith("gains:")
    # state_dim mismatch
    wrong = LinearGaussianPolicy(np.zeros((20, DU, 10)), np.zeros((20, DU)), good.pol_covar)
    resp = trainer.call("set_linear_gaussian", lg_request(0, wrong))
    assert not resp.success and "state_dim" in resp.message
    # NaN
    msg = conv.linear_gaussian_to_msg(good)
    bias = np.array(good.k)
    bias[3, 2] = np.nan
    msg.bias = conv.to_float64_array(bias, allow_nonfinite=True)
    resp = trainer.call("set_linear_gaussian", SetLinearGaussian.Request(condition=0, controller=msg))
    assert not resp.success and "NaN" in resp.message
    # unknown condition
    resp = trainer.call("set_linear_gaussian", lg_request(99, good))
    assert not resp.success and "unknown condition 99" in resp.message
    resp = trainer.call("run_trial", RunTrial.Request(condition=99, policy_type="linear_gaussian"))
    assert not resp.success and "unknown condition 99" in resp.message
    resp = trainer.call("run_trial", RunTrial.Request(condition=0, policy_type="cnn"))
    assert not resp.success and resp.message.startswith("policy_type:")
    # no controller pushed for condition 0 (all pushes above were rejected)
    resp = trainer.call("run_trial", RunTrial.Request(condition=0, policy_type="linear_gaussian"))
    assert not resp.success and "no linear-Gaussian controller for condition 0" in resp.message
    # wrong SHA / garbage weights
    blob = b"not safetensors"
    resp = trainer.call("set_policy_weights", SetPolicyWeights.Request(
        architecture="{}", weights=conv.to_uint8_array(blob), sha256=hashlib.sha256(b"x").hexdigest()))
    assert not resp.success and resp.message.startswith("sha256:") and resp.num_parameters == 0
    resp = trainer.call("set_policy_weights", SetPolicyWeights.Request(
        architecture="{}", weights=conv.to_uint8_array(blob), sha256=hashlib.sha256(blob).hexdigest()))
    assert not resp.success and resp.message
    resp = trainer.call("run_trial", RunTrial.Request(condition=0, policy_type="neural"))
    assert not resp.success and "no neural policy" in resp.message
    # still alive and working: a valid push and a trial
    assert peers.controller.poll() is None
    assert trainer.call("set_linear_gaussian", lg_request(0, good)).success
    resp = trainer.call("run_trial", RunTrial.Request(condition=0, policy_type="linear_gaussian", horizon=5))
    assert resp.success and resp.steps == 5, resp.message


def test_neural_policy_drives_the_robot_and_publishes_the_overlay(rig):
    torch = pytest.importorskip("torch")
    from gps_controller.policies import VisuomotorConfig, make_visuomotor_policy, serialize_policy

    peers, trainer, *_ = rig
    policy = make_visuomotor_policy(VisuomotorConfig(config_dim=32, action_dim=DU), seed=3, init_var=0.5)
    with torch.no_grad():  # a large output bias so the torques are far from zero and some are clamped
        policy.net.fc[-1].bias.copy_(torch.tensor([1.0, -2.0, 3.0, 50.0, -4.0, 5.0, -6.0]))
    arch, weights, sha = serialize_policy(policy)
    bad = trainer.call("set_policy_weights", SetPolicyWeights.Request(
        architecture=arch, weights=conv.to_uint8_array(weights), sha256=sha[::-1]))
    assert not bad.success and bad.message.startswith("sha256:")
    resp = trainer.call("set_policy_weights", SetPolicyWeights.Request(
        architecture=arch, weights=conv.to_uint8_array(weights), sha256=sha, iteration=4))
    assert resp.success, resp.message
    assert resp.num_parameters > 90_000
    resp = trainer.call("run_trial", RunTrial.Request(condition=0, policy_type="neural", horizon=15,
                                                      record_images=True))
    assert resp.success and resp.steps == 15, resp.message
    r = trainer.wait_rollout(resp.rollout_id)
    assert r.policy_type == "neural" and r.images.shape == (15, 64, 64, 3)
    # The node's forward pass recomputed here with its thread count and precision (one observation per
    # tick in both): the same kernels in the same order, so the same float32 torques, exactly.
    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        policy.set_inference_precision(PRECISION)
        expected = np.array([policy.act(r.observations[t], r.images[t]) for t in range(15)])
    finally:
        torch.set_num_threads(threads)
    # Made safe as the node does: the joint-limit guard (the robot may sit at a limit by now) and the clamp.
    from gps_controller.observation import MujocoKinematics
    from gps_controller.safety import SafetyLayer
    from gps_sim import load_task
    kin = MujocoKinematics(load_task("reach").ee_points)
    safety = SafetyLayer(LIMITS, kin.joint_lower, kin.joint_upper, 0.05)
    safe = np.array([safety.filter(expected[t], r.observations[t, :7]).torque for t in range(15)])
    np.testing.assert_array_equal(r.actions, safe)
    # Elbow: +50 N m clamped to 30, or zeroed by the joint-limit guard once within 0.05 rad of its limit 0.
    assert np.all(np.isin(r.actions[:, 3], [0.0, 30.0])) and 30.0 in r.actions[:, 3]
    assert np.all(r.observations[r.actions[:, 3] == 0.0, 3] >= -0.05)
    trainer.spin_for(0.5)
    assert trainer.overlays, "no overlay image on gps/feature_points/image"
    overlay = conv.image_from_msg(trainer.overlays[-1])
    assert overlay.shape == (64, 64, 3)
    assert not np.array_equal(overlay, r.images[-1])  # feature points drawn on the camera image


def test_camera_stopping_mid_trial_aborts_with_zero_torque(rig, tmp_path):
    _, _, env, _ = rig
    out = tmp_path / "robot.json"
    params = _write_params(tmp_path / "controller.yaml", stale_timeout=0.3)
    env = subprocess_env(domain_offset=101)  # a rig of its own
    peers = Peers(env, params, robot_args=["--camera-frames", "10", "--out", str(out)])
    try:
        code = (
            "import sys, json, numpy as np, rclpy\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from controller_rig import Trainer, pd_controller, lg_request\n"
            "from gps_msgs.srv import RunTrial\n"
            "rclpy.init(); t = Trainer()\n"
            "assert t.call('set_linear_gaussian', lg_request(0, pd_controller(T=100, bias_joint4=3.0))).success\n"
            "r = t.call('run_trial', RunTrial.Request(condition=0, policy_type='linear_gaussian', horizon=100,"
            " record_images=True))\n"
            "ro = t.wait_rollout(r.rollout_id) if r.rollout_id else None\n"
            "print('RESULT', json.dumps({'success': r.success, 'aborted': r.aborted, 'steps': r.steps,"
            " 'message': r.message, 'rollout_aborted': ro.aborted if ro else None,"
            " 'rollout_reason': ro.abort_reason if ro else None, 'horizon': ro.horizon if ro else 0}))\n"
        )
        here = os.path.dirname(os.path.abspath(__file__))
        proc = subprocess.run([sys.executable, "-c", code, here], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        result = json.loads(proc.stdout.split("RESULT", 1)[1])
        assert result["success"] and result["aborted"], result
        assert result["message"].startswith("camera stale"), result
        assert 5 <= result["steps"] < 100
        assert result["rollout_aborted"] and result["rollout_reason"].startswith("camera stale")
        assert result["horizon"] == result["steps"]
        assert peers.controller.poll() is None
    finally:
        peers.close()
    commands = json.loads(out.read_text())["commands"]
    assert len(commands) >= result["steps"]
    assert commands[-1] == [0.0] * 7, "the last command after the abort must be zero torque"
    assert any(abs(c[4]) > 1.0 for c in commands[:-1])  # it was driving before


def test_timer_mode_runs_at_the_control_rate_and_releases_the_arm(rig, tmp_path):
    """trigger_mode timer (a robot whose joint states are not paced by our commands)."""
    out = tmp_path / "robot.json"
    params = _write_params(tmp_path / "controller.yaml", trigger_mode="timer", stale_timeout=0.5)
    env = subprocess_env(domain_offset=131)
    peers = Peers(env, params, robot_args=["--rate", "50", "--out", str(out)])
    try:
        code = (
            "import sys, json, numpy as np, rclpy\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from controller_rig import Trainer, pd_controller, lg_request\n"
            "from gps_msgs.srv import RunTrial\n"
            "rclpy.init(); t = Trainer()\n"
            "assert t.call('set_linear_gaussian', lg_request(0, pd_controller(T=30, bias_joint4=2.0))).success\n"
            "r = t.call('run_trial', RunTrial.Request(condition=0, policy_type='linear_gaussian', horizon=30))\n"
            "ro = t.wait_rollout(r.rollout_id)\n"
            "print('RESULT', json.dumps({'success': r.success, 'steps': r.steps, 'stamps': ro.stamps.tolist()}))\n"
        )
        proc = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__))], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        result = json.loads(proc.stdout.split("RESULT", 1)[1])
    finally:
        peers.close()
    assert result["success"] and result["steps"] == 30
    period = np.median(np.diff(result["stamps"]))
    assert 0.04 < period < 0.06, period  # 20 Hz although joint states arrive at 50 Hz
    commands = json.loads(out.read_text())["commands"]
    assert commands[-1] == [0.0] * 7  # released after the trial
    assert len(commands) == 31  # 30 steps, then the release
    assert abs(commands[0][4] - 2.0) < 0.5  # the bias pushed joint 4 (the robot starts at the PD set-point)


def test_after_a_stall_the_next_command_is_computed_from_the_newest_observation(rig, tmp_path):
    """Observation trigger against a robot that runs on: the controller is paused (SIGSTOP) for 0.6 s while
    the robot keeps publishing at 20 Hz. The next command is computed from the newest joint state, not from
    each of the ~12 that queued meanwhile (which would make a dozen commands 0.1-0.6 s stale)."""
    params = _write_params(tmp_path / "controller.yaml", stale_timeout=2.0, horizon=60,
                           max_consecutive_deadline_misses=0)
    env = subprocess_env(domain_offset=151)  # a rig of its own
    peers = Peers(env, params, robot_args=["--rate", "20"])
    try:
        code = (
            "import sys, os, json, time, signal, rclpy\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from controller_rig import Trainer, pd_controller, lg_request\n"
            "from gps_controller.qos import COMMAND_STAMPS_QOS\n"
            "from gps_msgs.srv import RunTrial\n"
            "from sensor_msgs.msg import TimeReference\n"
            "rclpy.init(); t = Trainer(); got = []\n"
            "t.node.create_subscription(TimeReference, 'gps/command_stamps', got.append, COMMAND_STAMPS_QOS)\n"
            "assert t.call('set_linear_gaussian', lg_request(0, pd_controller(T=60))).success\n"
            "fut = t.clients['run_trial'].call_async(RunTrial.Request(condition=0, policy_type='linear_gaussian',"
            " horizon=60))\n"
            "while len(got) < 20: rclpy.spin_once(t.node, timeout_sec=0.05)\n"
            "os.kill(int(sys.argv[2]), signal.SIGSTOP); time.sleep(0.6); os.kill(int(sys.argv[2]), signal.SIGCONT)\n"
            "rclpy.spin_until_future_complete(t.node, fut, timeout_sec=60); t.spin_for(0.5)\n"
            "r = fut.result()\n"
            "s = lambda x: x.sec + x.nanosec * 1e-9\n"
            "print('RESULT', json.dumps({'success': r.success, 'steps': r.steps, 'message': r.message,"
            " 'stamps': [[s(m.header.stamp), s(m.time_ref)] for m in got]}))\n"
        )
        here = os.path.dirname(os.path.abspath(__file__))
        proc = subprocess.run([sys.executable, "-c", code, here, str(peers.controller.pid)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        result = json.loads(proc.stdout.split("RESULT", 1)[1])
        assert peers.controller.poll() is None
    finally:
        peers.close()
    assert result["success"] and result["steps"] == 60, result["message"]
    published, observed = np.array(result["stamps"]).T
    assert len(published) == 60
    gaps = np.diff(observed)
    assert gaps.max() > 0.5, "the pause skipped the observations that came meanwhile"
    ages = published - observed
    # one command (the first after the pause, computed from the first state taken) may be older than two periods
    assert np.sum(ages > 0.1) <= 1, np.round(ages, 3)
