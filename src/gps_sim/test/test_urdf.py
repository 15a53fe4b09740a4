"""The Gazebo URDF is generated from the MuJoCo model: same kinematics, limits, efforts; not stale."""

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from gps_core.kinematics import ArmKinematics
from gps_sim import urdf

REPO = Path(__file__).resolve().parents[3]
JOINTS = ["r_shoulder_pan_joint", "r_shoulder_lift_joint", "r_upper_arm_roll_joint", "r_elbow_flex_joint",
          "r_forearm_roll_joint", "r_wrist_flex_joint", "r_wrist_roll_joint"]


@pytest.fixture(scope="module")
def mj():
    return urdf.load_arm_model()


@pytest.fixture(scope="module")
def text():
    return urdf.generate_urdf()


def _joint(root, name):
    (j,) = [j for j in root.findall("joint") if j.get("name") == name]
    return j


def test_committed_urdf_is_fresh(text):
    committed = urdf.URDF.read_text()
    assert committed == text, "pr2_arm.urdf is stale: python -m gps_sim.urdf > src/gps_sim/gps_sim/models/pr2_arm.urdf"


def test_cli_writes_the_same(text, capsys):
    assert urdf.main([]) == 0
    assert capsys.readouterr().out == text


def test_tool_frame_fk_matches_mujoco(text):
    chain = urdf.parse_urdf_chain(text)
    assert [j["name"] for j in chain if j["type"] != "fixed"] == JOINTS
    kin = ArmKinematics()
    rng = np.random.default_rng(0)
    lo = np.array([j.get("lower", -math.pi) for j in chain if j["type"] != "fixed"])
    hi = np.array([j.get("upper", math.pi) for j in chain if j["type"] != "fixed"])
    for _ in range(50):
        q = rng.uniform(lo, hi)
        p, r = urdf.urdf_fk(chain, q)
        p_mj, r_mj = kin.tool_pose(q)
        assert np.linalg.norm(p - p_mj) < 1e-3, q
        assert np.abs(r - r_mj).max() < 1e-3, q
    # Not trivially equal: the pose changes with q.
    p0, _ = urdf.urdf_fk(chain, np.zeros(7))
    p1, _ = urdf.urdf_fk(chain, np.array([0.3, 0.2, 0, -0.5, 0, -0.4, 0]))
    assert np.linalg.norm(p0 - p1) > 0.05


def test_fk_detects_a_changed_offset(text):
    """The comparison has teeth: a 5 mm change of one offset breaks mm-level agreement."""
    bad = text.replace('<origin xyz="0.4 0 0" rpy="0 0 0"/>', '<origin xyz="0.405 0 0" rpy="0 0 0"/>')
    assert bad != text
    p, _ = urdf.urdf_fk(urdf.parse_urdf_chain(bad), np.zeros(7))
    p_mj, _ = ArmKinematics().tool_pose(np.zeros(7))
    assert np.linalg.norm(p - p_mj) > 4e-3


def test_joint_limits_efforts_dynamics_equal_mjcf(mj, text):
    root = ET.fromstring(text)
    for name in JOINTS:
        j = _joint(root, name)
        jid = mujoco.mj_name2id(mj, mujoco.mjtObj.mjOBJ_JOINT, name)
        aid = [a for a in range(mj.nu) if mj.actuator_trnid[a, 0] == jid][0]
        lim = j.find("limit")
        assert float(lim.get("effort")) == pytest.approx(mj.actuator_ctrlrange[aid, 1])
        if mj.jnt_limited[jid]:
            assert j.get("type") == "revolute"
            assert float(lim.get("lower")) == pytest.approx(mj.jnt_range[jid, 0])
            assert float(lim.get("upper")) == pytest.approx(mj.jnt_range[jid, 1])
        else:
            assert j.get("type") == "continuous" and lim.get("lower") is None
        assert float(j.find("dynamics").get("damping")) == pytest.approx(mj.dof_damping[mj.jnt_dofadr[jid]])
        np.testing.assert_allclose([float(v) for v in j.find("axis").get("xyz").split()], mj.jnt_axis[jid])
    # PR2 numbers, as a cross-check of the reading.
    assert float(_joint(root, "r_wrist_flex_joint").find("limit").get("effort")) == 10.0
    assert float(_joint(root, "r_shoulder_pan_joint").find("limit").get("lower")) == -2.2854


def test_link_masses_equal_mjcf(mj, text):
    root = ET.fromstring(text)
    for link in root.findall("link"):
        b = mujoco.mj_name2id(mj, mujoco.mjtObj.mjOBJ_BODY, link.get("name"))
        if b > 0 and mj.body_mass[b] == 0:  # massless in MuJoCo: the nominal inertial SDFormat needs
            assert float(link.find("inertial/mass").get("value")) == urdf.BASE_MASS
            continue
        if b <= 0:
            continue
        assert float(link.find("inertial/mass").get("value")) == pytest.approx(mj.body_mass[b])
        com = [float(v) for v in link.find("inertial/origin").get("xyz").split()]
        np.testing.assert_allclose(com, mj.body_ipos[b], atol=1e-9)
    total = sum(float(m.get("value")) for m in root.findall("link/inertial/mass"))
    massless = sum(1 for link in root.findall("link")
                   if mujoco.mj_name2id(mj, mujoco.mjtObj.mjOBJ_BODY, link.get("name")) > 0
                   and mj.body_mass[mujoco.mj_name2id(mj, mujoco.mjtObj.mjOBJ_BODY, link.get("name"))] == 0)
    assert massless == 1  # torso_lift_link
    assert total == pytest.approx(mj.body_mass[2:9].sum() + urdf.BASE_MASS * (1 + massless))


def test_every_link_carrying_a_moving_joint_has_an_inertial(text):
    """SDFormat before Harmonic drops a massless link with every link below it (the whole arm)."""
    root = ET.fromstring(text)
    parents = {j.find("parent").get("link") for j in root.findall("joint") if j.get("type") != "fixed"}
    for link in root.findall("link"):
        if link.get("name") in parents:
            assert link.find("inertial/mass") is not None, link.get("name")
            assert float(link.find("inertial/mass").get("value")) > 0


def test_ros2_control_block(text):
    root = ET.fromstring(text)
    (rc,) = root.findall("ros2_control")
    assert rc.find("hardware/plugin").text == "gz_ros2_control/GazeboSimSystem"
    assert [j.get("name") for j in rc.findall("joint")] == JOINTS
    for j in rc.findall("joint"):
        assert [c.get("name") for c in j.findall("command_interface")] == ["effort"]
        assert [s.get("name") for s in j.findall("state_interface")] == ["position", "velocity"]
    plugins = [p for g in root.findall("gazebo") for p in g.findall("plugin")]
    assert [p.get("filename") for p in plugins] == ["gz_ros2_control-system"]
    params = plugins[0].find("parameters").text
    assert params == urdf.CONTROLLERS_YAML
    cfg = yaml.safe_load((REPO / params).read_text())
    cm = cfg["controller_manager"]["ros__parameters"]
    assert cm["effort_controller"]["type"] == "effort_controllers/JointGroupEffortController"
    assert cm["joint_state_broadcaster"]["type"] == "joint_state_broadcaster/JointStateBroadcaster"
    assert cfg["effort_controller"]["ros__parameters"]["joints"] == JOINTS
    # Same joint order as the controller node's command topic.
    ctrl = yaml.safe_load((REPO / "config" / "controller.yaml").read_text())
    (node,) = ctrl.values()
    assert node["ros__parameters"]["joint_names"] == JOINTS
    assert node["ros__parameters"]["effort_limits"] == [
        float(_joint(root, n).find("limit").get("effort")) for n in JOINTS]


def test_camera_at_mjcf_head_camera(mj, text):
    root = ET.fromstring(text)
    (sensor,) = root.findall("gazebo/sensor")
    assert sensor.get("type") == "camera"
    assert sensor.find("topic").text == "camera/image_raw"
    width = int(sensor.find("camera/image/width").text)
    height = int(sensor.find("camera/image/height").text)
    hfov = float(sensor.find("camera/horizontal_fov").text)
    assert math.degrees(hfov) == pytest.approx(57.0, abs=0.1)   # Kinect RGB
    # The MJCF camera's vertical FOV is the same as the Gazebo image's.
    cam = mujoco.mj_name2id(mj, mujoco.mjtObj.mjOBJ_CAMERA, "head_camera")
    vfov = 2 * math.atan(math.tan(hfov / 2) * height / width)
    assert math.degrees(vfov) == pytest.approx(mj.cam_fovy[cam], abs=0.01)
    # Optical frame (z forward, x right, y down) = MuJoCo camera (x right, y up, looking along -z).
    chain = urdf.parse_urdf_chain(text, tip=urdf.CAMERA_OPTICAL_FRAME)
    p, r = urdf.urdf_fk(chain, [])
    np.testing.assert_allclose(p, mj.cam_pos[cam], atol=1e-9)
    data = mujoco.MjData(mj)
    mujoco.mj_kinematics(mj, data)
    mujoco.mj_camlight(mj, data)
    r_mj = data.cam_xmat[cam].reshape(3, 3)
    np.testing.assert_allclose(r, r_mj @ np.diag([1.0, -1.0, -1.0]), atol=1e-6)
    # The Gazebo camera looks along its link's x axis: the same direction.
    p_link, r_link = urdf.urdf_fk(urdf.parse_urdf_chain(text, tip=urdf.CAMERA_LINK), [])
    np.testing.assert_allclose(r_link[:, 0], -r_mj[:, 2], atol=1e-6)
    assert sensor.find("gz_frame_id").text == urdf.CAMERA_OPTICAL_FRAME


def test_launch_files_name_the_urdf_and_controllers():
    gz = (REPO / "launch" / "gazebo.launch.py").read_text()
    assert '"models" / "pr2_arm.urdf"' in gz and urdf.URDF.exists()
    assert "effort_controller" in gz and "joint_state_broadcaster" in gz
    assert urdf.CONTROLLERS_YAML.split("/")[-1] in gz
    assert f'"-name", "{urdf.ROBOT_NAME}"' in gz


def test_setup_installs_the_urdf():
    setup = (REPO / "src" / "gps_sim" / "setup.py").read_text()
    assert "gps_sim/models/pr2_arm.urdf" in setup
