"""The controller's node parameters: one typed, range-checked table (plain Python, no rclpy).

Every parameter has a type, a default, a documented bound and a flag saying whether it may change at
run time. :func:`load_params` turns the values a node was started with (parameter files, ``-p``)
into a frozen :class:`ControllerParams`; unknown keys and bad values raise :class:`ParameterError`
naming the file, the key and the value. :func:`check_runtime_update` validates a
``ros2 param set``: only the ``RUNTIME`` parameters may change (the others are declared read-only,
so the change is refused instead of silently ignored), and never while a trial runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gps_core import node_params
from gps_core.node_params import ParameterError, each, nonempty, not_nan, num_range, one_of
from gps_core.tasks import CONDITION_SETS, CONDITION_SETS_HELP

PR2_RIGHT_ARM = (
    "r_shoulder_pan_joint", "r_shoulder_lift_joint", "r_upper_arm_roll_joint", "r_elbow_flex_joint",
    "r_forearm_roll_joint", "r_wrist_flex_joint", "r_wrist_roll_joint",
)
#: Parameters every rclpy node may carry; they are not the controller's and are never rejected.
ROS_BUILTIN = frozenset({"use_sim_time", "start_type_description_service"})
#: Parameters that ``ros2 param set`` may change (validated, refused while a trial runs).
RUNTIME = frozenset({"condition_set", "publish_overlay", "deadline_slack", "max_consecutive_deadline_misses",
                     "image_noise_std", "image_blur"})


@dataclass(frozen=True)
class ControllerParams:
    """Typed node parameters (config/controller.yaml documents each one)."""

    joint_names: tuple[str, ...] = PR2_RIGHT_ARM
    strict_joint_names: bool = True
    control_rate_hz: float = 20.0
    effort_limits: tuple[float, ...] = (30.0, 30.0, 30.0, 30.0, 30.0, 10.0, 10.0)
    joint_lower_limits: tuple[float, ...] = (0.0,)  # (0.0,) = from the robot model
    joint_upper_limits: tuple[float, ...] = (0.0,)
    joint_limit_margin: float = 0.05
    joint_states_topic: str = "joint_states"
    image_topic: str = "camera/image_raw"
    target_pose_topic: str = "gps/target_pose"
    command_topic: str = "effort_controller/commands"
    rollout_topic: str = "/gps/rollouts"
    overlay_topic: str = "gps/feature_points/image"
    feature_points_topic: str = "gps/feature_points"
    command_stamps_topic: str = "gps/command_stamps"
    camera_frame: str = "head_mount_kinect_rgb_optical_frame"
    camera_hfov_deg: float = 57.0
    image_size: int = 64
    max_image_side: int = 2048
    joint_states_queue_depth: int = 1000
    image_queue_depth: int = 5
    trigger_mode: str = "timer"
    stale_timeout: float = 0.0
    deadline_slack: float = 0.5
    max_consecutive_deadline_misses: int = 5
    inference_budget: float = 0.8
    precision: str = "fp32"
    task: str = "reach"
    condition_set: str = "train"
    target_source: str = "topic"
    robot_model: str = "mujoco"
    tool_frame: str = "r_gripper_tool_frame"
    horizon: int = 0
    max_horizon: int = 10000
    reset_mode: str = "sim_service"
    reset_timeout: float = 10.0
    reset_settle_timeout: float = 3.0
    pd_reset_kp: float = 20.0
    pd_reset_kd: float = 5.0
    pd_reset_tolerance: float = 0.02
    pd_reset_max_time: float = 10.0
    publish_overlay: bool = True
    torch_threads: int = 1
    executor: str = "single"
    # Robustness probing (issue 24): pixel noise and blur on the camera image before the policy sees it
    # (gps_core.ood.perturb_image, as the image_noise condition sets); 0 = the image as received.
    image_noise_std: float = 0.0
    image_blur: float = 0.0

    @property
    def period(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def lower_limits(self) -> tuple[float, ...] | None:
        """Configured lower joint limits, None = take them from the robot model."""
        return None if self.joint_lower_limits == (0.0,) else self.joint_lower_limits

    @property
    def upper_limits(self) -> tuple[float, ...] | None:
        return None if self.joint_upper_limits == (0.0,) else self.joint_upper_limits

    def replace(self, **changes) -> ControllerParams:
        return dataclasses.replace(self, **changes)


#: name -> (kind, check, description). kind: float, int, bool, str, floats, strs.
SPECS: dict[str, tuple[str, Callable[[Any], str], str]] = {
    "joint_names": ("strs", each(nonempty), "torque order on the command topic (unique names)"),
    "strict_joint_names": ("bool", lambda v: "", "reject joint states naming joints not configured"),
    "control_rate_hz": ("float", num_range(0.0, 1000.0, lo_open=True), "control rate, Hz (0, 1000]"),
    "effort_limits": ("floats", each(num_range(0.0, 1e4, lo_open=True)), "N m per joint, (0, 1e4]"),
    "joint_lower_limits": ("floats", each(not_nan), "rad per joint; [0.0] = from the robot model"),
    "joint_upper_limits": ("floats", each(not_nan), "rad per joint; [0.0] = from the robot model"),
    "joint_limit_margin": ("float", num_range(0.0, 1.0), "rad, [0, 1]"),
    "joint_states_topic": ("str", nonempty, "topic"),
    "image_topic": ("str", nonempty, "topic"),
    "target_pose_topic": ("str", nonempty, "topic"),
    "command_topic": ("str", nonempty, "topic"),
    "rollout_topic": ("str", nonempty, "topic"),
    "overlay_topic": ("str", nonempty, "topic"),
    "feature_points_topic": ("str", nonempty, "topic"),
    "command_stamps_topic": ("str", nonempty, "topic: per command, its publish time and its observation's stamp"),
    "camera_frame": ("str", nonempty, "frame of the overlay and feature-point markers"),
    "camera_hfov_deg": ("float", num_range(1.0, 179.0), "deg, [1, 179]"),
    "image_size": ("int", num_range(8, 1024), "policy image side, px [8, 1024]"),
    "max_image_side": ("int", num_range(8, 16384), "camera images wider or taller are dropped unread, px [8, 16384]"),
    "joint_states_queue_depth": ("int", num_range(1, 100000), "subscription depth [1, 100000]"),
    "image_queue_depth": ("int", num_range(1, 100), "subscription depth [1, 100]"),
    "trigger_mode": ("str", one_of("timer", "observation"), "timer | observation"),
    "stale_timeout": ("float", num_range(0.0, 60.0), "s, [0, 60]; 0 = two control periods"),
    "deadline_slack": ("float", num_range(0.0, 10.0), "periods, [0, 10]"),
    "max_consecutive_deadline_misses": ("int", num_range(0, 1_000_000), "abort after this many in a row; 0 = never"),
    "inference_budget": ("float", num_range(0.0, 10.0, lo_open=True),
                         "a pushed policy must act within this fraction of the period, (0, 10]"),
    "precision": ("str", one_of("fp32", "bf16", "auto"),
                  "neural policy inference: fp32 | bf16 | auto (bf16 only where the CPU has it natively)"),
    "task": ("str", nonempty, "config/tasks/<task>.yaml or a path"),
    "condition_set": ("str", one_of(*CONDITION_SETS), CONDITION_SETS_HELP + " (run time)"),
    "target_source": ("str", one_of("topic", "task"), "topic | task"),
    "robot_model": ("str", nonempty, "mujoco | a URDF path"),
    "tool_frame": ("str", nonempty, "URDF tool frame"),
    "horizon": ("int", num_range(0, 100000), "steps; 0 = the task's horizon"),
    "max_horizon": ("int", num_range(1, 100000), "steps, [1, 100000]"),
    "reset_mode": ("str", one_of("sim_service", "pd", "none"), "sim_service | pd | none"),
    "reset_timeout": ("float", num_range(0.0, 600.0, lo_open=True), "s, (0, 600]"),
    "reset_settle_timeout": ("float", num_range(0.0, 600.0, lo_open=True), "s, (0, 600]"),
    "pd_reset_kp": ("float", num_range(0.0, 1e4), "N m / rad, [0, 1e4]"),
    "pd_reset_kd": ("float", num_range(0.0, 1e4), "N m s / rad, [0, 1e4]"),
    "pd_reset_tolerance": ("float", num_range(0.0, 1.0, lo_open=True), "rad, (0, 1]"),
    "pd_reset_max_time": ("float", num_range(0.0, 600.0, lo_open=True), "s, (0, 600]"),
    "publish_overlay": ("bool", lambda v: "", "publish the feature-point overlay (run time)"),
    "torch_threads": ("int", num_range(1, 256), "CNN inference threads, [1, 256]"),
    "executor": ("str", one_of("single", "multi"), "single | multi"),
    "image_noise_std": ("float", num_range(0.0, 100.0), "pixel noise std on the policy's image, of 255, [0, 100] "
                                                         "(run time)"),
    "image_blur": ("float", num_range(0.0, 20.0), "Gaussian blur sigma on the policy's image, px of a 64-px image, "
                                                  "[0, 20] (run time)"),
}
assert set(SPECS) == {f.name for f in dataclasses.fields(ControllerParams)}


def check_value(name: str, value: Any, source: str = "") -> Any:
    """The typed value of parameter ``name``; ParameterError naming source, key and value otherwise."""
    return node_params.check_value(SPECS, name, value, source)


def _cross_checks(p: ControllerParams, source_of: Callable[[str], str]) -> None:
    n = len(p.joint_names)
    if len(set(p.joint_names)) != n:
        raise ParameterError(f"{source_of('joint_names')}: joint_names: must be unique, got {list(p.joint_names)}")
    for name in ("effort_limits", "joint_lower_limits", "joint_upper_limits"):
        values = getattr(p, name)
        if name != "effort_limits" and values == (0.0,):
            continue
        if len(values) != n:
            raise ParameterError(f"{source_of(name)}: {name}: has {len(values)} entries for the {n} joint_names, "
                                 f"got {list(values)}")
    if p.lower_limits and p.upper_limits and any(lo >= hi for lo, hi in zip(p.lower_limits, p.upper_limits, strict=True)):
        raise ParameterError(f"{source_of('joint_lower_limits')}: joint_lower_limits: every entry must be below "
                             f"joint_upper_limits, got {list(p.lower_limits)} vs {list(p.upper_limits)}")
    if p.horizon > p.max_horizon:
        raise ParameterError(f"{source_of('horizon')}: horizon: {p.horizon} exceeds max_horizon {p.max_horizon}")


def load_params(values: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> ControllerParams:
    """Typed parameters from ``values`` (name -> value as given); ``sources`` maps a name to where it
    was set (a file or '-p'). Unknown names and bad values raise ParameterError."""
    sources = dict(sources or {})

    def source_of(name: str) -> str:
        return sources.get(name, "default")

    typed = {}
    for name, value in values.items():
        if name in ROS_BUILTIN or name.startswith("qos_overrides."):
            continue
        typed[name] = check_value(name, value, source_of(name))
    params = ControllerParams(**typed)
    _cross_checks(params, source_of)
    return params


def check_runtime_update(current: ControllerParams, changes: Mapping[str, Any], trial_running: bool) -> dict:
    """Validated typed changes for a run-time set; ParameterError saying why a change is refused."""
    out = {}
    for name, value in changes.items():
        if name in ROS_BUILTIN:
            continue
        if name not in RUNTIME:
            raise ParameterError(f"{name}: is fixed at start-up (read-only); restart the node to change it "
                                 f"(got {value!r})")
        out[name] = check_value(name, value)
    if out and trial_running:
        raise ParameterError(f"{', '.join(sorted(out))}: a trial is running; retry when it is done")
    _cross_checks(current.replace(**out), lambda _n: "set_parameters")
    return out


def param_sources(argv: Sequence[str], node_name: str = "gps_controller") -> dict[str, str]:
    """Which parameter file (or '-p') set each key (gps_core.node_params.param_sources)."""
    return node_params.param_sources(argv, node_name)
