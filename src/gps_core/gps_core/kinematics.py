"""Forward kinematics of the PR2 arm model: end-effector points and their Jacobians.

Pure functions of the joint angles (no simulation state is kept between calls), computed by MuJoCo
from the same MJCF the simulation runs, so the controller can assemble x from /joint_states exactly
as the simulation does.
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

#: The arm's MJCF: the one description of its kinematics and dynamics (the simulation adds the task
#: scene to it; the URDF for Gazebo is generated from it).
ARM_MODEL = Path(__file__).resolve().parent / "models" / "pr2_arm.xml"
TOOL_SITE = "r_gripper_tool_frame"
TOOL_BODY = "r_gripper_palm_link"
#: Default EE points in the tool frame (the reach task's): tool origin, 5 cm across the gripper
#: (tool y), 5 cm along tool z. Non-collinear, so they pin down the tool's full pose.
DEFAULT_EE_POINTS = np.array([[0.0, 0.0, 0.0], [0.0, 0.05, 0.0], [0.0, 0.0, 0.05]])


def ee_points_from_data(model: mujoco.MjModel, data: mujoco.MjData, offsets: np.ndarray,
                        site_id: int) -> np.ndarray:
    """EE points (n, 3) in the base frame; data must have its kinematics computed."""
    return data.site_xpos[site_id] + offsets @ data.site_xmat[site_id].reshape(3, 3).T


def ee_jacobians_from_data(model: mujoco.MjModel, data: mujoco.MjData, points: np.ndarray,
                           body_id: int, nq: int = 7) -> np.ndarray:
    """d(points flattened)/dq, shape (3n, nq); data must have kinematics and comPos computed."""
    jac = np.zeros((3 * len(points), model.nv))
    jacp = np.zeros((3, model.nv))
    for i, p in enumerate(points):
        mujoco.mj_jac(model, data, jacp, None, np.ascontiguousarray(p, dtype=float), body_id)
        jac[3 * i: 3 * i + 3] = jacp
    return jac[:, :nq]


def arm_model() -> mujoco.MjModel:
    """The bare arm (no task scene), gravity off: all FK needs."""
    spec = mujoco.MjSpec.from_file(str(ARM_MODEL))
    spec.option.gravity = np.zeros(3)
    return spec.compile()


class ArmKinematics:
    """FK of the three EE points. ee_points: (3, 3) offsets in the tool frame (default: reach task's)."""

    def __init__(self, ee_points: np.ndarray | None = None, model: mujoco.MjModel | None = None):
        if model is None:
            model = arm_model()
        self.model = model
        self._data = mujoco.MjData(model)
        self.offsets = np.array(DEFAULT_EE_POINTS if ee_points is None else ee_points, dtype=float)
        if self.offsets.shape != (3, 3):
            raise ValueError("ee_points must have shape (3, 3)")
        self._site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, TOOL_SITE)
        self._body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, TOOL_BODY)
        self.nq = 7

    @classmethod
    def from_task(cls, task) -> ArmKinematics:
        return cls(task.ee_points)

    def _set(self, q: np.ndarray, with_com: bool = False) -> None:
        q = np.asarray(q, dtype=float).reshape(-1)
        if q.shape != (self.nq,):
            raise ValueError(f"q must have {self.nq} entries, got {q.shape}")
        self._data.qpos[: self.nq] = q
        mujoco.mj_kinematics(self.model, self._data)
        if with_com:
            mujoco.mj_comPos(self.model, self._data)

    def tool_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tool frame position (3,) and rotation matrix (3, 3) in the base frame."""
        self._set(q)
        return self._data.site_xpos[self._site].copy(), self._data.site_xmat[self._site].reshape(3, 3).copy()

    def ee_points(self, q: np.ndarray) -> np.ndarray:
        """(3, 3): the three EE points in the base frame, one per row."""
        self._set(q)
        return ee_points_from_data(self.model, self._data, self.offsets, self._site)

    def ee_point_jacobians(self, q: np.ndarray) -> np.ndarray:
        """(9, 7): d(ee_points(q).ravel())/dq."""
        self._set(q, with_com=True)
        pts = ee_points_from_data(self.model, self._data, self.offsets, self._site)
        return ee_jacobians_from_data(self.model, self._data, pts, self._body, self.nq)

    def ee_point_velocities(self, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        """(3, 3): velocities of the EE points for joint velocities qd."""
        return (self.ee_point_jacobians(q) @ np.asarray(qd, dtype=float)).reshape(3, 3)

    def solve_ee_points(self, target: np.ndarray, q0: np.ndarray, joint_limits: np.ndarray | None = None,
                        limited: np.ndarray | None = None, iterations: int = 300, damping: float = 1e-4,
                        margin: float = 0.01) -> np.ndarray:
        """Joint angles placing the three EE points at ``target`` (3, 3): damped least squares
        (Levenberg-Marquardt steps q += 0.5 J^T (J J^T + damping I)^-1 e) from ``q0``, clipping limited
        joints to ``margin`` inside their ``joint_limits`` (7, 2). Returns the last iterate; check
        ``ee_points`` of it when convergence matters."""
        target = np.asarray(target, dtype=float).reshape(9)
        q = np.array(q0, dtype=float).reshape(self.nq)
        if joint_limits is not None and limited is None:
            limited = np.ones(self.nq, dtype=bool)
        for _ in range(int(iterations)):
            e = target - self.ee_points(q).ravel()
            jac = self.ee_point_jacobians(q)
            q = q + 0.5 * jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(9), e)
            if joint_limits is not None:
                lo, hi = joint_limits[:, 0] + margin, joint_limits[:, 1] - margin
                q[limited] = np.clip(q[limited], lo[limited], hi[limited])
        return q
