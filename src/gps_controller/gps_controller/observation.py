"""State and observation assembly for the controller: plain numpy (no rclpy), testable alone.

x_t = [q (7), qd (7), EE points - target points (9), EE point velocities (9)]    (dX = 32)
o_t = image + [q, qd, EE points (absolute, base frame) (9), EE point velocities (9)]  (dO = 32)

The same definitions as ``gps_sim.ArmSim.state()/config()``, computed here from /joint_states by
forward kinematics of the robot model, and from /gps/target_pose for the target points.

Forward kinematics:
- ``MujocoKinematics``: the MuJoCo MJCF of the simulated arm (``gps_core.kinematics.ArmKinematics``).
- ``PinocchioKinematics``: a URDF read by pinocchio (PyPI ``pin``) for a real robot. pinocchio is
  optional and is NOT installed in the embedded default environment; constructing this class
  without it raises an ``ImportError`` saying so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gps_core.layout import quat_wxyz_to_matrix, target_points_from_pose  # noqa: F401


class JointOrderError(ValueError):
    """A /joint_states message that cannot be mapped onto the configured joints."""


class JointReorder:
    """Maps JointState (name, position, velocity) onto the configured ``joint_names`` order.

    Rejects (``JointOrderError``): a configured joint missing, duplicate names, position/velocity
    arrays whose length differs from the names, NaN/Inf. Joints not in the configuration are
    rejected when ``strict`` (a simulated arm publishes exactly its joints) and ignored otherwise
    (a real PR2's /joint_states carries every joint of the robot).
    """

    def __init__(self, joint_names: Sequence[str], strict: bool = True):
        self.joint_names = tuple(joint_names)
        if len(set(self.joint_names)) != len(self.joint_names) or not self.joint_names:
            raise ValueError(f"joint_names must be non-empty and unique, got {self.joint_names}")
        self.strict = bool(strict)
        self._cache_names: tuple[str, ...] | None = None
        self._cache_index: np.ndarray | None = None

    def _index(self, names: tuple[str, ...]) -> np.ndarray:
        if names == self._cache_names:
            return self._cache_index
        if len(set(names)) != len(names):
            raise JointOrderError("joint_states: duplicate joint names")
        pos = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.joint_names if n not in pos]
        if missing:
            raise JointOrderError(f"joint_states: missing joints {missing}")
        if self.strict:
            unknown = [n for n in names if n not in self.joint_names]
            if unknown:
                raise JointOrderError(f"joint_states: unknown joints {unknown}")
        index = np.array([pos[n] for n in self.joint_names], dtype=np.intp)
        self._cache_names, self._cache_index = names, index
        return index

    def __call__(self, names: Sequence[str], positions, velocities) -> tuple[np.ndarray, np.ndarray]:
        names = tuple(names)
        positions = np.asarray(positions, dtype=np.float64)
        velocities = np.asarray(velocities, dtype=np.float64)
        if positions.shape != (len(names),):
            raise JointOrderError(f"joint_states: {positions.size} positions for {len(names)} names")
        if velocities.shape != (len(names),):
            raise JointOrderError(f"joint_states: {velocities.size} velocities for {len(names)} names "
                                  "(the controller needs velocities)")
        index = self._index(names)
        q, qd = positions[index], velocities[index]
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
            raise JointOrderError("joint_states: NaN or Inf in positions/velocities")
        return q, qd


class MujocoKinematics:
    """EE points and Jacobians from the simulated arm's MJCF (via gps_core.kinematics)."""

    def __init__(self, ee_offsets):
        from gps_core.kinematics import ArmKinematics

        self._kin = ArmKinematics(np.asarray(ee_offsets, dtype=np.float64))
        model = self._kin.model
        n = self._kin.nq
        limited = model.jnt_limited[:n].astype(bool)
        self.joint_lower = np.where(limited, model.jnt_range[:n, 0], -np.inf)
        self.joint_upper = np.where(limited, model.jnt_range[:n, 1], np.inf)

    def points_and_jacobian(self, q) -> tuple[np.ndarray, np.ndarray]:
        """EE points (3, 3) and d(points.ravel())/dq (9, nq)."""
        jac = self._kin.ee_point_jacobians(q)  # computes the kinematics at q
        pts = self._kin.ee_points(q)
        return pts, jac


class PinocchioKinematics:
    """EE points and Jacobians from a URDF with pinocchio (optional dependency, PyPI ``pin``)."""

    def __init__(self, urdf_path: str, tool_frame: str, ee_offsets, joint_names: Sequence[str]):
        try:
            import pinocchio as pin
        except ImportError as exc:
            raise ImportError(
                "robot_model is a URDF, which needs pinocchio (pip install pin); it is not installed here. "
                "Use robot_model: mujoco for the embedded simulation."
            ) from exc
        self._pin = pin
        self.model = pin.buildModelFromUrdf(urdf_path)
        self.data = self.model.createData()
        self.frame = self.model.getFrameId(tool_frame)
        if self.frame >= self.model.nframes:
            raise ValueError(f"tool frame {tool_frame!r} not in {urdf_path}")
        self.offsets = np.asarray(ee_offsets, dtype=np.float64)
        idx_q, idx_v = [], []
        for name in joint_names:
            if not self.model.existJointName(name):
                raise ValueError(f"joint {name!r} not in {urdf_path}")
            j = self.model.joints[self.model.getJointId(name)]
            idx_q.append(j.idx_q)
            idx_v.append(j.idx_v)
        self.idx_q, self.idx_v = np.array(idx_q), np.array(idx_v)
        self.joint_lower = self.model.lowerPositionLimit[self.idx_q]
        self.joint_upper = self.model.upperPositionLimit[self.idx_q]
        self._q = pin.neutral(self.model)

    def points_and_jacobian(self, q) -> tuple[np.ndarray, np.ndarray]:
        pin = self._pin
        self._q[self.idx_q] = q
        pin.computeJointJacobians(self.model, self.data, self._q)
        pin.updateFramePlacements(self.model, self.data)
        placement = self.data.oMf[self.frame]
        rot, pos = placement.rotation, placement.translation
        jac6 = pin.getFrameJacobian(self.model, self.data, self.frame, pin.LOCAL_WORLD_ALIGNED)[:, self.idx_v]
        pts = pos + self.offsets @ rot.T
        jac = np.zeros((3 * len(pts), len(self.idx_v)))
        for i, p in enumerate(pts):
            r = p - pos  # v_p = v + w x r = v - [r]x w
            skew = np.array([[0, -r[2], r[1]], [r[2], 0, -r[0]], [-r[1], r[0], 0]])
            jac[3 * i:3 * i + 3] = jac6[:3] - skew @ jac6[3:]
        return pts, jac


class StateAssembler:
    """x_t and o_t from joint angles/velocities (configured order) and the target pose."""

    def __init__(self, kinematics, target_point_offsets):
        self.kin = kinematics
        self.target_offsets = np.asarray(target_point_offsets, dtype=np.float64)

    def assemble(self, q, qd, target_pose7=None) -> tuple[np.ndarray, np.ndarray]:
        """(x (32,), o (32,)); without a target pose x's EE-point part is relative to the origin."""
        q = np.asarray(q, dtype=np.float64)
        qd = np.asarray(qd, dtype=np.float64)
        pts, jac = self.kin.points_and_jacobian(q)
        vel = jac @ qd
        flat = pts.reshape(-1)
        o = np.concatenate([q, qd, flat, vel])
        rel = flat if target_pose7 is None else (pts - target_points_from_pose(target_pose7, self.target_offsets)).ravel()
        x = np.concatenate([q, qd, rel, vel])
        return x, o


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3); cv2 (area interpolation) when present, else nearest."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    try:
        import cv2
    except ImportError:
        rows = (np.arange(height) * image.shape[0] // height).astype(np.intp)
        cols = (np.arange(width) * image.shape[1] // width).astype(np.intp)
        return np.ascontiguousarray(image[rows][:, cols])
    interp = cv2.INTER_AREA if image.shape[0] > height else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)
