"""The named layout of the state x and the observation o (DESIGN.md, "State and observation").

x = [joint angles (7), joint velocities (7), EE points - target points (3 x 3), EE point velocities (9)]
o = [joint angles (7), joint velocities (7), EE points in the base frame (3 x 3), EE velocities (9)]
    (+ the camera image, which travels apart)

EE points in x are relative to their targets, so a state policy generalizes across conditions and the
EE cost's target is zero; o carries them absolute (a policy on o cannot see the target).
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 7
NUM_EE_POINTS = 3

JOINT_ANGLES = slice(0, 7)
JOINT_VELOCITIES = slice(7, 14)
#: x: EE points minus their target points; o: EE points in the base frame. Flattened (3 points x xyz).
EE_POINTS = slice(14, 23)
EE_VELOCITIES = slice(23, 32)
STATE_DIM = 32
OBS_DIM = 32


def ee_points(v: np.ndarray) -> np.ndarray:
    """The EE-point block of states or observations ``v`` (..., 32) as (..., 3, 3)."""
    v = np.asarray(v)
    return v[..., EE_POINTS].reshape(*v.shape[:-1], NUM_EE_POINTS, 3)


def mean_ee_distance(x: np.ndarray) -> np.ndarray | float:
    """Mean distance (m) of the EE points to their targets for states ``x`` (..., 32)."""
    d = np.linalg.norm(ee_points(np.asarray(x, dtype=np.float64)), axis=-1).mean(axis=-1)
    return float(d) if np.ndim(d) == 0 else d


def quat_wxyz_to_matrix(quat: np.ndarray) -> np.ndarray:
    """Rotation matrix of a (not necessarily unit) quaternion (w, x, y, z)."""
    w, x, y, z = np.asarray(quat, dtype=np.float64) / np.linalg.norm(quat)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def target_points_from_pose(pose7: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(3, 3) target points in the base frame: pose = xyz + quaternion wxyz, offsets in the object frame."""
    pose7 = np.asarray(pose7, dtype=np.float64)
    return pose7[:3] + np.asarray(offsets, dtype=np.float64) @ quat_wxyz_to_matrix(pose7[3:7]).T
