"""The trial state machine (gps_controller.trial) without ROS: the real state assembly (MuJoCo
kinematics), the real safety layer, real linear-Gaussian and neural policies."""

from types import SimpleNamespace

import numpy as np
import pytest

from gps_controller.observation import MujocoKinematics, StateAssembler
from gps_controller.safety import SafetyLayer
from gps_controller.trial import Policies, Sensors, prepare_trial, time_policy
from gps_core.linear_gaussian import LinearGaussianPolicy, smooth_noise
from gps_core.tasks import load_task

LIMITS = np.array([30.0, 30.0, 30.0, 30.0, 30.0, 10.0, 10.0])
Q0 = np.array([-0.72, -0.44, -1.32, -1.83, -1.43, -1.54, -1.94])
DU, DX, PERIOD = 7, 32, 0.05


@pytest.fixture(scope="module")
def robot():
    task = load_task("reach")
    kin = MujocoKinematics(task.ee_points)
    return SimpleNamespace(task=task, assembler=StateAssembler(kin, task.target_points),
                           conditions=task.condition_list("train"),
                           safety=SafetyLayer(LIMITS, kin.joint_lower, kin.joint_upper, 0.05, 0.5))


def request(**kw):
    fields = dict(condition=1, iteration=2, sample_index=3, policy_type="linear_gaussian", horizon=6,
                  use_noise=True, seed=11, record_images=False)
    fields.update(kw)
    return SimpleNamespace(**fields)


def lg_policy(T=10, smoothing=1.5, bias=0.0):
    rng = np.random.default_rng(0)
    K = rng.normal(scale=0.1, size=(T, DU, DX))
    k = np.full((T, DU), bias)
    cov = np.tile(np.eye(DU) * 0.2, (T, 1, 1))
    return LinearGaussianPolicy(K, k, cov, noise_smoothing_std=smoothing)


def make(robot, req, policies, k_misses=0, periodic=False):
    return prepare_trial(req, conditions=robot.conditions, condition_set="train", policies=policies, dU=DU,
                         default_horizon=8, max_horizon=100, safety=robot.safety, assembler=robot.assembler,
                         period=PERIOD, deadline_slack=0.5, max_consecutive_misses=k_misses, periodic=periodic,
                         target_from_task=True)


def sensors_at(q, t=0.0):
    s = Sensors()
    s.set_joints(q, np.zeros(DU), rx=t, stamp=100.0 + t)
    return s


def test_noise_is_the_trainers_smooth_noise_and_ticks_apply_the_controller_law(robot):
    pol = lg_policy()
    trial = make(robot, request(), Policies(linear_gaussian={1: pol}))
    # Bit for bit what the trainer's simulator sampler draws.
    np.testing.assert_array_equal(trial.noise, smooth_noise(np.random.default_rng(11), 6, DU, 1.5))
    np.testing.assert_allclose(trial.joint_angles, robot.conditions[1].joint_angles)
    s = sensors_at(Q0)
    trial.start(s, image_is_fresh=False)
    assert trial.ready(s)  # the post-reset state counts as new: the first step needs no timer
    clock = iter(np.arange(0.0, 100.0, 0.001))
    for t in range(6):
        result = trial.tick(s, lambda: next(clock), ros_now=100.0 + t * PERIOD, obs_time=s.joint_rx)
        assert not result.fault
        assert trial.published(s.joint_rx + 0.002, s.joint_rx) == ""
        assert not trial.ready(s)  # no new joint state since this tick
        x, _ = robot.assembler.assemble(s.q, s.qd, robot.conditions[1].target_pose)
        expected = robot.safety.filter(pol.act(x, t, trial.noise[t]), s.q).torque
        np.testing.assert_allclose(result.torque, expected)
        q = s.q + 0.01
        s.set_joints(q, np.full(DU, 0.1), rx=s.joint_rx + PERIOD, stamp=100.0 + (t + 1) * PERIOD)
    assert trial.done.is_set() and not trial.aborted and trial.step == 6
    r = trial.rollout("robot1", "robot1/2/1/3/x", end_stamp=101.0)
    assert r.states.shape == (6, DX) and r.actions.shape == (6, DU) and r.noise.shape == (6, DU)
    assert (r.condition, r.iteration, r.sample_index, r.seed) == (1, 2, 3, 11)
    assert np.all(np.abs(r.actions) <= LIMITS)


def test_without_noise_the_rollout_seed_is_zero_and_noise_is_zero(robot):
    trial = make(robot, request(use_noise=False, horizon=1), Policies(linear_gaussian={1: lg_policy()}))
    assert not trial.noise.any()
    s = sensors_at(Q0)
    trial.start(s, image_is_fresh=False)
    trial.tick(s, lambda: 0.0, ros_now=0.0, obs_time=None)
    trial.published(0.0, None)
    assert trial.done.is_set() and trial.rollout("", "id", 0.0).seed == 0


def test_k_consecutive_deadline_misses_abort_with_zero_torque(robot):
    trial = make(robot, request(horizon=8), Policies(linear_gaussian={1: lg_policy(bias=3.0)}), k_misses=3)
    s = sensors_at(Q0)
    trial.start(s, image_is_fresh=False)
    late = PERIOD * 1.5  # observation -> command longer than a period
    pattern = [late, 0.001, late, late]  # a miss, an on-time command (resets the run), then two in a row
    for i, delay in enumerate(pattern):
        r = trial.tick(s, lambda: s.joint_rx, ros_now=100.0, obs_time=s.joint_rx)
        assert not r.fault and np.abs(r.torque).max() > 0
        assert trial.published(s.joint_rx + delay, s.joint_rx) == ""
        s.set_joints(Q0, np.zeros(DU), rx=s.joint_rx + PERIOD * (i + 1), stamp=100.0)
    assert trial.deadline.misses == 3 and trial.deadline.consecutive == 2
    trial.tick(s, lambda: s.joint_rx, ros_now=100.0, obs_time=s.joint_rx)
    reason = trial.published(s.joint_rx + late, s.joint_rx)
    assert reason.startswith("deadline missed 3 times in a row") and trial.aborted and trial.done.is_set()
    assert not trial.abort(reason).torque.any()  # what the node publishes: zero torque
    assert trial.step == 5


def test_deadline_misses_never_abort_when_k_is_zero(robot):
    trial = make(robot, request(horizon=5), Policies(linear_gaussian={1: lg_policy()}), k_misses=0)
    s = sensors_at(Q0)
    trial.start(s, image_is_fresh=False)
    for _ in range(5):
        trial.tick(s, lambda: s.joint_rx, ros_now=0.0, obs_time=s.joint_rx)
        assert trial.published(s.joint_rx + 1.0, s.joint_rx) == ""
        s.set_joints(Q0, np.zeros(DU), rx=s.joint_rx, stamp=0.0)
    assert trial.done.is_set() and not trial.aborted and trial.deadline.misses == 5


def test_stale_joint_states_and_nan_policies_abort_with_zero_torque(robot):
    trial = make(robot, request(), Policies(linear_gaussian={1: lg_policy()}))
    s = sensors_at(Q0, t=0.0)
    trial.start(s, image_is_fresh=False)
    r = trial.tick(s, lambda: 0.6, ros_now=0.0, obs_time=None)  # 600 ms old, timeout 500 ms
    assert r.fault.startswith("joint states stale") and not r.torque.any() and trial.aborted
    bad = lg_policy()
    bad.k[0, 2] = np.nan
    trial = make(robot, request(), Policies(linear_gaussian={1: bad}))
    trial.start(s, image_is_fresh=False)
    r = trial.tick(s, lambda: 0.0, ros_now=0.0, obs_time=None)
    assert "non-finite" in r.fault and not r.torque.any() and trial.abort_reason == r.fault


def test_observation_age_only_on_the_nodes_clock(robot):
    """A node on wall time reading sim-time stamps reports no observation age instead of 1.8e12 ms."""
    trial = make(robot, request(horizon=2), Policies(linear_gaussian={1: lg_policy()}))
    s = sensors_at(Q0)
    trial.start(s, image_is_fresh=False)
    trial.tick(s, lambda: 0.0, ros_now=1.7e9, obs_time=0.0)  # wall-clock node, sim-time stamp 100 s
    trial.published(0.001, 0.0, 1.7e9 + 0.001)
    assert np.isnan(trial.observation_ages[-1])
    s.set_joints(Q0, np.zeros(DU), rx=0.05, stamp=100.05)
    trial.tick(s, lambda: 0.05, ros_now=100.052, obs_time=0.05)  # same clock (use_sim_time)
    trial.published(0.051, 0.05, 100.052)
    assert trial.observation_ages[-1] == pytest.approx(0.002)
    assert "observation age p50 2.00 ms p99 2.00 ms max 2.00 ms" in trial.summary()
    assert "e+" not in trial.summary()


def test_observation_age_runs_from_the_oldest_input_to_the_command_publish(robot):
    """Issue 22: the age of the observation a command was computed from, measured when the command is
    published (after the policy ran), from the stamp of its oldest part (joint state or image)."""
    from gps_controller.policies import VisuomotorConfig, make_visuomotor_policy

    policy = make_visuomotor_policy(VisuomotorConfig(config_dim=32, action_dim=DU, image_height=32, image_width=32),
                                    seed=0)
    trial = make(robot, request(policy_type="neural", horizon=3), Policies(neural=policy))
    s = sensors_at(Q0)  # joint state stamped 100.0
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    s.set_image(image, rx=0.0, stamp=99.98)  # the image is older
    trial.start(s, image_is_fresh=True)
    r = trial.tick(s, lambda: 0.0, ros_now=100.001, obs_time=0.0)  # the tick starts 1 ms after the stamp...
    assert r.observation_stamp == pytest.approx(99.98)
    trial.published(0.03, 0.0, 100.03)  # ...and the command leaves 30 ms later
    assert trial.observation_ages[-1] == pytest.approx(0.05)
    s.set_joints(Q0, np.zeros(DU), rx=0.05, stamp=100.05)
    s.set_image(image, rx=0.05, stamp=0.0)  # an unstamped image: the joint state's stamp counts
    trial.tick(s, lambda: 0.05, ros_now=100.06, obs_time=0.05)
    trial.published(0.07, 0.05, 100.07)
    assert trial.observation_ages[-1] == pytest.approx(0.02)
    assert trial.latencies == pytest.approx([0.03, 0.02])  # in-node: receipt -> publish, steady clock


def test_requests_the_robot_cannot_run_are_rejected_with_reasons(robot):
    lg = Policies(linear_gaussian={1: lg_policy(T=10)})
    with pytest.raises(ValueError, match="unknown condition 9"):
        make(robot, request(condition=9), lg)
    with pytest.raises(ValueError, match="exceeds the maximum of 100"):
        make(robot, request(horizon=101), lg)
    with pytest.raises(ValueError, match="controller of condition 1 has 10"):
        make(robot, request(horizon=20), lg)
    with pytest.raises(ValueError, match="no linear-Gaussian controller for condition 0"):
        make(robot, request(condition=0), lg)
    with pytest.raises(ValueError, match="no neural policy"):
        make(robot, request(policy_type="neural"), lg)


def test_neural_trial_waits_for_a_new_image_and_drives_the_policy(robot):
    from gps_controller.policies import VisuomotorConfig, make_visuomotor_policy

    policy = make_visuomotor_policy(VisuomotorConfig(config_dim=32, action_dim=DU, image_height=32, image_width=32), seed=0)
    trial = make(robot, request(policy_type="neural", horizon=2), Policies(neural=policy))
    assert trial.need_image
    np.testing.assert_array_equal(trial.noise, smooth_noise(np.random.default_rng(11), 2, DU, 0.0))
    s = sensors_at(Q0)
    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    s.set_image(image, rx=0.0)
    trial.start(s, image_is_fresh=False)  # an image from before the reset does not count
    assert not trial.ready(s)
    s.set_image(image, rx=0.01)
    assert trial.ready(s)
    r = trial.tick(s, lambda: 0.01, ros_now=0.0, obs_time=0.01)
    assert not r.fault and r.points is not None and r.image is image
    _, o = robot.assembler.assemble(Q0, np.zeros(DU), None)
    expected = robot.safety.filter(policy.act(o, image, trial.noise[0]), Q0).torque
    np.testing.assert_allclose(r.torque, expected, atol=1e-6)


def test_time_policy_accepts_a_policy_that_meets_the_budget_once_and_rejects_one_that_never_does():
    class Ticking:  # a policy whose calls take `cost` seconds on a simulated clock
        def __init__(self, costs):
            self.costs, self.now = iter(costs), 0.0

        def act(self, o, image, noise, return_features=False):
            self.now += next(self.costs)
            return np.zeros(DU), None

    slow = Ticking([0.5] * 10)
    ok, best = time_policy(slow, 32, None, budget_s=0.04, clock=lambda: slow.now)
    assert not ok and best == pytest.approx(0.5)
    noisy = Ticking([0.5, 0.2, 0.03, 0.5, 0.5, 0.5])  # warm-up, one slow call under load, then fast
    ok, best = time_policy(noisy, 32, None, budget_s=0.04, clock=lambda: noisy.now)
    assert ok and best == pytest.approx(0.03)


def test_image_perturbation_reaches_the_policy_and_the_rollout_seeded_per_step(robot):
    """Robustness probing (issue 24): with image_noise_std / image_blur the policy acts on (and the rollout
    records) the perturbed image, each step's noise a function of the request's seed and the step."""
    from gps_controller.policies import VisuomotorConfig, make_visuomotor_policy
    from gps_core.ood import frame_rng, perturb_image

    policy = make_visuomotor_policy(VisuomotorConfig(config_dim=32, action_dim=DU, image_height=32, image_width=32),
                                    seed=0)
    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)

    def run(perturbation):
        req = request(policy_type="neural", horizon=2, record_images=True, use_noise=False)
        trial = prepare_trial(req, conditions=robot.conditions, condition_set="train",
                              policies=Policies(neural=policy), dU=DU, default_horizon=8, max_horizon=100,
                              safety=robot.safety, assembler=robot.assembler, period=PERIOD, deadline_slack=0.5,
                              max_consecutive_misses=0, periodic=False, target_from_task=True,
                              image_perturbation=perturbation)
        s = sensors_at(Q0)
        s.set_image(image, rx=0.0)
        trial.start(s, image_is_fresh=True)
        out = []
        for t in range(2):
            out.append(trial.tick(s, lambda: 0.0, ros_now=float(t), obs_time=0.0))
            trial.published(0.001, 0.0)
            s.set_image(image, rx=0.01 * (t + 1))
        return trial, out

    plain, plain_out = run((0.0, 0.0))
    assert plain.image_perturbation is None and plain_out[0].image is image
    trial, out = run((20.0, 1.0))
    want = [perturb_image(image, 20.0, 1.0, frame_rng(11, t)) for t in range(2)]
    for t in range(2):
        np.testing.assert_array_equal(out[t].image, want[t])
        np.testing.assert_array_equal(trial.images[t], want[t])
    assert not np.array_equal(want[0], want[1])  # other noise each step
    _, o = robot.assembler.assemble(Q0, np.zeros(DU), None)
    np.testing.assert_allclose(out[0].torque, robot.safety.filter(policy.act(o, want[0], None), Q0).torque, atol=1e-6)
    assert not np.allclose(out[0].torque, plain_out[0].torque)
    again, _ = run((20.0, 1.0))
    np.testing.assert_array_equal(np.array(again.images), np.array(trial.images))
