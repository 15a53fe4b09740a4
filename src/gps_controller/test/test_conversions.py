"""Round trips and validation errors of gps_controller.conversions (no DDS: in-process CDR)."""

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message

from gps_controller import conversions as conv
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_msgs import msg as gmsg
from gps_msgs import srv as gsrv

pytestmark = pytest.mark.ros


def _cdr_round_trip(msg):
    return deserialize_message(serialize_message(msg), type(msg))


def _rollout(rng, T=5, dX=4, dU=2, dO=3, image=None):
    return conv.RolloutData(
        states=rng.normal(size=(T, dX)),
        actions=rng.normal(size=(T, dU)),
        observations=rng.normal(size=(T, dO)),
        noise=rng.normal(size=(T, dU)),
        stamps=np.arange(T) * 0.05,
        images=None if image is None else rng.integers(0, 256, size=(T, *image, 3), dtype=np.uint8),
        condition=2,
        iteration=7,
        sample_index=3,
        policy_type="neural",
        seed=123,
        robot_namespace="/robot1",
        rollout_id="robot1/7/2/3/abcd",
        deadline_misses=1,
        aborted=True,
        abort_reason="camera stale",
        end_stamp=12.5,
    )


@settings(max_examples=25, deadline=None)
@given(
    T=st.integers(1, 12),
    dX=st.integers(1, 40),
    dU=st.integers(1, 8),
    dO=st.integers(0, 40),
    hw=st.one_of(st.none(), st.tuples(st.integers(1, 9), st.integers(1, 9))),
    seed=st.integers(0, 2**32 - 1),
)
def test_rollout_round_trip_is_exact(T, dX, dU, dO, hw, seed):
    data = _rollout(np.random.default_rng(seed), T, dX, dU, dO, hw)
    back = conv.rollout_from_msg(_cdr_round_trip(conv.rollout_to_msg(data)))
    for name in ("states", "actions", "observations", "noise", "stamps"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
    if hw is None:
        assert back.images is None
    else:
        np.testing.assert_array_equal(back.images, data.images)
    for name in ("condition", "iteration", "sample_index", "policy_type", "seed", "robot_namespace",
                 "rollout_id", "deadline_misses", "aborted", "abort_reason", "end_stamp"):
        assert getattr(back, name) == getattr(data, name), name


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 10), dX=st.integers(1, 12), dU=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_linear_gaussian_round_trip_is_exact(T, dX, dU, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(T, dU, dU))
    ctrl = LinearGaussianPolicy(
        K=rng.normal(size=(T, dU, dX)),
        k=rng.normal(size=(T, dU)),
        pol_covar=a @ np.swapaxes(a, 1, 2) + np.eye(dU),
        noise_smoothing_std=1.5,
    )
    back = conv.linear_gaussian_from_msg(_cdr_round_trip(conv.linear_gaussian_to_msg(ctrl)), dX, dU)
    np.testing.assert_array_equal(back.K, ctrl.K)
    np.testing.assert_array_equal(back.k, ctrl.k)
    np.testing.assert_array_equal(back.pol_covar, ctrl.pol_covar)
    assert back.noise_smoothing_std == 1.5


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 20), seed=st.integers(0, 2**32 - 1), bgr=st.booleans())
def test_image_round_trip(h, w, seed, bgr):
    img = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    msg = _cdr_round_trip(conv.image_to_msg(img, frame_id="cam", encoding="bgr8" if bgr else "rgb8"))
    assert msg.step == 3 * w and msg.header.frame_id == "cam"
    out = conv.image_from_msg(msg)
    # bgr8 on the wire still reads back as RGB only if the sender swapped; here the sender wrote the
    # array as BGR, so the reader's RGB view is the channel-reversed array.
    np.testing.assert_array_equal(out, img[:, :, ::-1] if bgr else img)


def test_image_with_row_padding_is_cropped():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = conv.image_to_msg(img)
    padded = np.zeros((2, 12), dtype=np.uint8)
    padded[:, :9] = img.reshape(2, 9)
    msg.step, msg.data = 12, conv.to_uint8_array(padded)
    np.testing.assert_array_equal(conv.image_from_msg(msg), img)


def test_trainer_status_round_trip():
    msg = conv.status_to_msg(
        phase="c_step", algorithm="mdgps", experiment="reach", iteration=4, iterations_completed=4,
        iterations_remaining=2, rollouts_received=7, rollouts_expected=20,
        cost_per_condition=[1.0, float("nan")], kl_per_condition=[0.1, 0.2], eta_per_condition=[1.0, 2.0],
        step_mult_per_condition=[1.0, 0.5], policy_loss=0.25, policy_cost=3.0, success_rate=0.5, message="ok",
    )
    d = conv.status_to_dict(_cdr_round_trip(msg))
    assert d["phase"] == "c_step" and d["iteration"] == 4 and d["rollouts_expected"] == 20
    assert d["cost_per_condition"][0] == 1.0 and np.isnan(d["cost_per_condition"][1])
    assert d["step_mult_per_condition"] == [1.0, 0.5]
    with pytest.raises(conv.MessageValidationError, match="bogus: is not a TrainerStatus field"):
        conv.status_to_msg(bogus=1)


@pytest.mark.parametrize(
    "srv_type",
    [gsrv.RunTrial, gsrv.SetLinearGaussian, gsrv.SetPolicyWeights, gsrv.StartIteration, gsrv.GetStatus,
     gsrv.ResetCondition],
)
def test_every_service_type_round_trips_through_cdr(srv_type):
    req, resp = srv_type.Request(), srv_type.Response()
    for msg in (req, resp):
        for name, typ in msg.get_fields_and_field_types().items():
            if typ == "string":
                setattr(msg, name, f"value of {name}")
            elif typ in ("uint32", "uint64"):
                setattr(msg, name, 7)
            elif typ == "int32":
                setattr(msg, name, -1)
            elif typ == "boolean":
                setattr(msg, name, True)
            elif typ == "sequence<double>":
                setattr(msg, name, conv.to_float64_array(np.array([1.5, -2.0])))
            elif typ == "sequence<uint8>":
                setattr(msg, name, conv.to_uint8_array(b"\x00\x01\xff"))
        assert _cdr_round_trip(msg) == msg


def test_every_message_type_is_covered():
    # A new .msg/.srv must get a round-trip test above; this fails when one is added without it.
    assert sorted(n for n in dir(gmsg) if n[0].isupper()) == ["LinearGaussianController", "Rollout", "TrainerStatus"]
    assert sorted(n for n in dir(gsrv) if n[0].isupper() and not n.endswith(("_Request", "_Response", "_Event"))) == [
        "GetStatus", "ResetCondition", "RunTrial", "SetLinearGaussian", "SetPolicyWeights", "StartIteration"]


# --------------------------------------------------------------------------- bad input


def test_rollout_size_mismatch_names_field():
    msg = conv.rollout_to_msg(_rollout(np.random.default_rng(0)))
    msg.actions = conv.to_float64_array(np.zeros(9))
    with pytest.raises(conv.MessageValidationError, match=r"^actions: has 9 elements, expected 10 for shape \(5, 2\)"):
        conv.rollout_from_msg(msg)


def test_rollout_nan_names_field_and_index():
    msg = conv.rollout_to_msg(_rollout(np.random.default_rng(0)))
    states = np.frombuffer(msg.states, dtype=np.float64).copy()
    states[6] = np.nan
    msg.states = conv.to_float64_array(states, allow_nonfinite=True)
    with pytest.raises(conv.MessageValidationError, match="^states: contains NaN or Inf at flat index 6"):
        conv.rollout_from_msg(msg)


def test_rollout_unknown_image_encoding_and_empty_dimension():
    msg = conv.rollout_to_msg(_rollout(np.random.default_rng(0), image=(4, 4)))
    msg.image_encoding = "mono16"
    with pytest.raises(conv.MessageValidationError, match="^image_encoding: unknown image encoding 'mono16'"):
        conv.rollout_from_msg(msg)
    msg = conv.rollout_to_msg(_rollout(np.random.default_rng(0)))
    msg.horizon = 0
    with pytest.raises(conv.MessageValidationError, match=r"^horizon: must be > 0 \(required dimension is empty\)"):
        conv.rollout_from_msg(msg)
    msg = conv.rollout_to_msg(_rollout(np.random.default_rng(0)))
    msg.policy_type = "magic"
    with pytest.raises(conv.MessageValidationError, match="^policy_type: unknown policy type 'magic'"):
        conv.rollout_from_msg(msg)


def test_rollout_sender_rejects_nan_and_bad_shapes():
    data = _rollout(np.random.default_rng(0))
    data.actions[1, 1] = np.inf
    with pytest.raises(conv.MessageValidationError, match="^actions: contains NaN or Inf at flat index 3"):
        conv.rollout_to_msg(data)
    data = _rollout(np.random.default_rng(0))
    data.noise = data.noise[:, :1]
    with pytest.raises(conv.MessageValidationError, match=r"^noise: expected shape \(5, 2\)"):
        conv.rollout_to_msg(data)


def test_image_errors():
    with pytest.raises(conv.MessageValidationError, match="^encoding: unknown image encoding 'yuv422'"):
        conv.image_to_msg(np.zeros((2, 2, 3), np.uint8), encoding="yuv422")
    with pytest.raises(conv.MessageValidationError, match=r"^data: expected an \(H, W, 3\) uint8 image"):
        conv.image_to_msg(np.zeros((2, 2), np.uint8))
    msg = conv.image_to_msg(np.zeros((2, 2, 3), np.uint8))
    msg.data = conv.to_uint8_array(b"\x00" * 5)
    with pytest.raises(conv.MessageValidationError, match="^data: has 5 elements, expected 12"):
        conv.image_from_msg(msg)
    msg = conv.image_to_msg(np.zeros((2, 2, 3), np.uint8))
    msg.width = 0
    with pytest.raises(conv.MessageValidationError, match="^width: must be > 0"):
        conv.image_from_msg(msg)


def _lg_msg(T=3, dX=4, dU=2):
    rng = np.random.default_rng(1)
    return conv.linear_gaussian_to_msg(LinearGaussianPolicy(
        rng.normal(size=(T, dU, dX)), rng.normal(size=(T, dU)), np.tile(np.eye(dU), (T, 1, 1))))


def test_linear_gaussian_errors():
    with pytest.raises(conv.MessageValidationError, match="^state_dim: is 4, this controller's state has 32"):
        conv.linear_gaussian_from_msg(_lg_msg(), state_dim=32, action_dim=2)
    with pytest.raises(conv.MessageValidationError, match="^action_dim: is 2, this controller drives 7 joints"):
        conv.linear_gaussian_from_msg(_lg_msg(), state_dim=4, action_dim=7)
    msg = _lg_msg()
    cov = np.tile(np.eye(2), (3, 1, 1))
    cov[2] = np.diag([1.0, -1.0])
    msg.covariance = conv.to_float64_array(cov)
    with pytest.raises(conv.MessageValidationError, match="^covariance: is not positive definite at t=2"):
        conv.linear_gaussian_from_msg(msg)
    msg = _lg_msg()
    msg.bias = conv.to_float64_array(np.full(6, np.nan), allow_nonfinite=True)
    with pytest.raises(conv.MessageValidationError, match="^bias: contains NaN or Inf at flat index 0"):
        conv.linear_gaussian_from_msg(msg)
    msg = _lg_msg()
    msg.gains = conv.to_float64_array(np.zeros(5))
    with pytest.raises(conv.MessageValidationError, match="^gains: has 5 elements, expected 24"):
        conv.linear_gaussian_from_msg(msg)


def test_weights_payload_checks():
    blob = b"safetensors-bytes"
    good = hashlib.sha256(blob).hexdigest()
    assert conv.check_weights_payload('{"type": "mlp"}', conv.to_uint8_array(blob), good) == blob
    with pytest.raises(conv.MessageValidationError, match="^sha256: does not match the weights"):
        conv.check_weights_payload('{"type": "mlp"}', blob, hashlib.sha256(b"other").hexdigest())
    with pytest.raises(conv.MessageValidationError, match="^sha256: must be 64 lowercase hex digits"):
        conv.check_weights_payload('{"type": "mlp"}', blob, "xyz")
    with pytest.raises(conv.MessageValidationError, match="^weights: is empty"):
        conv.check_weights_payload('{"type": "mlp"}', b"", good)
    with pytest.raises(conv.MessageValidationError, match="^architecture: is empty"):
        conv.check_weights_payload("  ", blob, good)


def test_pose_and_request_checks():
    pose = conv.array_to_pose(np.array([0.1, 0.2, 0.3, 2.0, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(conv.pose_to_array(pose), [0.1, 0.2, 0.3, 1.0, 0.0, 0.0, 0.0])
    pose.orientation.w = 0.0
    with pytest.raises(conv.MessageValidationError, match="^target_pose: orientation quaternion is zero"):
        conv.pose_to_array(pose, "target_pose")
    pose.position.x = float("nan")
    with pytest.raises(conv.MessageValidationError, match="^target_pose: contains NaN or Inf"):
        conv.pose_to_array(pose, "target_pose")
    with pytest.raises(conv.MessageValidationError, match="^joint_positions: has 3 elements, expected 7"):
        conv.joint_vector([0.0, 1.0, 2.0], 7, "joint_positions")
    req = gsrv.RunTrial.Request(condition=4, policy_type="linear_gaussian")
    with pytest.raises(conv.MessageValidationError, match="^condition: unknown condition 4; this robot's task has 4"):
        conv.check_run_trial_request(req, num_conditions=4, max_horizon=100)
    req = gsrv.RunTrial.Request(condition=0, policy_type="cnn")
    with pytest.raises(conv.MessageValidationError, match="^policy_type: unknown policy type 'cnn'"):
        conv.check_run_trial_request(req, num_conditions=4, max_horizon=100)
    req = gsrv.RunTrial.Request(condition=0, policy_type="neural", horizon=500)
    with pytest.raises(conv.MessageValidationError, match="^horizon: 500 exceeds the maximum of 100 steps"):
        conv.check_run_trial_request(req, num_conditions=4, max_horizon=100)
    with pytest.raises(conv.MessageValidationError, match="^iterations: must be between 1 and"):
        conv.check_start_iteration_request(gsrv.StartIteration.Request(iterations=0))


def test_large_rollout_conversion_is_buffer_based():
    # 240x240 images, T=100: ~17 MB. Through array.array this is a memcpy, not a Python loop.
    rng = np.random.default_rng(0)
    data = _rollout(rng, T=100, dX=32, dU=7, dO=32)
    data.images = np.zeros((100, 240, 240, 3), np.uint8)
    data.images[:, 10, 20] = 200
    msg = conv.rollout_to_msg(data)
    assert len(msg.images) == 100 * 240 * 240 * 3
    back = conv.rollout_from_msg(msg)
    assert back.images[5, 10, 20, 1] == 200 and back.images.flags.writeable
