"""ROS 2 node `gps_tf`: robot_state_publisher's job in rclpy (its C++ node is not on PyPI).

Reads the URDF (parameter `urdf_file`, default the arm's gps_sim/models/pr2_arm.urdf), publishes it on
`robot_description` (std_msgs/String, transient local: what RViz's RobotModel display reads), the fixed
joints once on `tf_static` and, for every joint_states message, the moving joints on `tf`, stamped
with the joint state's stamp. Topic names are relative, so each robot namespace has its own tree.
A joint state naming unknown joints or carrying NaN is skipped with a throttled log line.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import rclpy
from geometry_msgs.msg import TransformStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage

from gps_core.logging_bridge import install_ros_logging
from gps_core.node_params import refuse_undeclared
from gps_core.spin import spin_guarded
from gps_core.urdf_tree import UrdfTree, matrix_to_quat_xyzw

URDF = Path(__file__).resolve().parent / "models" / "pr2_arm.urdf"
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)


def transform_msg(t: np.ndarray, parent: str, child: str, stamp) -> TransformStamped:
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id, msg.child_frame_id = parent, child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = map(float, t[:3, 3])
    q = matrix_to_quat_xyzw(t[:3, :3])
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = map(float, q)
    return msg


class TfPublisher(Node):
    def __init__(self, **kwargs):
        super().__init__("gps_tf", **kwargs)
        # read once here: a later change could not rebuild the tree already published as robot_description
        self.declare_parameter("urdf_file", str(URDF), ParameterDescriptor(read_only=True))
        refuse_undeclared(self, SetParametersResult)
        path = Path(self.get_parameter("urdf_file").value)
        self.urdf_xml = path.read_text()
        self.tree = UrdfTree(self.urdf_xml)
        self.moving = {j.name: j for j in self.tree.moving_joints}
        self.description_pub = self.create_publisher(String, "robot_description", LATCHED)
        self.static_pub = self.create_publisher(TFMessage, "tf_static", LATCHED)
        self.tf_pub = self.create_publisher(TFMessage, "tf", TF_QOS)
        self.sub = self.create_subscription(JointState, "joint_states", self._on_joint_states, 10)
        self.description_pub.publish(String(data=self.urdf_xml))
        stamp = self.get_clock().now().to_msg()
        self.static_pub.publish(TFMessage(transforms=[
            transform_msg(self.tree.joint_transform(j), j.parent, j.child, stamp) for j in self.tree.fixed_joints]))
        self.get_logger().info(f"gps_tf: {path.name}, {len(self.moving)} moving joints, "
                               f"{len(self.tree.fixed_joints)} fixed")

    def transforms(self, msg: JointState) -> list[TransformStamped]:
        """TF of the moving joints the message names; raises ValueError on unknown names or NaN."""
        if len(msg.position) != len(msg.name):
            raise ValueError(f"{len(msg.name)} names but {len(msg.position)} positions")
        out = []
        for name, q in zip(msg.name, msg.position, strict=True):
            joint = self.moving.get(name)
            if joint is None:
                continue  # e.g. a real PR2's other joints: robot_state_publisher ignores them too
            if not math.isfinite(q):
                raise ValueError(f"joint {name!r}: position {q}")
            out.append(transform_msg(self.tree.joint_transform(joint, float(q)), joint.parent, joint.child,
                                     msg.header.stamp))
        return out

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            tfs = self.transforms(msg)
        except ValueError as exc:
            self.get_logger().warning(f"joint_states skipped: {exc}", throttle_duration_sec=1.0)
            return
        if tfs:
            self.tf_pub.publish(TFMessage(transforms=tfs))


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=sys.argv if args is None else args)
    node = None
    try:
        node = TfPublisher()
        install_ros_logging(node)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin_guarded(executor, node.get_logger())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
