"""Training-time appearance randomization (issue 24's levers): the random_scene keys lighting / camera / texture.

Off (absent or 0) a random scene is drawn bit for bit as before the keys existed; on, a random scene also
perturbs the lights, the head camera and the table/floor textures from the training ranges and pool (never a
held-out family's draws or textures), only the image changes, and the next reset restores the nominal scene.
Only training draws may turn them on."""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np
import pytest

from gps_core import ood
from gps_core.tasks import load_task, task_from_dict
from gps_sim import ArmSim
from gps_sim.ood_textures import PATTERNS, TEXTURE_SPLITS, TEXTURED_GEOMS, TRAIN_SPLIT, texture_image
from gps_sim.scenes import appearance_strengths, scene_spec

TASK = "shape_sorting_grid_dr"  # its train set draws sample_scenes at every reset
ALL_ON = {"lighting": 3, "camera": 3, "texture": 3}
#: The train conditions of the test task: condition 0's position with these keys added to its random scene.
KEYSETS = ({"lighting": 0, "camera": 0, "texture": 0}, {"lighting": 3}, {"camera": 3}, {"texture": 3}, ALL_ON)

# Draws made before the keys existed (commit e58db08): shape_sorting_grid_dr, set train, condition 0, seed 7:
# the mocap bodies (target, then the four distractors) and the random table colour.
BEFORE_MOCAP = np.array([[0.5, -0.3, 0.51],
                         [0.6961019937084201, -0.4503228936429825, 0.4995111984208739],
                         [0.7249272584262108, -0.37633194072784354, 0.47055578714154533],
                         [0.6280119811702791, -0.13512101712127667, 0.4786119306632776],
                         [0.33219040496488206, -0.39685935305973574, 0.4772903649353861]])
BEFORE_TABLE = np.array([0.8168746, 0.74298966, 0.91494596, 1.0], dtype=np.float32)


def _variants(keysets) -> tuple:
    """(a task whose train condition i is condition 0 with keysets[i] in its random scene, the same task with
    condition 0 plain at every index): the same index and seed draw the same distractors in both."""
    task = load_task(TASK)
    c0 = task.condition_list("train")[0]
    on = [dataclasses.replace(c0, random_scene={**c0.random_scene, **keys}) for keys in keysets]
    return (dataclasses.replace(task, conditions={**task.conditions, "train": on}),
            dataclasses.replace(task, conditions={**task.conditions, "train": [c0] * len(keysets)}))


@pytest.fixture(scope="module")
def pair():
    on_task, plain_task = _variants(KEYSETS)
    on, plain = ArmSim(on_task, image_size=64, render_images=True), ArmSim(plain_task, image_size=64, render_images=True)
    yield on, plain
    on.close()
    plain.close()


def _visuals(sim: ArmSim) -> dict[str, np.ndarray]:
    m = sim.model
    return {"light_diffuse": m.light_diffuse.copy(), "light_dir": m.light_dir.copy(), "light_pos": m.light_pos.copy(),
            "head": np.array(m.vis.headlight.diffuse), "cam_pos": m.cam_pos.copy(), "cam_quat": m.cam_quat.copy(),
            "geom_matid": m.geom_matid.copy(), "mat_texrepeat": m.mat_texrepeat.copy(), "rgba": m.geom_rgba.copy()}


def test_keys_off_draw_bit_for_bit_as_before(pair):
    on, plain = pair
    assert scene_spec(None)["lighting"] == scene_spec(None)["camera"] == scene_spec(None)["texture"] == 0
    assert appearance_strengths(KEYSETS[0]) == {} and appearance_strengths(None) == {}
    for seed in (0, 7, 31):
        a, b = on.reset(0, seed=seed), plain.reset(0, seed=seed)  # keys at 0 / keys absent
        assert on.appearance_draw is None and plain.appearance_draw is None
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(on.data.mocap_pos, plain.data.mocap_pos)
        for key, value in _visuals(on).items():
            np.testing.assert_array_equal(value, _visuals(plain)[key], err_msg=key)
    # and the numbers drawn before the keys existed
    on.reset(0, seed=7)
    np.testing.assert_allclose(on.data.mocap_pos, BEFORE_MOCAP, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(on.model.geom_rgba[on._geom_ids("table")[0]], BEFORE_TABLE)


def test_keys_on_perturb_the_image_from_the_training_draws(pair):
    on, plain = pair
    nominal = on._ood._nominal
    light, cam = on._ood._light, on._ood._cam
    for i, keys in enumerate(KEYSETS[1:], start=1):
        for seed in (0, 5):
            a, b = on.reset(i, seed=seed), plain.reset(i, seed=seed)
            d = on.appearance_draw
            assert set(d) == set(keys) and plain.appearance_draw is None
            # drawn after the distractors: the same scene otherwise, another image
            np.testing.assert_array_equal(on.data.mocap_pos, plain.data.mocap_pos)
            assert np.abs(a.image.astype(float) - b.image.astype(float)).mean() > 1.0, keys
            if "lighting" in d:
                dl = d["lighting"]
                assert 0 <= dl["log_intensity"] <= ood.band("lighting", "log_intensity", 3)[1]
                assert 0 <= dl["tilt"] <= ood.band("lighting", "tilt", 3)[1]
                np.testing.assert_allclose(on.model.light_diffuse[light],
                                           nominal["light_diffuse"][light] * dl["intensity"] * np.asarray(dl["tint"]))
            else:
                np.testing.assert_array_equal(on.model.light_diffuse, nominal["light_diffuse"])
            if "camera" in d:
                shift = np.linalg.norm(on.model.cam_pos[cam] - nominal["cam_pos"][cam])
                assert shift == pytest.approx(np.linalg.norm(d["camera"]["shift"]))
                assert shift <= ood.band("camera", "shift", 3)[1] + 1e-12
                assert 0 <= d["camera"]["rotation"] <= ood.band("camera", "rotation", 3)[1]
            else:
                np.testing.assert_array_equal(on.model.cam_pos, nominal["cam_pos"])
                np.testing.assert_array_equal(on.model.cam_quat, nominal["cam_quat"])
            for geom in TEXTURED_GEOMS:
                gid = on._geom_ids(geom)[0]
                if "texture" not in d:
                    assert on.model.geom_matid[gid] == nominal["geom_matid"][gid]
                    continue
                name = mujoco.mj_id2name(on.model, mujoco.mjtObj.mjOBJ_MATERIAL, on.model.geom_matid[gid])
                t = d["texture"][geom]
                assert name == f"ood_{geom}_{TRAIN_SPLIT}_{t['strength']}_{t['variant']}"  # the training pool
                assert 1 <= t["strength"] <= 3
                assert ood.band("texture", "repeat", 1)[0] <= t["repeat"] <= ood.band("texture", "repeat", 3)[1]
                np.testing.assert_array_equal(on.model.geom_rgba[gid], [1, 1, 1, 1])
    # seeded: the same reset draws the same again; another seed draws otherwise
    first = (on.reset(4, seed=9).image, on.appearance_draw)
    on.reset(1, seed=3)
    again = (on.reset(4, seed=9).image, on.appearance_draw)
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1] and on.reset(4, seed=10) is not None and on.appearance_draw != first[1]


def test_state_physics_cost_and_success_do_not_see_it(pair):
    on, plain = pair
    torques = np.random.default_rng(0).normal(0.0, 2.0, (8, 7))
    a, b = on.reset(4, seed=2), plain.reset(4, seed=2)  # every key at 3
    assert not np.array_equal(a.image, b.image)
    for u in torques:
        np.testing.assert_array_equal(on.state(), plain.state())
        np.testing.assert_array_equal(a.config, b.config)
        a, b = on.step(u), plain.step(u)
    np.testing.assert_array_equal(on.state(), plain.state())
    assert on.data.ncon == plain.data.ncon
    assert on.is_success() == plain.is_success() and on.mean_distance() == plain.mean_distance()


def test_the_next_reset_restores_the_nominal_scene(pair):
    on, plain = pair
    want_image = plain.reset(0, seed=4, condition_set="visual_validation").image
    want = _visuals(plain)
    on.reset(4, seed=1)
    assert on.appearance_draw is not None
    got = on.reset(0, seed=4, condition_set="visual_validation").image
    assert on.appearance_draw is None
    np.testing.assert_array_equal(got, want_image)
    for key, value in _visuals(on).items():
        np.testing.assert_array_equal(value, want[key], err_msg=key)


def test_randomize_scene_draws_it_and_starts_from_the_nominal_visuals(pair):
    on, plain = pair
    spec = load_task(TASK).condition_list("visual_validation")[0].random_scene
    plain.reset(0, seed=0, condition_set="visual_validation")
    nominal = _visuals(plain)
    on.reset(0, seed=0, condition_set="visual_validation")
    before = on.render()
    on.randomize_scene(np.random.default_rng(1), {**spec, **ALL_ON})
    assert set(on.appearance_draw) == set(ALL_ON)
    lit = on.render()
    assert np.abs(lit.astype(float) - before.astype(float)).mean() > 1.0
    # a second random scene without the keys: nothing of the first one's lights, camera or textures stays
    on.randomize_scene(np.random.default_rng(2), spec)
    assert on.appearance_draw is None
    for key in ("light_diffuse", "light_dir", "head", "cam_pos", "cam_quat", "geom_matid", "mat_texrepeat"):
        np.testing.assert_array_equal(_visuals(on)[key], nominal[key], err_msg=key)
    # the same generator state gives the same distractors with or without the keys (drawn after them)
    d0 = on.randomize_scene(np.random.default_rng(3), spec)
    d1 = on.randomize_scene(np.random.default_rng(3), {**spec, "lighting": 2})
    assert d0 == d1


def test_the_training_textures_are_none_of_the_held_out_ones():
    assert TEXTURE_SPLITS[-1] == TRAIN_SPLIT and TRAIN_SPLIT not in ood.OOD_SPLITS
    held_out = {p for s in ood.OOD_SPLITS for p in PATTERNS[s]}
    assert not held_out & set(PATTERNS[TRAIN_SPLIT])
    held = [texture_image(s, k, v) for s in ood.OOD_SPLITS for k in ood.OOD_STRENGTHS
            for v in range(ood.TEXTURE_VARIANTS)]
    for k in ood.OOD_STRENGTHS:
        lo, hi = ood.band("texture", "contrast", k)
        for v in range(ood.TEXTURE_VARIANTS):
            img = texture_image(TRAIN_SPLIT, k, v)
            np.testing.assert_array_equal(img, texture_image(TRAIN_SPLIT, k, v))  # a fixed function
            assert not any(np.array_equal(img, h) for h in held)
            colours = img.reshape(-1, 3).astype(float) / 255
            spread = np.linalg.norm(colours.max(axis=0) - colours.min(axis=0))
            assert 0.5 * lo < spread <= hi + 0.02  # two colours at the band's contrast and their mixes


def _task(conditions: dict, **extra) -> dict:
    return {"name": "t", "scene": "reach", "initial_joint_angles": [0.0] * 7, "ee_points": np.eye(3).tolist(),
            "target_points": np.eye(3).tolist(),
            "conditions": {"train": [{"target_position": [0.5, -0.3, 0.47]}], **conditions}, **extra}


@pytest.mark.parametrize("conditions,match", [
    ({"visual_validation": {"positions": "train", "random_scene": {"lighting": 1}}},
     r"visual_validation\[0\].random_scene: \{'lighting': 1\} is training-time"),
    ({"visual_test": [{"target_position": [0.5, -0.3, 0.47], "random_scene": {"texture": 2, "camera": 0}}]},
     r"visual_test\[0\].random_scene: \{'texture': 2\}"),
    ({"ood_clutter_1_validation": {"positions": "train", "ood": {"kind": "clutter", "strength": 1,
                                                                  "split": "validation", "scene": {"camera": 1}}}},
     r"ood_clutter_1_validation\[0\].ood.scene: \{'camera': 1\}"),
])
def test_only_training_draws_may_turn_it_on(conditions, match):
    with pytest.raises(ValueError, match=match):
        task_from_dict(_task(conditions))


def test_training_sets_take_it_and_bad_values_name_the_key():
    task = task_from_dict(_task({"visual_validation": {"positions": "train", "random_scene": {"lighting": 0}}},
                                sample_scenes={"texture": 2, "lighting": 1}))
    assert task.condition_list("train")[0].random_scene == {"texture": 2, "lighting": 1}
    assert appearance_strengths(task.condition_list("train")[0].random_scene) == {"lighting": 1, "texture": 2}
    for key in ("lighting", "camera", "texture"):
        for bad in (4, -1, True, 1.5, "2"):
            with pytest.raises(ValueError, match=rf"random_scene.{key}: expected an integer strength 0..3 .*{bad!r}"):
                scene_spec({key: bad})
