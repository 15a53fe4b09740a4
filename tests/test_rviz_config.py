"""rviz/gps.rviz against the running stack (issue 14): every topic an enabled display shows has a publisher
of the display's message type with a QoS the display can match, data arrives on the ones the simulated
stack publishes outside a visuomotor trial, and every frame it needs (the fixed frame, the frames of
the images and poses, every link of the robot model) is in the TF tree gps_tf publishes.
Also gps_tf's transforms agree with gps_core.kinematics (the MuJoCo arm the controller uses).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import yaml

from testing_helpers import ROOT, call_service, gps_cli, stack_pids, stop_stack

pytestmark = [pytest.mark.ros]

# rviz_default_plugins display class -> message type of its topic
DISPLAY_TYPES = {
    "rviz_default_plugins/RobotModel": "std_msgs/msg/String",
    "rviz_default_plugins/Image": "sensor_msgs/msg/Image",
    "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
    "rviz_default_plugins/Pose": "geometry_msgs/msg/PoseStamped",
}
# tf2_msgs/msg/TFMessage's type hash in ROS 2 Jazzy (what `ros2 topic info -v /tf` shows on a distro).
TF_MESSAGE_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"


def rviz_displays(path=ROOT / "rviz" / "gps.rviz") -> tuple[str, list[dict]]:
    """(fixed frame, enabled displays with a topic: class, topic, reliability, durability)."""
    cfg = yaml.safe_load(path.read_text())
    vm = cfg["Visualization Manager"]
    out = []
    for d in vm["Displays"]:
        if not d.get("Enabled", False):
            continue
        topic = d.get("Topic") or d.get("Description Topic")
        if topic is None:
            continue
        out.append({"class": d["Class"], "topic": topic["Value"], "reliability": topic["Reliability Policy"],
                    "durability": topic["Durability Policy"]})
    return vm["Global Options"]["Fixed Frame"], out


def test_rviz_config_parses_and_names_known_display_types():
    fixed, displays = rviz_displays()
    assert fixed == "base_link"
    assert {d["topic"] for d in displays} >= {"/robot_description", "/camera/image_raw", "/gps/target_pose"}
    for d in displays:
        assert d["class"] in DISPLAY_TYPES, d


def _qos_matches(display: dict, pub_qos) -> bool:
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    if display["reliability"] == "Reliable" and pub_qos.reliability != ReliabilityPolicy.RELIABLE:
        return False
    return not (display["durability"] == "Transient Local" and pub_qos.durability != DurabilityPolicy.TRANSIENT_LOCAL)


def test_every_rviz_topic_and_frame_is_published_by_the_stack(tmp_path, ros_env):
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from tf2_msgs.msg import TFMessage

    from gps_core.kinematics import ArmKinematics
    from gps_core.urdf_tree import UrdfTree
    from gps_msgs.srv import ResetCondition

    fixed, displays = rviz_displays()
    out = tmp_path / "out"
    up = gps_cli(ros_env, out, "up", "--wait-timeout", "90", timeout=150)
    pids = stack_pids(out)
    rclpy.init()
    node = rclpy.create_node("rviz_check")
    got: dict[str, list] = {"tf": [], "tf_static": [], "/robot_description": [], "/camera/image_raw": [],
                            "/gps/target_pose": []}
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(TFMessage, "/tf", lambda m: got["tf"].append(m), 100)
    node.create_subscription(TFMessage, "/tf_static", lambda m: got["tf_static"].append(m), latched)
    node.create_subscription(String, "/robot_description", lambda m: got["/robot_description"].append(m), latched)
    node.create_subscription(Image, "/camera/image_raw", lambda m: got["/camera/image_raw"].append(m), 5)
    node.create_subscription(PoseStamped, "/gps/target_pose", lambda m: got["/gps/target_pose"].append(m), latched)
    try:
        assert up.returncode == 0, up.stderr
        # Publishers and their QoS, as RViz would match them.
        deadline = time.monotonic() + 30
        missing = displays
        while missing and time.monotonic() < deadline:
            missing = []
            for d in displays:
                pubs = node.get_publishers_info_by_topic(d["topic"])
                if not any(p.topic_type == DISPLAY_TYPES[d["class"]] and _qos_matches(d, p.qos_profile) for p in pubs):
                    missing.append(d)
            rclpy.spin_once(node, timeout_sec=0.2)
        assert not missing, f"displays with no matching publisher: {missing}"
        # /tf carries the distro's tf2_msgs/msg/TFMessage (Jazzy type hash), shim or not: RViz would match it.
        tf_pubs = node.get_publishers_info_by_topic("/tf_static")
        assert tf_pubs and all(str(p.topic_type_hash) == TF_MESSAGE_HASH for p in tf_pubs), \
            [str(p.topic_type_hash) for p in tf_pubs]
        # A reset makes the lockstep sim publish its state (joint states -> TF, image, target pose).
        reset = node.create_client(ResetCondition, "/gps_sim/reset")
        q = np.array([-0.3, 0.2, -1.0, -1.2, 0.4, -0.8, 0.6])
        res = call_service(node, reset, ResetCondition.Request(condition=-1, joint_positions=q.tolist()), 30)
        assert res.success, res.message
        deadline = time.monotonic() + 20
        while not all(got[k] for k in got) and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert all(got[k] for k in got), {k: len(v) for k, v in got.items()}
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        stop_stack(ros_env, out, pids)

    urdf = got["/robot_description"][-1].data
    tree = UrdfTree(urdf)
    edges = {}
    for m in got["tf_static"] + got["tf"][-1:]:
        for t in m.transforms:
            edges[t.child_frame_id] = t
    frames = set(edges) | {t.header.frame_id for t in edges.values()}
    needed = {fixed, got["/camera/image_raw"][-1].header.frame_id, got["/gps/target_pose"][-1].header.frame_id,
              *tree.links}
    assert needed <= frames, f"frames RViz needs that TF lacks: {needed - frames}"

    # The TF chain base_link -> tool frame at the reset's q is the controller's kinematics (MuJoCo FK).
    def pose(child: str) -> np.ndarray:
        t = np.eye(4)
        while child != fixed:
            tr = edges[child].transform
            x, y, z, w = tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w
            m = np.eye(4)
            m[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
            m[:3, 3] = [tr.translation.x, tr.translation.y, tr.translation.z]
            t = m @ t
            child = edges[child].header.frame_id
        return t

    tool = pose("r_gripper_tool_frame")
    pos, rot = ArmKinematics().tool_pose(q)
    assert np.allclose(tool[:3, 3], pos, atol=1e-5), (tool[:3, 3], pos)
    assert np.allclose(tool[:3, :3], np.asarray(rot).reshape(3, 3), atol=1e-5)
