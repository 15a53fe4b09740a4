"""The kinematic tree of a URDF and each joint's transform at given joint positions: what
robot_state_publisher computes for TF (parent -> child per joint), without rclpy.

A joint's transform is origin(xyz, rpy) * motion(q), the motion a rotation by q about the axis
(revolute, continuous) or a translation by q along it (prismatic); fixed joints are constant.
"""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class UrdfJoint:
    name: str
    type: str  # revolute | continuous | prismatic | fixed | floating | planar
    parent: str
    child: str
    xyz: np.ndarray  # (3,)
    rpy: np.ndarray  # (3,)
    axis: np.ndarray  # (3,) unit

    @property
    def moving(self) -> bool:
        return self.type in ("revolute", "continuous", "prismatic")


def rpy_matrix(rpy) -> np.ndarray:
    """URDF's fixed-axis roll, pitch, yaw: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation formula."""
    k = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * (kx @ kx)


def matrix_to_quat_xyzw(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix (Shepperd's method: the largest pivot)."""
    tr = np.trace(r)
    if tr > 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s]
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def _floats(text: str | None, default: str, what: str) -> np.ndarray:
    vals = np.array([float(v) for v in (text or default).split()])
    if vals.shape != (3,) or not np.all(np.isfinite(vals)):
        raise ValueError(f"{what}: expected 3 finite numbers, got {text!r}")
    return vals


class UrdfTree:
    """The joints of a URDF (robot_description string), and their transforms."""

    def __init__(self, urdf_xml: str):
        try:
            root = ET.fromstring(urdf_xml)
        except ET.ParseError as exc:
            raise ValueError(f"robot_description is not valid XML: {exc}") from exc
        if root.tag != "robot":
            raise ValueError(f"robot_description: root element is <{root.tag}>, expected <robot>")
        self.links = [link.get("name") for link in root.findall("link")]
        self.joints: list[UrdfJoint] = []
        for j in root.findall("joint"):
            name = j.get("name")
            origin = j.find("origin")
            axis = j.find("axis")
            parent, child = j.find("parent"), j.find("child")
            if parent is None or child is None:
                raise ValueError(f"joint {name!r}: needs <parent> and <child>")
            ax = _floats(axis.get("xyz") if axis is not None else None, "1 0 0", f"joint {name!r} axis")
            if np.linalg.norm(ax) < 1e-12:
                raise ValueError(f"joint {name!r}: zero axis")
            self.joints.append(UrdfJoint(
                name=name, type=j.get("type"), parent=parent.get("link"), child=child.get("link"),
                xyz=_floats(origin.get("xyz") if origin is not None else None, "0 0 0", f"joint {name!r} xyz"),
                rpy=_floats(origin.get("rpy") if origin is not None else None, "0 0 0", f"joint {name!r} rpy"),
                axis=ax / np.linalg.norm(ax)))
        self.by_name = {j.name: j for j in self.joints}

    @classmethod
    def from_file(cls, path: str | Path) -> UrdfTree:
        return cls(Path(path).read_text())

    @property
    def moving_joints(self) -> list[UrdfJoint]:
        return [j for j in self.joints if j.moving]

    @property
    def fixed_joints(self) -> list[UrdfJoint]:
        return [j for j in self.joints if not j.moving]

    @staticmethod
    def joint_transform(joint: UrdfJoint, q: float = 0.0) -> np.ndarray:
        """4x4 transform parent -> child at joint position q."""
        t = np.eye(4)
        t[:3, :3] = rpy_matrix(joint.rpy)
        t[:3, 3] = joint.xyz
        m = np.eye(4)
        if joint.type in ("revolute", "continuous"):
            m[:3, :3] = axis_angle_matrix(joint.axis, q)
        elif joint.type == "prismatic":
            m[:3, 3] = joint.axis * q
        return t @ m

    def link_pose(self, base: str, link: str, positions: dict[str, float]) -> np.ndarray:
        """4x4 pose of `link` in `base`, composing joints along the tree (missing positions count as 0)."""
        parent_joint = {j.child: j for j in self.joints}
        chain = []
        cur = link
        while cur != base:
            if cur not in parent_joint:
                raise KeyError(f"link {link!r} is not below {base!r}")
            j = parent_joint[cur]
            chain.append(j)
            cur = j.parent
        t = np.eye(4)
        for j in reversed(chain):
            t = t @ self.joint_transform(j, positions.get(j.name, 0.0))
        return t
