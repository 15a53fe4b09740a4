"""The out-of-distribution condition sets (issue 24): every task has them, what their resets draw (seeded,
within the stated bands, disjoint from the training draws and between validation and test), that the
camera image changes the way the family says, and that the state, the physics and the cost do not."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mujoco
import numpy as np
import pytest

from gps_core import ood
from gps_core.tasks import CONDITION_SETS, load_task, task_from_dict, tasks_dir
from gps_sim import ArmSim
from gps_sim.ood_textures import TEXTURED_GEOMS, texture_image
from gps_sim.scenes import scene_spec

BASE_TASKS = ("reach", "shape_sorting", "coat_hanger", "toy_hammer", "bottle_cap")
ALL_TASKS = tuple(sorted(p.stem for p in Path(tasks_dir()).glob("*.yaml")))
SEEDS = range(6)


@pytest.fixture(scope="module")
def sims():
    made: dict[str, ArmSim] = {}

    def get(task: str) -> ArmSim:
        if task not in made:
            made[task] = ArmSim(task, image_size=64, render_images=True)
        return made[task]

    yield get
    for s in made.values():
        s.close()


def _segmentation(sim: ArmSim) -> np.ndarray:
    """(H, W) geom id per pixel of the head camera (-1: none)."""
    r = mujoco.Renderer(sim.model, sim.image_size, sim.image_size)
    r.enable_segmentation_rendering()
    r.update_scene(sim.data, camera="head_camera")
    seg = r.render()
    r.close()
    return np.where(seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), seg[..., 0], -1)


def _target_mask(sim: ArmSim) -> np.ndarray:
    return np.isin(_segmentation(sim), sim._geom_ids("target"))


@pytest.mark.parametrize("name", ALL_TASKS)
def test_every_task_has_every_family_at_the_training_positions(name):
    task = load_task(name)
    base = np.array([c.target_pose for c in task.condition_list("train_perturbed")])
    for cset in ood.OOD_SETS:
        kind, strength, split = ood.parse_ood_set_name(cset)
        conds = task.condition_list(cset)
        # (a copied position's quaternion is normalized again: equal to a rounding)
        np.testing.assert_allclose([c.target_pose for c in conds], base, rtol=0, atol=1e-15)
        assert all(c.ood["kind"] == kind and c.ood["strength"] == strength and c.ood["split"] == split
                   and c.perturbation == 0.03 and c.random_scene is None for c in conds)
        assert task.set_trials[cset] == (24 if split == "validation" else 40)
        if kind in ("clutter", "same_colour"):
            scene_spec(conds[0].ood["scene"])  # the placement rules load
    # the plain sets draw nothing of a family
    assert not any(c.ood for s in CONDITION_SETS if s not in ood.OOD_SETS for c in task.condition_list(s))


def _task(conditions: dict) -> dict:
    return {"name": "t", "scene": "reach", "initial_joint_angles": [0.0] * 7, "ee_points": np.eye(3).tolist(),
            "target_points": np.eye(3).tolist(),
            "conditions": {"train": [{"target_position": [0.5, -0.3, 0.47]}], **conditions}}


@pytest.mark.parametrize("conditions,match", [
    ({"validation": {"positions": "train", "ood": {"kind": "lighting", "strength": 1, "split": "validation"}}},
     "does not match the set's name"),
    ({"ood_lighting_1_validation": {"positions": "train", "ood": {"kind": "lighting", "strength": 1,
                                                                 "split": "test"}}}, "does not match"),
    ({"ood_lighting_1_validation": {"positions": "train"}}, "needs an ood spec"),
    ({"ood_camera_2_test": [{"target_position": [0.5, -0.3, 0.47]}]}, "needs an ood spec"),
    ({"ood_clutter_1_test": {"positions": "train", "random_scene": {},
                             "ood": {"kind": "clutter", "strength": 1, "split": "test"}}}, "random_scene"),
    ({"ood_lighting_1_test": {"positions": "train", "ood": {"kind": "light", "strength": 1, "split": "test"}}},
     "ood.kind"),
])
def test_bad_ood_sets_are_refused_naming_the_set(conditions, match):
    with pytest.raises(ValueError, match=match):
        task_from_dict(_task(conditions))


def _reset(sim: ArmSim, cset: str, seed: int, condition: int = 0):
    ob = sim.reset(condition, seed=seed, condition_set=cset)
    return ob, sim.ood_draw


@pytest.mark.parametrize("kind", ood.OOD_KINDS)
def test_draws_are_seeded_and_reproducible(sims, kind):
    sim = sims("shape_sorting")
    cset = ood.ood_set_name(kind, 2, "validation")
    a_ob, a = _reset(sim, cset, 11)
    _reset(sim, "train", 0)
    b_ob, b = _reset(sim, cset, 11)
    assert a == b and a is not None
    np.testing.assert_array_equal(a_ob.image, b_ob.image)
    c_ob, c = _reset(sim, cset, 12)
    assert c != a and not np.array_equal(c_ob.image, a_ob.image)
    # another process draws the same (a fresh simulator)
    fresh = ArmSim("shape_sorting", image_size=64, render_images=True)
    try:
        d_ob, d = _reset(fresh, cset, 11)
        assert d == a
        np.testing.assert_array_equal(d_ob.image, a_ob.image)
    finally:
        fresh.close()


def _training_scene_specs() -> list[dict]:
    """Every random scene a training or evaluation reset of any task draws (the visual sets, sample_scenes)."""
    specs = []
    for name in ALL_TASKS:
        task = load_task(name)
        for cset in CONDITION_SETS:
            specs += [scene_spec(c.random_scene) for c in task.condition_list(cset) if c.random_scene is not None]
    return specs


def test_clutter_and_same_colour_bands_lie_outside_every_training_scene():
    specs = _training_scene_specs()
    assert len(specs) > 20
    biggest = max(float(s["size"][1]) for s in specs)
    closest = min(float(s["min_gap"]) for s in specs)
    nearest_colour = min(float(s["min_color_distance"]) for s in specs)
    for k in ood.OOD_STRENGTHS:
        assert ood.band("clutter", "size", k)[0] > biggest
        assert ood.band("clutter", "gap", k)[1] < closest
        assert ood.band("same_colour", "color_distance", k)[1] < nearest_colour


@pytest.mark.parametrize("task_name", ["reach", "toy_hammer"])
def test_clutter_draws_within_bands_and_the_occluder_covers_part_of_the_target(sims, task_name):
    sim = sims(task_name)
    nominal = {}
    for m in range(sim.num_conditions("train_perturbed")):
        sim.reset(m, seed=0, condition_set="train_perturbed")
        nominal[m] = _target_mask(sim).sum()
    visible = []
    for k in ood.OOD_STRENGTHS:
        for split in ood.OOD_SPLITS:
            cset = ood.ood_set_name("clutter", k, split)
            for seed in SEEDS:
                m = seed % len(nominal)
                _, d = _reset(sim, cset, seed, m)
                lo, hi = ood.band("clutter", "size", k)
                sizes = np.array(d["sizes"])
                assert np.all((sizes >= lo) & (sizes <= hi))
                assert all(ood.piece_of(v, lo, hi) % 2 == ood.OOD_SPLITS.index(split) for v in sizes.ravel())
                lo, hi = ood.band("clutter", "gap", k)
                assert all(lo <= g <= hi for g in d["gaps"])
                assert ("occluder" in d) == (k > 1)
                if k > 1:
                    lo, hi = ood.band("clutter", "overlap", k)
                    assert lo <= d["occluder"]["overlap"] <= hi
                    visible.append(_target_mask(sim).sum() / nominal[m])
    # the occluder hides part of the target in most scenes, never all of it in most
    visible = np.array(visible)
    assert np.mean(visible < 0.97) > 0.7 and np.mean(visible > 0.03) > 0.7, visible


def test_same_colour_distractors_are_near_a_target_colour(sims):
    sim = sims("reach")
    targets = sim._target_colors[:, :3]
    for k in ood.OOD_STRENGTHS:
        lo, hi = ood.band("same_colour", "color_distance", k)
        for split in ood.OOD_SPLITS:
            for seed in SEEDS:
                _, d = _reset(sim, ood.ood_set_name("same_colour", k, split), seed)
                shown = [sim.model.geom_rgba[g, :3] for g in range(sim.model.ngeom)
                         if (sim.model.geom(g).name or "").startswith("distractor_") and sim.model.geom_rgba[g, 3] > 0]
                assert len(shown) == d["count"] >= 2
                for rgb in shown:
                    dist = np.linalg.norm(targets - rgb, axis=1).min()
                    assert dist <= hi + 1e-9
                assert all(lo <= v <= hi for v in d["color_distances"])
                # the table keeps its colour
                np.testing.assert_array_equal(sim.model.geom_rgba[sim._geom_ids("table")[0]], sim._table_rgba)


def test_lighting_changes_brightness_and_the_light(sims):
    sim = sims("reach")
    plain, _ = _reset(sim, "train_perturbed", 0)
    diffuse0 = sim.model.light_diffuse[0].copy()
    for k in ood.OOD_STRENGTHS:
        for seed in SEEDS:
            ob, d = _reset(sim, ood.ood_set_name("lighting", k, "test"), seed)
            change = ob.image.astype(float).mean() - plain.image.astype(float).mean()
            # darker light, darker image; brighter, brighter
            assert np.sign(change) == np.sign(d["intensity"] - 1.0) and abs(change) > 2.0
            np.testing.assert_allclose(sim.model.light_diffuse[0], diffuse0 * d["intensity"] * np.asarray(d["tint"]))
            new_dir = sim.model.light_dir[0] / np.linalg.norm(sim.model.light_dir[0])
            old_dir = sim._ood._nominal["light_dir"][0] / np.linalg.norm(sim._ood._nominal["light_dir"][0])
            assert np.arccos(np.clip(new_dir @ old_dir, -1, 1)) == pytest.approx(d["tilt"], abs=1e-9)


def test_camera_moves_within_the_band_and_the_target_moves_in_the_image(sims):
    sim = sims("shape_sorting")
    cam = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_CAMERA, "head_camera")
    sim.reset(1, seed=0, condition_set="train_perturbed")
    pos0, mat0 = sim.data.cam_xpos[cam].copy(), sim.data.cam_xmat[cam].reshape(3, 3).copy()
    centroid0 = np.argwhere(_target_mask(sim)).mean(axis=0)
    moved = []
    for k in ood.OOD_STRENGTHS:
        for seed in SEEDS:
            _, d = _reset(sim, ood.ood_set_name("camera", k, "validation"), seed, 1)
            shift = np.linalg.norm(sim.data.cam_xpos[cam] - pos0)
            assert ood.band("camera", "shift", k)[0] - 1e-9 <= shift <= ood.band("camera", "shift", k)[1] + 1e-9
            rel = sim.data.cam_xmat[cam].reshape(3, 3) @ mat0.T
            angle = np.arccos(np.clip((np.trace(rel) - 1) / 2, -1, 1))
            assert angle == pytest.approx(d["rotation"], abs=1e-6)
            moved.append(np.linalg.norm(np.argwhere(_target_mask(sim)).mean(axis=0) - centroid0))
    moved = np.array(moved).reshape(3, -1).mean(axis=1)
    assert moved[0] > 0.5 and moved[2] > moved[0], moved  # pixels: more with the strength


def test_texture_family_textures_table_and_floor(sims):
    sim = sims("bottle_cap")
    plain, _ = _reset(sim, "train_perturbed", 0)
    table = sim._geom_ids("table")[0]
    seg = _segmentation(sim)
    for k in ood.OOD_STRENGTHS:
        for split in ood.OOD_SPLITS:
            lo, hi = ood.band("texture", "contrast", k)
            for v in range(ood.TEXTURE_VARIANTS):
                img = texture_image(split, k, v).reshape(-1, 3).astype(float) / 255
                colours = np.unique(np.round(img, 2), axis=0)
                spread = np.linalg.norm(colours.max(axis=0) - colours.min(axis=0))
                assert spread <= hi + 0.02  # two colours this far apart (and their mixes)
            ob, d = _reset(sim, ood.ood_set_name("texture", k, split), 3)
            for geom in TEXTURED_GEOMS:
                gid = sim._geom_ids(geom)[0]
                assert sim.model.geom_matid[gid] >= 0 and sim.model.mat_texrepeat[sim.model.geom_matid[gid], 0] \
                    == pytest.approx(d[geom]["repeat"])
            on_table = seg == table
            assert ob.image[on_table].std(axis=0).mean() > plain.image[on_table].std(axis=0).mean()
    # validation and test textures differ (other pattern kinds and colours)
    assert not np.array_equal(texture_image("validation", 1, 0), texture_image("test", 1, 0))


def test_image_noise_is_per_frame_and_repeatable(sims):
    sim = sims("reach")
    plain, _ = _reset(sim, "train_perturbed", 2)
    ob, d = _reset(sim, ood.ood_set_name("image_noise", 3, "validation"), 2)
    diff = ob.image.astype(float) - plain.image.astype(float)
    assert diff.std() > 0.5 * d["noise_std"]
    np.testing.assert_array_equal(sim.render(), ob.image)  # rendering the same step again: the same image
    nxt = sim.step(np.zeros(7)).image
    assert not np.array_equal(nxt, ob.image)  # the next step: other noise


@pytest.mark.parametrize("kind", ood.OOD_KINDS)
def test_state_physics_and_cost_do_not_see_the_family(sims, kind):
    """The same condition, set name and seed without the family: the same start, the same states under the
    same torques, the same success and distance; only the image differs."""
    name = "toy_hammer"
    sim = sims(name)
    cset = ood.ood_set_name(kind, 3, "test")
    task = load_task(name)
    plain_task = dataclasses.replace(task, conditions={**task.conditions, cset: [
        dataclasses.replace(c, ood=None) for c in task.condition_list(cset)]})
    plain = ArmSim(plain_task, image_size=64, render_images=True)
    try:
        torques = np.random.default_rng(0).normal(0.0, 2.0, (8, 7))
        a, b = sim.reset(2, seed=5, condition_set=cset), plain.reset(2, seed=5, condition_set=cset)
        assert plain.ood_draw is None and sim.ood_draw is not None
        assert not np.array_equal(a.image, b.image)
        for u in torques:
            np.testing.assert_array_equal(sim.state(), plain.state())
            np.testing.assert_array_equal(a.config, b.config)
            a, b = sim.step(u), plain.step(u)
        np.testing.assert_array_equal(sim.state(), plain.state())
        assert sim.data.ncon == plain.data.ncon
        assert sim.is_success() == plain.is_success() and sim.mean_distance() == plain.mean_distance()
    finally:
        plain.close()


def test_a_plain_reset_after_a_family_restores_the_nominal_scene(sims):
    sim = sims("coat_hanger")
    fresh = ArmSim("coat_hanger", image_size=64, render_images=True)
    try:
        want = fresh.reset(1, seed=4, condition_set="visual_validation").image
        for kind in ood.OOD_KINDS:
            sim.reset(1, seed=4, condition_set=ood.ood_set_name(kind, 3, "test"))
            np.testing.assert_array_equal(sim.reset(1, seed=4, condition_set="visual_validation").image, want)
    finally:
        fresh.close()
