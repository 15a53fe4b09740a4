"""ROS 2 node `gps_sim`: the embedded arm behaving like a robot's ros2_control + camera drivers.

Topics (relative names, so a namespace runs several robots side by side):
  publishes  joint_states (sensor_msgs/JointState), camera/image_raw (rgb8), camera/camera_info,
             gps/target_pose (PoseStamped), clock (rosgraph_msgs/Clock, sim time; relative, so each
             robot namespace has its own: /clock, /robot1/clock, ...),
             gps_sim/rejected_commands (std_msgs/UInt64, transient local: rejected command count)
  subscribes effort_controller/commands (std_msgs/Float64MultiArray, RELIABLE)
  service    gps_sim/reset (gps_msgs/srv/ResetCondition)

Modes: lockstep (each valid command advances one control period, then state and image are
published) and realtime (a 1x timer steps with the last valid command).
Joint states and images are published RELIABLE with KEEP_LAST 5: sensor-data (BEST_EFFORT)
subscribers match them, and RELIABLE subscribers (lockstep rollouts) lose nothing.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, UInt64

from gps_core.logging_bridge import install_ros_logging
from gps_core.node_params import (
    ParameterError,
    check_value,
    nonempty,
    num_range,
    one_of,
    param_sources,
    refuse_undeclared,
)
from gps_core.spin import spin_guarded
from gps_core.tasks import CONDITION_SETS, CONDITION_SETS_HELP, load_task, repo_root
from gps_core.wire import array_to_pose, image_to_msg
from gps_msgs.srv import ResetCondition
from gps_sim.arm_sim import ArmSim

STATE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: A reset's target_pose must lie within this distance of the robot's base (m): the arm reaches about 1 m.
MAX_TARGET_DISTANCE = 10.0


def _stamp(seconds: float) -> Time:
    sec = int(math.floor(seconds))
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


#: name -> (kind, check, description): the node's typed parameters (config/sim.yaml documents them).
SPECS = {
    "task": ("str", nonempty, "config/tasks/<task>.yaml, or a path to a task YAML"),
    "mode": ("str", one_of("lockstep", "realtime"), "lockstep | realtime"),
    "image_size": ("int", num_range(8, 2048), "square camera images, px [8, 2048]"),
    "publish_images": ("bool", lambda v: "", "publish camera images (run time)"),
    "gravity": ("bool", lambda v: "", "gravity on the arm"),
    "seed": ("int", num_range(0, 2**32 - 1), "seed of the start-up reset, [0, 2^32 - 1]"),
    "condition": ("int", num_range(0, 1_000_000), "condition at start-up (of condition_set)"),
    "condition_set": ("str", one_of(*CONDITION_SETS), CONDITION_SETS_HELP),
    "publish_clock": ("bool", lambda v: "", "publish the sim's clock"),
    "frame_id": ("str", nonempty, "frame of joint states and the target pose"),
    "camera_frame_id": ("str", nonempty, "frame of the camera images"),
}
DEFAULTS = {"task": "reach", "mode": "lockstep", "image_size": 64, "publish_images": True, "gravity": False,
            "seed": 0, "condition": 0, "condition_set": "train", "publish_clock": True, "frame_id": "base_link",
            "camera_frame_id": "head_mount_kinect_rgb_optical_frame"}
#: What ``ros2 param set`` may change (applied at once); the rest shape the simulation or its topics and
#: are declared read-only, so a set is refused with a reason instead of reporting success and doing nothing.
RUNTIME = frozenset({"publish_images"})
#: Parameters every rclpy node may carry; not the sim's to check.
ROS_BUILTIN = frozenset({"use_sim_time", "start_type_description_service"})


class SimNode(Node):
    def __init__(self, argv: list[str] | None = None, **kwargs):
        super().__init__("gps_sim", **kwargs)
        p = self._declare_parameters(list(sys.argv if argv is None else argv))
        self.mode = p["mode"]
        self.publish_images = p["publish_images"]
        self.publish_clock = p["publish_clock"]
        self.frame_id, self.camera_frame_id = p["frame_id"], p["camera_frame_id"]
        self.sim = ArmSim(p["task"], image_size=p["image_size"], render_images=False, gravity=p["gravity"])
        n = self.sim.num_conditions(p["condition_set"])
        if p["condition"] >= n:
            raise ParameterError(f"{self._sources.get('condition', 'default')}: condition: set "
                                 f"{p['condition_set']!r} of task {p['task']!r} has {n} conditions, "
                                 f"got {p['condition']}")
        self.sim.reset(p["condition"], seed=p["seed"], condition_set=p["condition_set"])
        refuse_undeclared(self, SetParametersResult)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.command = np.zeros(self.sim.dU)
        self.rejected_commands = 0
        self.steps = 0
        self.clock_time = 0.0  # monotonic sim time across resets (the /clock the node publishes)

        self.joint_pub = self.create_publisher(JointState, "joint_states", STATE_QOS)
        self.image_pub = self.create_publisher(
            Image, "camera/image_raw", STATE_QOS)
        self.info_pub = self.create_publisher(CameraInfo, "camera/camera_info", STATE_QOS)
        self.target_pub = self.create_publisher(PoseStamped, "gps/target_pose", LATCHED_QOS)
        self.rejected_pub = self.create_publisher(UInt64, "gps_sim/rejected_commands", LATCHED_QOS)
        self.clock_pub = self.create_publisher(Clock, "clock", 10) if self.publish_clock else None
        self.command_sub = self.create_subscription(
            Float64MultiArray, "effort_controller/commands", self._on_command, COMMAND_QOS)
        self.reset_srv = self.create_service(ResetCondition, "gps_sim/reset", self._on_reset)
        self.timer = None
        if self.mode == "realtime":
            self.timer = self.create_timer(self.sim.control_dt, self._on_timer)
        self._camera_info = self._make_camera_info()
        self.rejected_pub.publish(UInt64(data=0))
        self.publish_state()
        self.get_logger().info(
            f"gps_sim: task {self.sim.task.name}, {self.mode}, images {self.publish_images} "
            f"({self.sim.image_size}px), gravity {self.sim.gravity}")

    def _declare_parameters(self, argv: list[str]) -> dict:
        """The typed parameters; an unknown key (a typo must not fall back to a default), a bad value or
        a task that does not load raises ParameterError naming where it came from, the key and the value."""
        self._sources = sources = param_sources(argv, self.get_name())
        for name in sorted(set(self._parameter_overrides) - set(SPECS) - ROS_BUILTIN):
            raise ParameterError(f"{sources.get(name, 'parameters')}: unknown parameter {name!r} "
                                 f"(value {self._parameter_overrides[name].value!r}); known: {sorted(SPECS)}")
        values = {}
        for name, (_, _, description) in SPECS.items():
            fixed = name not in RUNTIME
            descriptor = ParameterDescriptor(description=description + ("" if fixed else " (run time)"),
                                             read_only=fixed, dynamic_typing=True)
            value = self.declare_parameter(name, DEFAULTS[name], descriptor).value
            values[name] = check_value(SPECS, name, value, sources.get(name, "default"))
        try:
            load_task(values["task"])
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ParameterError(f"{sources.get('task', 'default')}: task: does not load ({exc}), "
                                 f"got {values['task']!r}") from None
        return values

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Run-time changes (read-only ones never get here: rclpy refuses them with their name)."""
        try:
            typed = {x.name: check_value(SPECS, x.name, x.value) for x in params if x.name not in ROS_BUILTIN}
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if "publish_images" in typed:
            self.publish_images = typed["publish_images"]
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ messages
    def _make_camera_info(self) -> CameraInfo:
        n = self.sim.image_size
        fovy = math.radians(float(self.sim.model.cam_fovy[0]))
        f = (n / 2) / math.tan(fovy / 2)
        c = n / 2
        info = CameraInfo(height=n, width=n, distortion_model="plumb_bob")
        info.d = [0.0] * 5
        info.k = [f, 0.0, c, 0.0, f, c, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [f, 0.0, c, 0.0, 0.0, f, c, 0.0, 0.0, 0.0, 1.0, 0.0]
        info.header.frame_id = self.camera_frame_id
        return info

    def publish_state(self) -> None:
        stamp = _stamp(self.clock_time)
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=stamp))
        js = JointState(name=list(self.sim.joint_names), position=self.sim.joint_positions().tolist(),
                        velocity=self.sim.joint_velocities().tolist(), effort=self.sim.applied_efforts().tolist())
        js.header.stamp = stamp
        js.header.frame_id = self.frame_id
        self.joint_pub.publish(js)
        pose = PoseStamped(pose=array_to_pose(self.sim.target_pose()))
        pose.header.stamp, pose.header.frame_id = stamp, self.frame_id
        self.target_pub.publish(pose)
        if self.publish_images:
            self.image_pub.publish(image_to_msg(self.sim.render(), stamp=stamp, frame_id=self.camera_frame_id))
            self._camera_info.header.stamp = stamp
            self.info_pub.publish(self._camera_info)

    def advance(self) -> None:
        self.sim.step(self.command)
        self.steps += 1
        self.clock_time += self.sim.control_dt
        self.publish_state()

    # ----------------------------------------------------------------- callbacks
    def _reject(self, reason: str) -> None:
        self.rejected_commands += 1
        self.rejected_pub.publish(UInt64(data=self.rejected_commands))
        self.get_logger().error(f"ignoring effort command: {reason} (rejected so far: {self.rejected_commands})",
                                throttle_duration_sec=1.0)

    def _on_command(self, msg: Float64MultiArray) -> None:
        u = np.asarray(msg.data, dtype=float)
        if u.shape != (self.sim.dU,):
            self._reject(f"expected {self.sim.dU} values, got {u.size}")
            return
        if not np.all(np.isfinite(u)):
            self._reject("contains NaN or Inf")
            return
        self.command = u
        if self.mode == "lockstep":
            self.advance()

    def _on_timer(self) -> None:
        self.advance()

    def _on_reset(self, request: ResetCondition.Request, response: ResetCondition.Response):
        ok, reason = self.handle_reset(request)
        response.success, response.message = ok, reason
        response.joint_positions = self.sim.joint_positions().tolist()
        return response

    def handle_reset(self, request: ResetCondition.Request) -> tuple[bool, str]:
        cset = request.condition_set or "train"
        if request.condition >= 0:
            if cset not in CONDITION_SETS:
                return False, f"unknown condition_set {cset!r}; expected one of {CONDITION_SETS_HELP}"
            n = self.sim.num_conditions(cset)
            if request.condition >= n:
                return False, f"unknown condition {request.condition} in set {cset!r} ({n} conditions)"
            self.sim.reset(int(request.condition), seed=int(request.seed), condition_set=cset)
        elif request.condition == -1:
            q = np.asarray(request.joint_positions, dtype=float)
            if q.shape != (self.sim.dU,):
                return False, f"joint_positions: expected {self.sim.dU} values, got {q.size}"
            problem = self.sim.joint_position_problem(q)
            if problem:
                return False, f"joint_positions: {problem}"
            pose = None
            if request.set_target_pose:
                pp, qq = request.target_pose.position, request.target_pose.orientation
                pose = np.array([pp.x, pp.y, pp.z, qq.w, qq.x, qq.y, qq.z])
                if not np.all(np.isfinite(pose)):
                    return False, "target_pose contains NaN or Inf"
                if np.linalg.norm(pose[:3]) > MAX_TARGET_DISTANCE:
                    return False, (f"target_pose: position {pose[:3].tolist()} is more than "
                                   f"{MAX_TARGET_DISTANCE:g} m from the robot's base")
                if np.linalg.norm(pose[3:]) < 1e-9:
                    return False, "target_pose orientation quaternion is zero"
            self.sim.set_joint_state(q)
            if pose is not None:
                self.sim.set_target_pose(pose)
        else:
            return False, f"unknown condition {request.condition} (use >= 0, or -1 for explicit joint angles)"
        self.command = np.zeros(self.sim.dU)
        self.publish_state()
        return True, ""


def main(args: list[str] | None = None) -> None:
    args = list(sys.argv if args is None else args)
    default_params = repo_root() / "config" / "sim.yaml"
    if "--params-file" not in args and default_params.exists():
        if "--ros-args" not in args:
            args.append("--ros-args")
        args[args.index("--ros-args") + 1: args.index("--ros-args") + 1] = ["--params-file", str(default_params)]
    rclpy.init(args=args)
    node = None
    try:
        node = SimNode(args)
        install_ros_logging(node)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin_guarded(executor, node.get_logger())
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    except ParameterError as exc:  # configuration: one clear line, no traceback
        print(f"[gps_sim] invalid configuration: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        raise SystemExit(2) from None
    finally:
        if node is not None:
            node.sim.close()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
