"""gps_core.urdf_tree (what gps_tf publishes as TF) against the MuJoCo arm the controller and sim use."""

import math

import numpy as np
import pytest

from gps_core.kinematics import ArmKinematics
from gps_core.urdf_tree import UrdfTree, axis_angle_matrix, matrix_to_quat_xyzw, rpy_matrix
from gps_sim.urdf import URDF


@pytest.fixture(scope="module")
def tree():
    return UrdfTree.from_file(URDF)


def test_tool_frame_of_the_urdf_matches_mujoco_fk(tree):
    kin = ArmKinematics()
    names = [j.name for j in tree.moving_joints]
    assert len(names) == 7
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform(-1.5, 0.5, size=7)
        t = tree.link_pose("base_link", "r_gripper_tool_frame", dict(zip(names, q, strict=True)))
        pos, rot = kin.tool_pose(q)
        assert np.allclose(t[:3, 3], pos, atol=1e-6)
        assert np.allclose(t[:3, :3], rot, atol=1e-6)


def test_every_link_is_reachable_from_the_root(tree):
    children = {j.child for j in tree.joints}
    roots = [link for link in tree.links if link not in children]
    assert roots == ["world"]
    for link in tree.links:
        tree.link_pose("world", link, {})


def test_rotation_helpers_closed_forms():
    assert np.allclose(rpy_matrix([0, 0, math.pi / 2]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    assert np.allclose(axis_angle_matrix(np.array([0, 0, 2.0]), math.pi / 2), rpy_matrix([0, 0, math.pi / 2]))
    rng = np.random.default_rng(1)
    for _ in range(50):  # quaternion round trip, every Shepperd branch
        r = rpy_matrix(rng.uniform(-math.pi, math.pi, 3))
        x, y, z, w = matrix_to_quat_xyzw(r)
        back = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        assert np.allclose(back, r, atol=1e-12)
    for r in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):
        assert np.isclose(np.linalg.norm(matrix_to_quat_xyzw(r)), 1.0)


def test_bad_urdf_is_a_clear_error():
    with pytest.raises(ValueError, match="not valid XML"):
        UrdfTree("<robot")
    with pytest.raises(ValueError, match="root element"):
        UrdfTree("<sdf/>")
    with pytest.raises(ValueError, match="axis"):
        UrdfTree('<robot><joint name="j" type="revolute"><parent link="a"/><child link="b"/>'
                 '<axis xyz="0 nan 1"/></joint></robot>')
