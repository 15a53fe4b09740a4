"""numpy <-> gps_msgs / sensor_msgs conversion with validation: the one module every node uses.

Rules of the wire (DESIGN.md): arrays are flattened row-major ``float64[]`` (``uint8[]`` for
images and weights) with explicit dimensions in the message; a receiver checks every size
against those dimensions and rejects NaN/Inf, unknown encodings and empty required fields.
Every rejection is a :class:`MessageValidationError` that names the offending field.

Large arrays go through ``array.array`` (the generated message setters take it as is) and
come back through ``np.frombuffer`` (no copy): element-wise assignment of large sequences
is orders of magnitude slower in rclpy.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_msgs.msg import LinearGaussianController, Rollout, TrainerStatus

#: The ``policy_type`` values a Rollout or RunTrial request may carry.
POLICY_TYPES = ("linear_gaussian", "neural")

# Documented bounds of the numeric request fields (the .srv/.msg types bound the rest: uint32
# condition/iteration/sample_index/horizon, uint64 seed, all accepted in full).
#: LinearGaussianController.noise_smoothing_std: std of the Gaussian filter, in time steps, [0, 1000].
#: (A filter kernel is 8 std wide; 1e9 would allocate tens of GiB.)
MAX_NOISE_SMOOTHING_STD = 1000.0
#: LinearGaussianController.horizon: at most this many steps (the controller's max_horizon is lower).
MAX_CONTROLLER_HORIZON = 100_000
#: LinearGaussianController.state_dim / action_dim.
MAX_DIM = 4096
#: StartIteration.iterations: at most this many per request (uint32 on the wire; `gps train` checks
#: before sending, since a larger number would wrap).
MAX_ITERATIONS_PER_REQUEST = 10_000
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


from gps_core.wire import (  # noqa: E402, F401  (re-exported: the controller's one conversion module)
    IMAGE_ENCODINGS,
    MessageValidationError,
    _first_nonfinite,
    _require_positive,
    array_to_pose,
    image_from_msg,
    image_to_msg,
    joint_vector,
    pose_to_array,
    read_float64,
    read_uint8,
    seconds_to_time,
    time_to_seconds,
    to_float64_array,
    to_uint8_array,
)

# --------------------------------------------------------------------------- rollouts


@dataclass
class RolloutData:
    """A Rollout as numpy arrays; shapes: states (T, dX), actions/noise (T, dU), observations (T, dO),
    stamps (T,), images (T, H, W, 3) uint8 or None."""

    states: np.ndarray
    actions: np.ndarray
    observations: np.ndarray
    noise: np.ndarray
    stamps: np.ndarray
    images: np.ndarray | None = None
    condition: int = 0
    iteration: int = 0
    sample_index: int = 0
    policy_type: str = "linear_gaussian"
    seed: int = 0
    robot_namespace: str = ""
    rollout_id: str = ""
    deadline_misses: int = 0
    aborted: bool = False
    abort_reason: str = ""
    end_stamp: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        return int(self.states.shape[0])


def rollout_to_msg(data: RolloutData) -> Rollout:
    """Pack a :class:`RolloutData` into a ``gps_msgs/Rollout`` (validating shapes and values)."""
    states = np.asarray(data.states)
    if states.ndim != 2:
        raise MessageValidationError("states", f"expected a (T, dX) array, got shape {states.shape}")
    horizon, state_dim = states.shape
    _require_positive(horizon, "horizon")
    _require_positive(state_dim, "state_dim")
    actions = np.asarray(data.actions)
    if actions.ndim != 2 or actions.shape[0] != horizon:
        raise MessageValidationError("actions", f"expected ({horizon}, dU), got shape {actions.shape}")
    action_dim = _require_positive(actions.shape[1], "action_dim")
    observations = np.asarray(data.observations).reshape(horizon, -1)
    noise = np.asarray(data.noise)
    if noise.shape != (horizon, action_dim):
        raise MessageValidationError("noise", f"expected shape {(horizon, action_dim)}, got {noise.shape}")
    stamps = np.asarray(data.stamps, dtype=np.float64)
    if stamps.shape != (horizon,):
        raise MessageValidationError("stamps", f"expected shape ({horizon},), got {stamps.shape}")
    if data.policy_type not in POLICY_TYPES:
        raise MessageValidationError("policy_type", f"unknown policy type {data.policy_type!r}; known: {POLICY_TYPES}")

    msg = Rollout(
        states=to_float64_array(states, "states"),
        actions=to_float64_array(actions, "actions"),
        observations=to_float64_array(observations, "observations"),
        noise=to_float64_array(noise, "noise"),
        stamps=to_float64_array(stamps, "stamps"),
    )
    msg.header.stamp = seconds_to_time(data.end_stamp)
    msg.rollout_id = data.rollout_id
    msg.robot_namespace = data.robot_namespace
    msg.condition = int(data.condition)
    msg.iteration = int(data.iteration)
    msg.sample_index = int(data.sample_index)
    msg.policy_type = data.policy_type
    msg.seed = int(data.seed)
    msg.horizon = horizon
    msg.state_dim = state_dim
    msg.action_dim = action_dim
    msg.obs_dim = observations.shape[1]
    if data.images is not None:
        images = np.asarray(data.images)
        if images.ndim != 4 or images.shape[0] != horizon or images.shape[3] != 3 or images.dtype != np.uint8:
            raise MessageValidationError(
                "images", f"expected a ({horizon}, H, W, 3) uint8 array, got {images.shape} {images.dtype}"
            )
        msg.image_height, msg.image_width = images.shape[1], images.shape[2]
        msg.image_encoding = "rgb8"
        msg.images = to_uint8_array(images)
    msg.deadline_misses = int(data.deadline_misses)
    msg.aborted = bool(data.aborted)
    msg.abort_reason = data.abort_reason
    return msg


def rollout_from_msg(msg: Rollout) -> RolloutData:
    """Unpack and validate a ``gps_msgs/Rollout``; raises :class:`MessageValidationError` naming the field."""
    horizon = _require_positive(msg.horizon, "horizon")
    state_dim = _require_positive(msg.state_dim, "state_dim")
    action_dim = _require_positive(msg.action_dim, "action_dim")
    if msg.policy_type not in POLICY_TYPES:
        raise MessageValidationError("policy_type", f"unknown policy type {msg.policy_type!r}; known: {POLICY_TYPES}")
    images = None
    if msg.image_encoding or len(msg.images):
        if msg.image_encoding != "rgb8":
            raise MessageValidationError(
                "image_encoding", f"unknown image encoding {msg.image_encoding!r}; a Rollout carries 'rgb8'"
            )
        height = _require_positive(msg.image_height, "image_height")
        width = _require_positive(msg.image_width, "image_width")
        images = read_uint8(msg.images, (horizon, height, width, 3), "images")
    return RolloutData(
        states=read_float64(msg.states, (horizon, state_dim), "states"),
        actions=read_float64(msg.actions, (horizon, action_dim), "actions"),
        observations=read_float64(msg.observations, (horizon, msg.obs_dim), "observations"),
        noise=read_float64(msg.noise, (horizon, action_dim), "noise"),
        stamps=read_float64(msg.stamps, (horizon,), "stamps"),
        images=images,
        condition=msg.condition,
        iteration=msg.iteration,
        sample_index=msg.sample_index,
        policy_type=msg.policy_type,
        seed=msg.seed,
        robot_namespace=msg.robot_namespace,
        rollout_id=msg.rollout_id,
        deadline_misses=msg.deadline_misses,
        aborted=msg.aborted,
        abort_reason=msg.abort_reason,
        end_stamp=time_to_seconds(msg.header.stamp),
    )


# --------------------------------------------------------------------------- linear-Gaussian controllers


def linear_gaussian_to_msg(ctrl: LinearGaussianPolicy) -> LinearGaussianController:
    return LinearGaussianController(
        horizon=ctrl.T,
        state_dim=ctrl.dX,
        action_dim=ctrl.dU,
        gains=to_float64_array(ctrl.K, "gains"),
        bias=to_float64_array(ctrl.k, "bias"),
        covariance=to_float64_array(ctrl.pol_covar, "covariance"),
        noise_smoothing_std=float(ctrl.noise_smoothing_std),
    )


def linear_gaussian_from_msg(
    msg: LinearGaussianController, state_dim: int | None = None, action_dim: int | None = None
) -> LinearGaussianPolicy:
    """Unpack and validate; when given, ``state_dim``/``action_dim`` must match the receiver's robot."""
    horizon = _require_positive(msg.horizon, "horizon")
    dx = _require_positive(msg.state_dim, "state_dim")
    du = _require_positive(msg.action_dim, "action_dim")
    if horizon > MAX_CONTROLLER_HORIZON:
        raise MessageValidationError("horizon", f"{horizon} exceeds the maximum of {MAX_CONTROLLER_HORIZON} steps")
    for name, value in (("state_dim", dx), ("action_dim", du)):
        if value > MAX_DIM:
            raise MessageValidationError(name, f"{value} exceeds the maximum of {MAX_DIM}")
    if state_dim is not None and dx != state_dim:
        raise MessageValidationError("state_dim", f"is {dx}, this controller's state has {state_dim} dimensions")
    if action_dim is not None and du != action_dim:
        raise MessageValidationError("action_dim", f"is {du}, this controller drives {action_dim} joints")
    smoothing = msg.noise_smoothing_std
    if not (np.isfinite(smoothing) and 0.0 <= smoothing <= MAX_NOISE_SMOOTHING_STD):
        raise MessageValidationError(
            "noise_smoothing_std", f"must be between 0 and {MAX_NOISE_SMOOTHING_STD:g} steps, got {smoothing!r}")
    gains = read_float64(msg.gains, (horizon, du, dx), "gains")
    bias = read_float64(msg.bias, (horizon, du), "bias")
    cov = read_float64(msg.covariance, (horizon, du, du), "covariance")
    if not np.allclose(cov, np.swapaxes(cov, 1, 2), rtol=1e-6, atol=1e-9):
        raise MessageValidationError("covariance", "is not symmetric")
    # Batched Cholesky: fails exactly when some Sigma_t is not positive definite.
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        eig_min = np.linalg.eigvalsh(cov).min(axis=1)
        bad = int(np.argmin(eig_min))
        raise MessageValidationError(
            "covariance", f"is not positive definite at t={bad} (smallest eigenvalue {eig_min[bad]:.3g})"
        ) from None
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    try:
        return LinearGaussianPolicy(gains, bias, cov, noise_smoothing_std=float(msg.noise_smoothing_std))
    except ValueError as exc:
        raise MessageValidationError("controller", str(exc)) from None


# --------------------------------------------------------------------------- raw images


def peek_image_size(raw: bytes) -> tuple[int, int]:
    """(height, width) of a serialized ``sensor_msgs/Image`` (CDR) without deserializing it, so an
    oversized image is dropped before any copy. Layout: 4-byte encapsulation header, then
    stamp (int32 sec, uint32 nanosec), frame_id (uint32 length incl. NUL, bytes), pad to 4, height, width."""
    if len(raw) < 24 or raw[0] != 0:
        raise MessageValidationError("image", f"not a CDR-serialized Image ({len(raw)} bytes)")
    order = "little" if raw[1] & 1 else "big"
    body = 4
    n = int.from_bytes(raw[body + 8:body + 12], order)
    offset = 12 + n
    offset += -offset % 4
    if body + offset + 8 > len(raw):
        raise MessageValidationError("image", f"frame_id length {n} runs past the message ({len(raw)} bytes)")
    height = int.from_bytes(raw[body + offset:body + offset + 4], order)
    width = int.from_bytes(raw[body + offset + 4:body + offset + 8], order)
    return height, width


# --------------------------------------------------------------------------- policy weights


def check_weights_payload(architecture: str, weights, sha256_hex: str) -> bytes:
    """Validate a SetPolicyWeights payload's envelope; returns the weights as bytes.

    Checks: architecture JSON present, weights present, SHA-256 well-formed and equal to the
    digest of the weights. Parsing the safetensors content is the policy loader's job.
    """
    if not architecture.strip():
        raise MessageValidationError("architecture", "is empty (a JSON description of the network is required)")
    blob = bytes(weights)
    if not blob:
        raise MessageValidationError("weights", "is empty")
    if not _SHA256_HEX.match(sha256_hex):
        raise MessageValidationError("sha256", f"must be 64 lowercase hex digits, got {sha256_hex[:80]!r}")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != sha256_hex:
        raise MessageValidationError("sha256", f"does not match the weights (payload digest {digest})")
    return blob


# --------------------------------------------------------------------------- trainer status


_STATUS_ARRAY_FIELDS = ("cost_per_condition", "kl_per_condition", "eta_per_condition", "step_mult_per_condition")


def status_to_msg(**fields) -> TrainerStatus:
    """``TrainerStatus`` from keyword fields; per-condition lists may contain NaN (not yet computed)."""
    msg = TrainerStatus()
    for name, value in fields.items():
        if name in _STATUS_ARRAY_FIELDS:
            setattr(msg, name, to_float64_array(np.asarray(value, dtype=np.float64), name, allow_nonfinite=True))
        elif not hasattr(msg, name):
            raise MessageValidationError(name, "is not a TrainerStatus field")
        else:
            setattr(msg, name, value)
    return msg


def status_to_dict(msg: TrainerStatus) -> dict:
    """A plain dict of a ``TrainerStatus`` (for logs, the CLI and JSON)."""
    out = {}
    for name in msg.get_fields_and_field_types():
        if name == "header":
            continue
        value = getattr(msg, name)
        out[name] = list(value) if name in _STATUS_ARRAY_FIELDS else value
    return out


# --------------------------------------------------------------------------- service requests


def check_run_trial_request(request, num_conditions: int, max_horizon: int) -> None:
    """Reject a RunTrial request with an unknown condition or policy type, or a horizon too long."""
    if request.condition >= num_conditions:
        raise MessageValidationError(
            "condition", f"unknown condition {request.condition}; this robot's task has {num_conditions}"
        )
    if request.policy_type not in POLICY_TYPES:
        raise MessageValidationError(
            "policy_type", f"unknown policy type {request.policy_type!r}; known: {POLICY_TYPES}"
        )
    if request.horizon > max_horizon:
        raise MessageValidationError("horizon", f"{request.horizon} exceeds the maximum of {max_horizon} steps")


def check_start_iteration_request(request, max_iterations: int = MAX_ITERATIONS_PER_REQUEST) -> None:
    if not 1 <= request.iterations <= max_iterations:
        raise MessageValidationError("iterations", f"must be between 1 and {max_iterations}, got {request.iterations}")
