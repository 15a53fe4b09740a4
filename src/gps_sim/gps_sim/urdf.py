"""URDF of the PR2-style arm for Gazebo (gz_ros2_control), generated from the MuJoCo model.

The MJCF (gps_core/models/pr2_arm.xml) is the single source of the kinematics and dynamics: body offsets and
orientations, joint axes, ranges, damping, friction, link masses, centres of mass and inertias,
effort limits (actuator ctrlrange, and forcerange where set) and the geoms are read from the compiled
MuJoCo model, so the URDF cannot drift from what the simulation runs. What MJCF has no field for is
added here: joint velocity limits (the PR2's), the ros2_control block (effort command interfaces,
position/velocity state interfaces, gz_ros2_control/GazeboSimSystem) and a Gazebo camera sensor at
the pose of the MJCF head camera. Joint armature has no URDF field; it is listed in a comment.

    python -m gps_sim.urdf > src/gps_sim/gps_sim/models/pr2_arm.urdf

The committed file is checked against a fresh generation by the tests.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import mujoco
import numpy as np

from gps_core.kinematics import ARM_MODEL

MODELS_DIR = Path(__file__).resolve().parent / "models"
MJCF = ARM_MODEL
URDF = MODELS_DIR / "pr2_arm.urdf"

ROBOT_NAME = "pr2_arm"   # the Gazebo model name (gazebo.launch.py spawns `-name pr2_arm`)
BASE_LINK = "base_link"
ARM_ROOT = "torso_lift_link"
TOOL_FRAME = "r_gripper_tool_frame"
CAMERA = "head_camera"
#: Camera frames, named as on the PR2 (the sim node stamps images with the optical frame).
CAMERA_LINK = "head_mount_kinect_rgb_link"              # Gazebo camera convention: x forward, y left, z up
CAMERA_OPTICAL_FRAME = "head_mount_kinect_rgb_optical_frame"  # z forward, x right, y down
#: gz_ros2_control's controller_manager parameters; relative to the repository root. The launch file
#: replaces it with an absolute path (gz_ros2_control does not resolve package paths).
CONTROLLERS_YAML = "config/gazebo_controllers.yaml"
#: PR2 right arm velocity limits (rad/s; pr2_description). MJCF has no velocity limits.
VELOCITY_LIMITS = {
    "r_shoulder_pan_joint": 2.088, "r_shoulder_lift_joint": 2.082, "r_upper_arm_roll_joint": 3.27,
    "r_elbow_flex_joint": 3.3, "r_forearm_roll_joint": 3.6, "r_wrist_flex_joint": 3.078,
    "r_wrist_roll_joint": 3.6,
}
#: Nominal inertial of the massless links welded to the world (base, torso): a link without mass would be
#: dropped by SDFormat, with everything below it.
BASE_MASS = 1.0
BASE_INERTIA = 0.01


def _f(x: float) -> str:
    """Number formatting: short, exact for the model's decimals, no '-0'."""
    x = float(x)
    if abs(x) < 1e-12:
        return "0"
    return f"{x:.10g}"


def _v(xs) -> str:
    return " ".join(_f(x) for x in xs)


def quat_to_rpy(q) -> np.ndarray:
    """MuJoCo quaternion (w, x, y, z) -> URDF roll, pitch, yaw (fixed axes X, Y, Z)."""
    return rot_to_rpy(quat_to_rot(q))


def quat_to_rot(q) -> np.ndarray:
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, np.asarray(q, dtype=float) / np.linalg.norm(q))
    return m.reshape(3, 3)


def rot_to_rpy(r: np.ndarray) -> np.ndarray:
    """R = Rz(yaw) Ry(pitch) Rx(roll)."""
    pitch = math.asin(-max(-1.0, min(1.0, r[2, 0])))
    if abs(r[2, 0]) < 1.0 - 1e-9:
        roll = math.atan2(r[2, 1], r[2, 2])
        yaw = math.atan2(r[1, 0], r[0, 0])
    else:  # gimbal lock: put everything in yaw
        roll = 0.0
        yaw = math.atan2(-r[0, 1], r[1, 1])
    return np.array([roll, pitch, yaw])


def rpy_to_rot(rpy) -> np.ndarray:
    r, p, y = (float(a) for a in rpy)
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _origin(xyz, rpy=(0, 0, 0)) -> str:
    return f'<origin xyz="{_v(xyz)}" rpy="{_v(rpy)}"/>'


def _geometry(model: mujoco.MjModel, g: int) -> str | None:
    t, s = model.geom_type[g], model.geom_size[g]
    if t == mujoco.mjtGeom.mjGEOM_BOX:
        return f'<box size="{_v(2 * s)}"/>'
    if t == mujoco.mjtGeom.mjGEOM_SPHERE:
        return f'<sphere radius="{_f(s[0])}"/>'
    if t == mujoco.mjtGeom.mjGEOM_CYLINDER:
        return f'<cylinder radius="{_f(s[0])}" length="{_f(2 * s[1])}"/>'
    if t == mujoco.mjtGeom.mjGEOM_CAPSULE:
        # URDF 1.0 has no capsule: the cylinder spanning the capsule's full length.
        return f'<cylinder radius="{_f(s[0])}" length="{_f(2 * s[1] + 2 * s[0])}"/>'
    return None


def _geoms(model: mujoco.MjModel, body: int, indent: str, visual_only: bool = False) -> list[str]:
    out = []
    for g in range(model.ngeom):
        if model.geom_bodyid[g] != body:
            continue
        if visual_only and (model.geom_contype[g] or model.geom_conaffinity[g]):
            continue
        geo = _geometry(model, g)
        if geo is None:
            continue
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) or f"geom{g}"
        origin = _origin(model.geom_pos[g], quat_to_rpy(model.geom_quat[g]))
        rgba = model.geom_rgba[g]
        out += [f'{indent}<visual name="{name}">', f"{indent}  {origin}",
                f"{indent}  <geometry>{geo}</geometry>",
                f'{indent}  <material name="{name}_color"><color rgba="{_v(np.round(rgba.astype(float), 4))}"/></material>',
                f"{indent}</visual>"]
        if model.geom_contype[g] or model.geom_conaffinity[g]:
            out += [f'{indent}<collision name="{name}">', f"{indent}  {origin}",
                    f"{indent}  <geometry>{geo}</geometry>", f"{indent}</collision>"]
    return out


def _nominal_inertial(indent: str) -> list[str]:
    return [f"{indent}<inertial>", f"{indent}  {_origin((0, 0, 0))}", f'{indent}  <mass value="{_f(BASE_MASS)}"/>',
            f'{indent}  <inertia ixx="{_f(BASE_INERTIA)}" ixy="0" ixz="0" iyy="{_f(BASE_INERTIA)}" iyz="0" '
            f'izz="{_f(BASE_INERTIA)}"/>', f"{indent}</inertial>"]


def _inertial(model: mujoco.MjModel, body: int, indent: str) -> list[str]:
    if model.body_mass[body] <= 0:
        # A massless link in the chain (torso_lift_link: fixed to the base) makes SDFormat before Harmonic
        # drop it with every link below it; it is welded to the world, so its nominal mass moves nothing.
        return _nominal_inertial(indent)
    i = model.body_inertia[body]
    return [f"{indent}<inertial>",
            f"{indent}  {_origin(model.body_ipos[body], quat_to_rpy(model.body_iquat[body]))}",
            f'{indent}  <mass value="{_f(model.body_mass[body])}"/>',
            f'{indent}  <inertia ixx="{_f(i[0])}" ixy="0" ixz="0" iyy="{_f(i[1])}" iyz="0" izz="{_f(i[2])}"/>',
            f"{indent}</inertial>"]


def joint_effort_limits(model: mujoco.MjModel) -> dict[str, float]:
    """Effort limit per actuated joint: |ctrlrange| x gear, capped by forcerange where it is set."""
    out = {}
    for a in range(model.nu):
        j = model.actuator_trnid[a, 0]
        gear = abs(model.actuator_gear[a, 0])
        lim = float(np.max(np.abs(model.actuator_ctrlrange[a]))) * gear if model.actuator_ctrllimited[a] else math.inf
        if model.actuator_forcelimited[a]:
            lim = min(lim, float(np.max(np.abs(model.actuator_forcerange[a]))))
        out[mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j)] = lim
    return out


def load_arm_model(path: Path | str = MJCF) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(path))


def generate_urdf(model: mujoco.MjModel | None = None, *, image_width: int = 320, image_height: int = 240,
                  camera_rate_hz: float = 20.0, controllers_yaml: str = CONTROLLERS_YAML,
                  gravity: bool = False) -> str:
    """The URDF (with ros2_control block and camera sensor) of the arm in `model` (default: pr2_arm.xml).

    The camera's horizontal field of view is derived from the MJCF camera's vertical one and the
    image aspect ratio (the MJCF camera renders the 240x240 centre crop of a 320x240 image).
    gravity=False turns gravity off per link in Gazebo, as the simulation does (the PR2 arm is
    spring-counterbalanced).
    """
    m = load_arm_model() if model is None else model
    root = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, ARM_ROOT)
    if root < 0:
        raise ValueError(f"model has no body {ARM_ROOT!r}")
    efforts = joint_effort_limits(m)
    lines = ['<?xml version="1.0"?>',
             "<!-- GENERATED by `python -m gps_sim.urdf` from gps_core/models/pr2_arm.xml; do not edit by hand.",
             "     World frame = PR2 base_link, torso fixed at zero lift (as in the MuJoCo model).",
             "     Joint armature (reflected rotor inertia, MuJoCo only; URDF has no field for it): "
             + ", ".join(f"{mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j)} {_f(m.dof_armature[m.jnt_dofadr[j]])}"
                         for j in range(m.njnt) if m.jnt_bodyid[j] != 0) + " kg m^2. -->",
             f'<robot name="{ROBOT_NAME}">',
             '  <link name="world"/>',
             '  <joint name="world_joint" type="fixed">',
             '    <parent link="world"/>', f'    <child link="{BASE_LINK}"/>', f"    {_origin((0, 0, 0))}",
             "  </joint>",
             f'  <link name="{BASE_LINK}">', *_nominal_inertial("    ")]
    # The visual-only geoms of the world body are the PR2 base and torso (the floor and table are scene).
    lines.extend(_geoms(m, 0, "    ", visual_only=True))
    lines.append("  </link>")

    arm_links: list[str] = []
    actuated: list[str] = []

    def add_body(b: int, parent_link: str) -> None:
        name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, b)
        arm_links.append(name)
        joints = [j for j in range(m.njnt) if m.jnt_bodyid[j] == b]
        if len(joints) > 1:
            raise ValueError(f"body {name!r} has {len(joints)} joints; URDF allows one")
        rpy = quat_to_rpy(m.body_quat[b])
        if joints:
            j = joints[0]
            if m.jnt_type[j] != mujoco.mjtJoint.mjJNT_HINGE:
                raise ValueError("only hinge joints are supported")
            if np.any(np.abs(m.jnt_pos[j]) > 1e-12):
                raise ValueError(f"joint of body {name!r} is not at the body origin")
            jname = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j)
            dof = m.jnt_dofadr[j]
            limited = bool(m.jnt_limited[j])
            effort = efforts.get(jname, math.inf)
            if not math.isfinite(effort):
                raise ValueError(f"joint {jname!r} has no effort limit (actuator ctrlrange)")
            lim = f'effort="{_f(effort)}" velocity="{_f(VELOCITY_LIMITS[jname])}"'
            if limited:
                lim = f'lower="{_f(m.jnt_range[j, 0])}" upper="{_f(m.jnt_range[j, 1])}" ' + lim
            lines.extend([
                f'  <joint name="{jname}" type="{"revolute" if limited else "continuous"}">',
                f'    <parent link="{parent_link}"/>', f'    <child link="{name}"/>',
                f"    {_origin(m.body_pos[b], rpy)}",
                f'    <axis xyz="{_v(m.jnt_axis[j])}"/>',
                f"    <limit {lim}/>",
                f'    <dynamics damping="{_f(m.dof_damping[dof])}" friction="{_f(m.dof_frictionloss[dof])}"/>',
                "  </joint>"])
            actuated.append(jname)
        else:
            lines.extend([f'  <joint name="{parent_link}_to_{name}" type="fixed">',
                          f'    <parent link="{parent_link}"/>', f'    <child link="{name}"/>',
                          f"    {_origin(m.body_pos[b], rpy)}", "  </joint>"])
        lines.append(f'  <link name="{name}">')
        lines.extend(_inertial(m, b, "    "))
        lines.extend(_geoms(m, b, "    "))
        lines.append("  </link>")
        for s in range(m.nsite):
            if m.site_bodyid[s] == b:
                sname = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_SITE, s)
                lines.extend([f'  <joint name="{sname}_joint" type="fixed">',
                              f'    <parent link="{name}"/>', f'    <child link="{sname}"/>',
                              f"    {_origin(m.site_pos[s], quat_to_rpy(m.site_quat[s]))}", "  </joint>",
                              f'  <link name="{sname}"/>'])
        for c in range(m.nbody):
            if c != b and m.body_parentid[c] == b:
                add_body(c, name)

    add_body(root, BASE_LINK)
    if f'  <link name="{TOOL_FRAME}"/>' not in lines:
        raise ValueError(f"model has no site {TOOL_FRAME!r} on the arm")

    # Camera: MJCF camera frame is x right, y up, looking along -z.
    cam = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA)
    if cam < 0:
        raise ValueError(f"model has no camera {CAMERA!r}")
    if m.cam_bodyid[cam] != 0:
        raise ValueError("the camera must be fixed in the world (base_link) frame")
    r_cam = quat_to_rot(m.cam_quat[cam])
    x_mj, y_mj, z_mj = r_cam[:, 0], r_cam[:, 1], r_cam[:, 2]
    r_link = np.column_stack([-z_mj, -x_mj, y_mj])      # x forward, y left, z up
    r_link_optical = r_link.T @ np.column_stack([x_mj, -y_mj, -z_mj])
    fovy = math.radians(float(m.cam_fovy[cam]))
    hfov = 2.0 * math.atan(math.tan(fovy / 2.0) * image_width / image_height)
    lines.extend([
        f'  <joint name="{CAMERA_LINK}_joint" type="fixed">',
        f'    <parent link="{BASE_LINK}"/>', f'    <child link="{CAMERA_LINK}"/>',
        f"    {_origin(m.cam_pos[cam], rot_to_rpy(r_link))}", "  </joint>",
        f'  <link name="{CAMERA_LINK}"/>',
        f'  <joint name="{CAMERA_OPTICAL_FRAME}_joint" type="fixed">',
        f'    <parent link="{CAMERA_LINK}"/>', f'    <child link="{CAMERA_OPTICAL_FRAME}"/>',
        f"    {_origin((0, 0, 0), rot_to_rpy(r_link_optical))}", "  </joint>",
        f'  <link name="{CAMERA_OPTICAL_FRAME}"/>'])

    # ros2_control: torque (effort) commands, position/velocity state, Gazebo hardware.
    lines.extend(['  <ros2_control name="GazeboSimSystem" type="system">',
                  "    <hardware>", "      <plugin>gz_ros2_control/GazeboSimSystem</plugin>", "    </hardware>"])
    for jname in actuated:
        e = efforts[jname]
        lines.extend([f'    <joint name="{jname}">',
                      '      <command_interface name="effort">',
                      f'        <param name="min">{_f(-e)}</param>', f'        <param name="max">{_f(e)}</param>',
                      "      </command_interface>",
                      '      <state_interface name="position">',
                      '        <param name="initial_value">0.0</param>', "      </state_interface>",
                      '      <state_interface name="velocity"/>', "    </joint>"])
    lines.extend(["  </ros2_control>",
                  "  <gazebo>",
                  '    <plugin filename="gz_ros2_control-system" name="gz_ros2_control::GazeboSimROS2ControlPlugin">',
                  f"      <parameters>{controllers_yaml}</parameters>",
                  "    </plugin>",
                  "  </gazebo>"])
    if not gravity:
        for name in arm_links:
            lines.append(f'  <gazebo reference="{name}"><gravity>false</gravity></gazebo>')
    lines.extend([
        f'  <gazebo reference="{CAMERA_LINK}">',
        f'    <sensor name="{CAMERA}" type="camera">',
        "      <always_on>true</always_on>",
        f"      <update_rate>{_f(camera_rate_hz)}</update_rate>",
        "      <topic>camera/image_raw</topic>",
        f"      <gz_frame_id>{CAMERA_OPTICAL_FRAME}</gz_frame_id>",
        "      <camera>",
        "        <camera_info_topic>camera/camera_info</camera_info_topic>",
        f"        <horizontal_fov>{_f(round(hfov, 6))}</horizontal_fov>",
        f"        <image><width>{int(image_width)}</width><height>{int(image_height)}</height>"
        "<format>R8G8B8</format></image>",
        "        <clip><near>0.05</near><far>10</far></clip>",
        "      </camera>",
        "    </sensor>",
        "  </gazebo>",
        "</robot>"])
    return "\n".join(lines) + "\n"


# --- a small URDF forward kinematics (numpy), used by tests and usable without pinocchio ------------

def parse_urdf_chain(text: str, tip: str = TOOL_FRAME, root: str = BASE_LINK) -> list[dict]:
    """Joints from root to tip: dicts with name, type, xyz, rpy, axis, lower, upper, effort, velocity."""
    import xml.etree.ElementTree as ET

    robot = ET.fromstring(text)
    by_child = {}
    for j in robot.findall("joint"):
        o = j.find("origin")
        ax = j.find("axis")
        lim = j.find("limit")
        by_child[j.find("child").get("link")] = {
            "name": j.get("name"), "type": j.get("type"), "parent": j.find("parent").get("link"),
            "xyz": np.array([float(v) for v in (o.get("xyz", "0 0 0") if o is not None else "0 0 0").split()]),
            "rpy": np.array([float(v) for v in (o.get("rpy", "0 0 0") if o is not None else "0 0 0").split()]),
            "axis": np.array([float(v) for v in (ax.get("xyz") if ax is not None else "1 0 0").split()]),
            **({k: float(lim.get(k)) for k in ("lower", "upper", "effort", "velocity") if lim.get(k) is not None}
               if lim is not None else {}),
        }
    chain, link = [], tip
    while link != root:
        if link not in by_child:
            raise ValueError(f"no joint chain from {root!r} to {tip!r}")
        chain.append(by_child[link])
        link = chain[-1]["parent"]
    return chain[::-1]


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    a = axis / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def urdf_fk(chain: list[dict], q) -> tuple[np.ndarray, np.ndarray]:
    """Position and rotation of the chain's tip in the root frame; q: one angle per movable joint."""
    q = list(np.asarray(q, dtype=float).reshape(-1))
    p, r = np.zeros(3), np.eye(3)
    for j in chain:
        p = p + r @ j["xyz"]
        r = r @ rpy_to_rot(j["rpy"])
        if j["type"] in ("revolute", "continuous"):
            r = r @ _axis_angle(j["axis"], q.pop(0))
        elif j["type"] != "fixed":
            raise ValueError(f"unsupported joint type {j['type']!r}")
    if q:
        raise ValueError("more joint angles than movable joints")
    return p, r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gps_sim.urdf", description=__doc__.split("\n")[0])
    ap.add_argument("--mjcf", default=str(MJCF), help="MuJoCo model to convert (default: %(default)s)")
    ap.add_argument("--controllers-yaml", default=CONTROLLERS_YAML,
                    help="gz_ros2_control parameters file (default: %(default)s)")
    ap.add_argument("--gravity", action="store_true", help="leave gravity on for the arm links in Gazebo")
    a = ap.parse_args(argv)
    sys.stdout.write(generate_urdf(load_arm_model(a.mjcf), controllers_yaml=a.controllers_yaml,
                                   gravity=a.gravity))
    return 0


if __name__ == "__main__":
    sys.exit(main())

