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
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from gps_core.tasks import CONDITION_SETS

PR2_RIGHT_ARM = (
    "r_shoulder_pan_joint", "r_shoulder_lift_joint", "r_upper_arm_roll_joint", "r_elbow_flex_joint",
    "r_forearm_roll_joint", "r_wrist_flex_joint", "r_wrist_roll_joint",
)
#: Parameters every rclpy node may carry; they are not the controller's and are never rejected.
ROS_BUILTIN = frozenset({"use_sim_time", "start_type_description_service"})
#: Parameters that ``ros2 param set`` may change (validated, refused while a trial runs).
RUNTIME = frozenset({"condition_set", "publish_overlay", "deadline_slack", "max_consecutive_deadline_misses"})


class ParameterError(ValueError):
    """A parameter value (or key) the controller does not accept; the message names source, key, value."""


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


def _num(lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], str]:
    def check(v) -> str:
        ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi
        return "" if ok else f"must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}"
    return check


def _choice(*options: str) -> Callable[[Any], str]:
    return lambda v: "" if v in options else f"must be one of {list(options)}"


def _nonempty(v) -> str:
    return "" if v else "must not be empty"


def _each(check: Callable[[Any], str], max_len: int = 64) -> Callable[[Any], str]:
    def run(values) -> str:
        if not values or len(values) > max_len:
            return f"must have 1 to {max_len} entries"
        for v in values:
            err = check(v)
            if err:
                return f"every entry {err} (entry {v!r})"
        return ""
    return run


def _finite_or_inf(v) -> str:
    return "" if not math.isnan(v) else "must not be NaN"


#: name -> (kind, check, description). kind: float, int, bool, str, floats, strs.
SPECS: dict[str, tuple[str, Callable[[Any], str], str]] = {
    "joint_names": ("strs", _each(_nonempty), "torque order on the command topic (unique names)"),
    "strict_joint_names": ("bool", lambda v: "", "reject joint states naming joints not configured"),
    "control_rate_hz": ("float", _num(0.0, 1000.0, lo_open=True), "control rate, Hz (0, 1000]"),
    "effort_limits": ("floats", _each(_num(0.0, 1e4, lo_open=True)), "N m per joint, (0, 1e4]"),
    "joint_lower_limits": ("floats", _each(_finite_or_inf), "rad per joint; [0.0] = from the robot model"),
    "joint_upper_limits": ("floats", _each(_finite_or_inf), "rad per joint; [0.0] = from the robot model"),
    "joint_limit_margin": ("float", _num(0.0, 1.0), "rad, [0, 1]"),
    "joint_states_topic": ("str", _nonempty, "topic"),
    "image_topic": ("str", _nonempty, "topic"),
    "target_pose_topic": ("str", _nonempty, "topic"),
    "command_topic": ("str", _nonempty, "topic"),
    "rollout_topic": ("str", _nonempty, "topic"),
    "overlay_topic": ("str", _nonempty, "topic"),
    "feature_points_topic": ("str", _nonempty, "topic"),
    "command_stamps_topic": ("str", _nonempty, "topic: per command, its publish time and its observation's stamp"),
    "camera_frame": ("str", _nonempty, "frame of the overlay and feature-point markers"),
    "camera_hfov_deg": ("float", _num(1.0, 179.0), "deg, [1, 179]"),
    "image_size": ("int", _num(8, 1024), "policy image side, px [8, 1024]"),
    "max_image_side": ("int", _num(8, 16384), "camera images wider or taller are dropped unread, px [8, 16384]"),
    "joint_states_queue_depth": ("int", _num(1, 100000), "subscription depth [1, 100000]"),
    "image_queue_depth": ("int", _num(1, 100), "subscription depth [1, 100]"),
    "trigger_mode": ("str", _choice("timer", "observation"), "timer | observation"),
    "stale_timeout": ("float", _num(0.0, 60.0), "s, [0, 60]; 0 = two control periods"),
    "deadline_slack": ("float", _num(0.0, 10.0), "periods, [0, 10]"),
    "max_consecutive_deadline_misses": ("int", _num(0, 1_000_000), "abort after this many in a row; 0 = never"),
    "inference_budget": ("float", _num(0.0, 10.0, lo_open=True),
                         "a pushed policy must act within this fraction of the period, (0, 10]"),
    "precision": ("str", _choice("fp32", "bf16", "auto"),
                  "neural policy inference: fp32 | bf16 | auto (bf16 only where the CPU has it natively)"),
    "task": ("str", _nonempty, "config/tasks/<task>.yaml or a path"),
    "condition_set": ("str", _choice(*CONDITION_SETS), " | ".join(CONDITION_SETS) + " (run time)"),
    "target_source": ("str", _choice("topic", "task"), "topic | task"),
    "robot_model": ("str", _nonempty, "mujoco | a URDF path"),
    "tool_frame": ("str", _nonempty, "URDF tool frame"),
    "horizon": ("int", _num(0, 100000), "steps; 0 = the task's horizon"),
    "max_horizon": ("int", _num(1, 100000), "steps, [1, 100000]"),
    "reset_mode": ("str", _choice("sim_service", "pd", "none"), "sim_service | pd | none"),
    "reset_timeout": ("float", _num(0.0, 600.0, lo_open=True), "s, (0, 600]"),
    "reset_settle_timeout": ("float", _num(0.0, 600.0, lo_open=True), "s, (0, 600]"),
    "pd_reset_kp": ("float", _num(0.0, 1e4), "N m / rad, [0, 1e4]"),
    "pd_reset_kd": ("float", _num(0.0, 1e4), "N m s / rad, [0, 1e4]"),
    "pd_reset_tolerance": ("float", _num(0.0, 1.0, lo_open=True), "rad, (0, 1]"),
    "pd_reset_max_time": ("float", _num(0.0, 600.0, lo_open=True), "s, (0, 600]"),
    "publish_overlay": ("bool", lambda v: "", "publish the feature-point overlay (run time)"),
    "torch_threads": ("int", _num(1, 256), "CNN inference threads, [1, 256]"),
    "executor": ("str", _choice("single", "multi"), "single | multi"),
}
assert set(SPECS) == {f.name for f in dataclasses.fields(ControllerParams)}


def _coerce(kind: str, value: Any) -> Any:
    """The value as the parameter's type, or raise ValueError saying which type was expected."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError("must be a boolean")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError("must be a list")
    if kind == "strs":
        if not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of strings")
        return tuple(value)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError("must be a list of numbers")
    return tuple(float(v) for v in value)


def check_value(name: str, value: Any, source: str = "") -> Any:
    """The typed value of parameter ``name``; ParameterError naming source, key and value otherwise."""
    where = f"{source}: " if source else ""
    if name not in SPECS:
        raise ParameterError(f"{where}unknown parameter {name!r} (value {value!r}); known: {sorted(SPECS)}")
    kind, check, _ = SPECS[name]
    try:
        typed = _coerce(kind, value)
        err = check(typed)
    except ValueError as exc:
        err = str(exc)
    if err:
        raise ParameterError(f"{where}{name}: {err}, got {value!r}")
    return typed


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


class _ParamsLoader(yaml.SafeLoader):
    """Safe YAML plus the tuple tag `ros2 launch` writes into the parameter files it generates."""


_ParamsLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))


def param_sources(argv: Sequence[str], node_name: str = "gps_controller") -> dict[str, str]:
    """Which parameter file (or '-p') set each key, from a ``--ros-args`` command line. Also rejects
    an empty or unreadable parameter file (ParameterError naming the file)."""
    sources: dict[str, str] = {}
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--params-file" and i + 1 < len(args):
            path = args[i + 1]
            try:
                with open(path) as f:
                    doc = yaml.load(f, Loader=_ParamsLoader)
            except (OSError, yaml.YAMLError) as exc:
                raise ParameterError(f"{path}: cannot read the parameter file: {exc}") from None
            if not isinstance(doc, dict) or not doc:
                raise ParameterError(f"{path}: parameter file is empty (expected '<node>: ros__parameters: ...')")
            for node_key, section in doc.items():
                if not _matches(str(node_key), node_name) or not isinstance(section, dict):
                    continue
                for key in _flatten(section.get("ros__parameters") or {}):
                    sources[key] = path
        elif arg in ("-p", "--param") and i + 1 < len(args) and ":=" in args[i + 1]:
            sources[args[i + 1].split(":=", 1)[0]] = f"-p {args[i + 1]}"
    return sources


def _matches(key: str, node_name: str) -> bool:
    return key in ("/**", node_name) or key.endswith("/" + node_name) or key.endswith("/**")


def _flatten(section: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for k, v in section.items():
        name = f"{prefix}{k}"
        keys += _flatten(v, name + ".") if isinstance(v, dict) else [name]
    return keys
