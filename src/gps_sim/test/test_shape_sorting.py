"""The shape_sorting scene: the held block's bevelled leading edges, in geometry and in contact."""

import mujoco
import numpy as np
import pytest

from gps_core.kinematics import ArmKinematics
from gps_core.tasks import load_task
from gps_sim import ArmSim
from gps_sim.scenes import bevelled_block_vertices


def test_bevelled_block_vertices():
    v = bevelled_block_vertices([0.022, 0.022, 0.06], 0.008)
    assert v.shape == (12, 3)
    lead = v[v[:, 2] == pytest.approx(0.06)]
    trail = v[v[:, 2] == pytest.approx(-0.06)]
    np.testing.assert_allclose(np.abs(lead[:, :2]), 0.014)  # leading face 2.8 cm wide
    np.testing.assert_allclose(np.abs(trail[:, :2]), 0.022)  # rest of the block 4.4 cm
    side = v[v[:, 2] == pytest.approx(0.052)]
    np.testing.assert_allclose(np.abs(side[:, :2]), 0.022)  # 45 degrees: 8 mm in, 8 mm up
    for bad in (0.0, 0.022, -0.001):
        with pytest.raises(ValueError, match="block_bevel"):
            bevelled_block_vertices([0.022, 0.022, 0.06], bad)


def _block_world_vertices(sim: ArmSim) -> np.ndarray:
    m, d = sim.model, sim.data
    gid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "held_block")
    assert m.geom_type[gid] == mujoco.mjtGeom.mjGEOM_MESH
    mid = m.geom_dataid[gid]
    local = m.mesh_vert[m.mesh_vertadr[mid]: m.mesh_vertadr[mid] + m.mesh_vertnum[mid]]
    return d.geom_xpos[gid] + local @ d.geom_xmat[gid].reshape(3, 3).T


def test_bevelled_block_sits_where_the_ee_points_say():
    """MuJoCo re-centres meshes; the compiled block's leading face must still be centred on the tip EE
    point and its trailing face on the third EE point (to the 0.1 mm the task file rounds them to)."""
    sim = ArmSim("shape_sorting")
    assert sim.task.scene_params["block_bevel"] > 0
    sim.reset(1)
    w = _block_world_vertices(sim)
    tip, _, top = sim.ee_points()
    np.testing.assert_allclose(w[-4:].mean(axis=0), tip, atol=1e-4)
    np.testing.assert_allclose(w[:4].mean(axis=0), top, atol=1e-4)


def test_cube_and_block_carry_the_task_friction():
    task = load_task("shape_sorting")
    task.scene_params["friction"] = 0.3
    for bevel in (0.0, 0.008):
        task.scene_params["block_bevel"] = bevel
        m = ArmSim(task).model
        names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, i) for i in range(m.ngeom)]
        contact = [i for i, n in enumerate(names) if n and (n.startswith("target_geom") or n == "held_block")]
        assert len(contact) == 6  # 4 walls, the floor of the hole, the block
        np.testing.assert_allclose(m.geom_friction[contact, 0], 0.3)


def _descend_off_centre(bevel: float, offset_y: float) -> tuple[bool, np.ndarray]:
    """Place the block 8 cm above the hole, shifted by offset_y along the cube's y axis, and lower it
    along a straight line with a stiff joint PD tracking IK solutions (as a position-controlled arm
    would). Returns success and the tip in the cube frame."""
    task = load_task("shape_sorting")
    task.scene_params["block_bevel"] = bevel
    sim = ArmSim(task)
    kin = ArmKinematics(task.ee_points)
    limits = np.stack([sim.joint_limits[:, 0], sim.joint_limits[:, 1]], axis=1)
    sim.reset(0)
    rot = sim._target_rotation()
    goal = sim.target_points() + rot @ np.array([0.0, offset_y, 0.0])
    above = goal + np.array([0.0, 0.0, 0.08])
    sim.set_joint_state(kin.solve_ee_points(above, sim.joint_positions(), limits, sim.joint_limited))
    kp, kd = np.array([80, 80, 15, 30, 6, 6, 6.0]), np.array([10, 10, 1.5, 3, 0.6, 0.6, 0.6])
    q_ref = sim.joint_positions()
    for k in range(100):
        waypoint = above + (goal - above) * min(1.0, k / 60)
        q_ref = kin.solve_ee_points(waypoint, q_ref, limits, sim.joint_limited, iterations=30)
        sim.step(kp * (q_ref - sim.joint_positions()) - kd * sim.joint_velocities())
    tip = (sim.ee_points()[0] - sim.target_pose()[:3]) @ rot
    return sim.is_success(), tip


@pytest.mark.parametrize("offset_y", [-0.005, 0.005])
def test_bevel_turns_an_off_centre_landing_into_an_insertion(offset_y):
    """5 mm off-centre is more than the 3 mm clearance: the square block jams on the rim (tip at the
    top face, z = 60 mm), the bevelled one slides in (the bevel pushes it to within the clearance)."""
    ok_box, tip_box = _descend_off_centre(0.0, offset_y)
    assert not ok_box and tip_box[2] > 0.055
    ok_bevel, tip_bevel = _descend_off_centre(0.008, offset_y)
    assert ok_bevel and tip_bevel[2] < 0.02 and abs(tip_bevel[1]) <= 0.003


def test_centred_descent_inserts_with_either_block():
    for bevel in (0.0, 0.008):
        ok, tip = _descend_off_centre(bevel, 0.0)
        assert ok and np.allclose(tip, [0.0, 0.0, 0.01], atol=1e-3), (bevel, tip)
