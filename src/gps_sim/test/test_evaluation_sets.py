"""The evaluation protocol's condition sets (issue 12): seeded position draws, no overlap between training,
validation and test positions, start perturbations and random distractor scenes drawn in ArmSim.reset."""

from __future__ import annotations

import numpy as np
import pytest

from gps_core.tasks import load_task, task_from_dict
from gps_sim import ArmSim
from gps_sim.scenes import DISTRACTOR_SHAPES, NUM_DISTRACTORS, draw_distractor_scene, scene_spec

TASKS = ("reach", "shape_sorting")


def _positions(task, cset):
    return np.array([c.target_pose[:3] for c in task.condition_list(cset)])


@pytest.mark.parametrize("name", TASKS)
def test_drawn_positions_reproducible_inside_training_box_and_apart(name):
    a, b = load_task(name), load_task(name)
    np.testing.assert_array_equal(_positions(a, "spatial_test"), _positions(b, "spatial_test"))
    tr, sp, va = _positions(a, "train"), _positions(a, "spatial_test"), _positions(a, "validation")
    assert len(sp) >= 36 and len(va) >= 20
    lo, hi = tr.min(axis=0), tr.max(axis=0)
    for pos in (sp, va):
        assert np.all(pos[:, :2] >= lo[:2]) and np.all(pos[:, :2] <= hi[:2])
        np.testing.assert_allclose(pos[:, 2], tr[0, 2])  # the training height
    # drawn uniformly: the points cover the box (each quadrant of it holds some)
    mid = (lo + hi) / 2
    quadrant = (sp[:, 0] > mid[0]) * 2 + (sp[:, 1] > mid[1])
    assert set(quadrant.tolist()) == {0, 1, 2, 3}
    # training / validation / spatial test pairwise >= 1 cm apart, also within a set
    allpos = np.vstack([tr, va, sp])
    d = np.linalg.norm(allpos[:, None] - allpos[None], axis=-1) + np.eye(len(allpos))
    assert d.min() >= 0.01
    # the Table I sets: training positions reused (same poses) for train_perturbed and the visual sets
    for cset in ("train_perturbed", "visual_test", "visual_validation"):
        np.testing.assert_allclose([c.target_pose for c in a.condition_list(cset)],
                                   [c.target_pose for c in a.condition_list("train")])
    assert a.set_trials["train_perturbed"] >= 27 and a.set_trials["spatial_test"] >= 36
    assert a.set_trials["visual_test"] >= 40
    assert not any(c.perturbation or c.random_scene for c in a.condition_list("train"))


def _task_dict(spatial):
    return {"name": "t", "scene": "reach", "initial_joint_angles": [0.0] * 7, "ee_points": np.eye(3).tolist(),
            "target_points": np.eye(3).tolist(),
            "conditions": {"train": [{"target_position": [0.5, -0.3, 0.47]}, {"target_position": [0.6, -0.1, 0.47]}],
                           "spatial_test": spatial}}


def test_draw_spec_seed_and_errors():
    a = task_from_dict(_task_dict({"draw": {"count": 5, "seed": 1}}))
    b = task_from_dict(_task_dict({"draw": {"count": 5, "seed": 2}}))
    assert a.num_conditions("spatial_test") == 5 and a.set_trials["spatial_test"] == 5
    assert not np.allclose(_positions(a, "spatial_test"), _positions(b, "spatial_test"))
    for bad, key in [({"draw": {"count": 0}}, "draw"), ({"draw": {"count": 3}, "perturbation": 0.5}, "perturbation"),
                     ({"draw": {"count": 3}, "positions": "train"}, "spatial_test"),
                     ({"positions": "nope"}, "positions"), ({"draw": {"count": 3, "bogus": 1}}, "draw"),
                     ({"draw": {"count": 500, "min_separation": 0.09}}, "fit")]:
        with pytest.raises(ValueError, match=key):
            task_from_dict(_task_dict(bad))


def test_draw_gives_new_grasps_the_training_orientation_and_keeps_away_from_avoided_positions():
    # toy_hammer's case: every training condition has a grasp and the same yaw
    train = [{"target_position": [0.5, -0.3, 0.47], "target_yaw": 0.3, "grasp": [-0.02, 0.1]},
             {"target_position": [0.6, -0.1, 0.47], "target_yaw": 0.3, "grasp": [0.01, -0.15]}]
    avoid = [[0.55, -0.2, 0.47], [0.52, -0.15, 0.47]]
    data = _task_dict({"draw": {"count": 40, "seed": 3, "min_separation": 0.01, "avoid": avoid}})
    data["conditions"]["train"] = train
    task = task_from_dict(data)
    drawn = task.condition_list("spatial_test")
    grasps = np.array([c.grasp for c in drawn])
    assert np.all(grasps >= [-0.02, -0.15]) and np.all(grasps <= [0.01, 0.1])
    assert len({tuple(g) for g in grasps.round(6).tolist()}) == 40   # each position its own grasp
    np.testing.assert_allclose([c.target_pose[3:] for c in drawn], [task.condition_list("train")[0].target_pose[3:]] * 40)
    d = np.linalg.norm(_positions(task, "spatial_test")[:, None] - np.array(avoid)[None], axis=-1)
    assert d.min() >= 0.01
    # the positions are those of the same draw without grasps (drawn first, from the same stream) and
    # differ where an avoided position is in the way
    plain = _task_dict({"draw": {"count": 40, "seed": 3, "min_separation": 0.01}})
    plain["conditions"]["train"] = [{k: v for k, v in c.items() if k != "grasp"} for c in train]
    plain_pos = _positions(task_from_dict(plain), "spatial_test")
    near = np.linalg.norm(plain_pos[:, None] - np.array(avoid)[None], axis=-1).min(axis=1) < 0.01
    assert near.any()
    plain["conditions"]["spatial_test"]["draw"]["avoid"] = avoid
    np.testing.assert_array_equal(_positions(task_from_dict(plain), "spatial_test"), _positions(task, "spatial_test"))
    # training conditions without one shared orientation: each drawn position follows the task's rule
    data["conditions"]["train"][1]["target_yaw"] = 0.0
    yaws = {tuple(c.target_pose[3:].round(9)) for c in task_from_dict(data).condition_list("spatial_test")}
    assert yaws != {tuple(np.array(task.condition_list("train")[0].target_pose[3:]).round(9))}
    with pytest.raises(ValueError, match="avoid"):
        task_from_dict(_task_dict({"draw": {"count": 3, "avoid": [0.5, 0.2]}}))


@pytest.mark.parametrize("name", TASKS)
def test_start_perturbation_small_seeded_and_only_on_evaluation_sets(name):
    s = ArmSim(name)
    q0 = s.task.condition_list("train")[1].joint_angles
    qs = []
    for seed in range(20):
        s.reset(1, seed=seed, condition_set="train_perturbed")
        qs.append(s.joint_positions())
        s.reset(1, seed=seed, condition_set="train")  # the GPS samples' resets: never perturbed
        np.testing.assert_array_equal(s.joint_positions(), q0)
    dq = np.array(qs) - q0
    assert np.abs(dq).max() <= 0.03 + 1e-12 and np.abs(dq).max() > 0.02  # a few hundredths of a radian
    assert np.all(np.abs(dq).mean(axis=1) > 0.003)  # every trial perturbed
    assert len({tuple(np.round(q, 9)) for q in qs}) == 20  # every seed its own start
    s.reset(1, seed=7, condition_set="train_perturbed")
    np.testing.assert_array_equal(s.joint_positions(), qs[7])  # a function of (set, condition, seed)
    s.reset(1, seed=7, condition_set="visual_test")
    assert not np.allclose(s.joint_positions(), qs[7])  # the set's name seeds it too
    # train_validation (development) repeats train_perturbed's positions with starts of its own
    np.testing.assert_allclose([c.target_pose for c in s.task.condition_list("train_validation")],
                               [c.target_pose for c in s.task.condition_list("train")], atol=1e-12)
    s.reset(1, seed=7, condition_set="train_validation")
    assert not np.allclose(s.joint_positions(), qs[7])
    assert np.abs(s.joint_positions() - q0).max() <= 0.03 + 1e-12
    assert np.allclose(s.joint_velocities(), 0.0)


def _scene_after_reset(s):
    """(distractors [(shape, position, size, rgba)], table rgba) of the visible distractors."""
    import mujoco

    out = []
    for i in range(NUM_DISTRACTORS):
        for shape in DISTRACTOR_SHAPES:
            g = mujoco.mj_name2id(s.model, mujoco.mjtObj.mjOBJ_GEOM, f"distractor_{i}_{shape}")
            if s.model.geom_rgba[g, 3] > 0:
                out.append((shape, s.data.geom_xpos[g].copy(), s.model.geom_size[g].copy(), s.model.geom_rgba[g].copy()))
    table = mujoco.mj_name2id(s.model, mujoco.mjtObj.mjOBJ_GEOM, "table")
    return out, s.model.geom_rgba[table].copy()


@pytest.mark.parametrize("name", TASKS)
def test_random_distractor_scenes_follow_the_rules(name):
    s = ArmSim(name)
    spec = scene_spec(s.task.condition_list("visual_test")[0].random_scene)
    target_rgba = s._default_rgba[s._geom_ids("target")].copy()
    default_table = _scene_after_reset(s)[1]
    counts, shapes, tables = [], set(), []
    for seed in range(40):
        m = seed % 4
        s.reset(m, seed=seed, condition_set="visual_test")
        dis, table = _scene_after_reset(s)
        counts.append(len(dis))
        tables.append(tuple(table))
        assert np.linalg.norm(table[:3] - default_table[:3]) >= 0.25
        np.testing.assert_array_equal(s.model.geom_rgba[s._geom_ids("target")], target_rgba)  # target keeps its look
        tp = s.target_pose()[:2]
        for shape, pos, size, rgba in dis:
            shapes.add(shape)
            radius = {"box": np.hypot(size[0], size[1]), "ellipsoid": max(size[0], size[1])}.get(shape, size[0])
            assert np.linalg.norm(pos[:2] - tp) - radius - spec["target_radius"] >= 0.06 - 1e-9
            assert np.linalg.norm(pos[:2] - tp) >= 0.06 + spec["target_radius"]  # centre-to-edge >= 6 cm too
            assert np.min(np.linalg.norm(target_rgba[:, :3] - rgba[:3], axis=1)) >= 0.45  # never the target's colour
            assert pos[2] > 0.45  # on the table, above its top face
            assert s._table_bounds[0][0] <= pos[0] <= s._table_bounds[1][0]
        # distractors do not overlap each other
        for i in range(len(dis)):
            for j in range(i):
                assert np.linalg.norm(dis[i][1][:2] - dis[j][1][:2]) > 0.02
    assert set(counts) == {2, 3, 4} and shapes == set(DISTRACTOR_SHAPES)
    assert len(set(tables)) == 40
    # deterministic in (set, condition, seed): again equal, another seed or set different
    s.reset(1, seed=5, condition_set="visual_test")
    a = _scene_after_reset(s)
    s.reset(1, seed=5, condition_set="visual_test")
    b = _scene_after_reset(s)
    assert len(a[0]) == len(b[0]) and all(np.array_equal(x[1], y[1]) for x, y in zip(a[0], b[0], strict=True))
    s.reset(1, seed=5, condition_set="visual_validation")
    c = _scene_after_reset(s)
    assert not np.array_equal(a[1], c[1])
    # the training set afterwards: no distractors, the default table
    s.reset(1, seed=5, condition_set="train")
    dis, table = _scene_after_reset(s)
    assert dis == [] and np.array_equal(table, default_table)


def test_distractors_visible_in_the_image():
    s = ArmSim("shape_sorting", image_size=64, render_images=True)
    plain = s.reset(0, seed=3, condition_set="train_perturbed").image
    scene = s.reset(0, seed=3, condition_set="visual_test").image
    # the same start (same set-independent parts aside): the table colour and the objects change many pixels
    assert np.mean(np.any(plain != scene, axis=-1)) > 0.2
    s.close()


def test_scene_spec_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown"):
        scene_spec({"colour": 1})
    with pytest.raises(ValueError, match="count"):
        scene_spec({"count": [2, 9]})
    with pytest.raises(RuntimeError, match="fit"):  # no room on a tiny table
        draw_distractor_scene({"count": [4, 4]}, rng, np.zeros(2), np.array([[1.0, 0, 0, 1]]),
                              np.array([0.5, 0.5, 0.5, 1]), np.array([[-0.1, -0.1], [0.1, 0.1]]))


@pytest.mark.parametrize("base_name,apart", [("shape_sorting", 0.016), ("coat_hanger", 0.016), ("bottle_cap", 0.016),
                                             ("toy_hammer", 0.01)])
def test_grid_variant_adds_training_positions_away_from_the_evaluation_positions(base_name, apart):
    """*_grid and *_grid_dr: the base task's four training positions first, five more inside their box and
    >= 1.6 cm from every spatial-test and validation position (toy_hammer's 72 drawn ones keep the draws' 1 cm
    from the five, which its draws avoid); those sets stay the base task's."""
    base = load_task(base_name)
    for variant in (f"{base_name}_grid", f"{base_name}_grid_dr"):
        grid = load_task(variant)
        train, base_train = _positions(grid, "train"), _positions(base, "train")
        np.testing.assert_allclose(train[:4], base_train)
        assert len(train) == 9
        assert np.all(train.min(0) >= base_train.min(0) - 1e-12) and np.all(train.max(0) <= base_train.max(0) + 1e-12)
        for cset in ("spatial_test", "validation"):
            np.testing.assert_allclose(_positions(grid, cset), _positions(base, cset))
            d = np.linalg.norm(train[4:, None, :2] - _positions(base, cset)[None, :, :2], axis=-1)
            assert d.min() >= apart, (variant, cset)
    assert all(c.random_scene is not None for c in load_task(f"{base_name}_grid_dr").condition_list("train"))


def test_task_variant_extends_its_base_and_randomizes_only_the_training_samples():
    base, dr = load_task("shape_sorting"), load_task("shape_sorting_grid_dr")
    assert dr.name == "shape_sorting_grid_dr" and dr.scene == base.scene and dr.success_type == base.success_type
    np.testing.assert_array_equal(dr.ee_points, base.ee_points)
    # the grid's first four training positions are the base task's, five added inside the same box, none
    # within 1.6 cm of an evaluation position of the base task
    train = _positions(dr, "train")
    np.testing.assert_allclose(train[:4], _positions(base, "train"))
    assert len(train) == 9 and np.all(train.min(0) >= _positions(base, "train").min(0))
    for cset in ("spatial_test", "validation"):
        d = np.linalg.norm(train[4:, None, :2] - _positions(base, cset)[None, :, :2], axis=-1)
        assert d.min() >= 0.016
    for cset in ("visual_test", "visual_validation"):
        assert [c.random_scene for c in dr.condition_list(cset)][0] == base.condition_list(cset)[0].random_scene
    assert all(c.random_scene is None for c in base.condition_list("train"))
    assert all(c.random_scene is not None for c in dr.condition_list("train"))
    s = ArmSim(dr)
    scenes = []
    for seed in range(3):
        s.reset(0, seed=seed, condition_set="train")
        np.testing.assert_array_equal(s.joint_positions(), dr.condition_list("train")[0].joint_angles)  # unperturbed
        scenes.append(_scene_after_reset(s))
        assert 2 <= len(scenes[-1][0]) <= 4
    assert not np.allclose(scenes[0][1], scenes[1][1])  # the sample's seed draws the scene
    s.reset(0, seed=0, condition_set="visual_test")
    assert not np.allclose(_scene_after_reset(s)[1], scenes[0][1])  # never the evaluation scene of that seed
    for bad, key in [({"extends": "no_such_task"}, "no_such_task"), ({"extends": 3}, "extends"),
                     ({"extends": "shape_sorting", "sample_scenes": [1]}, "sample_scenes")]:
        with pytest.raises(ValueError, match=key):
            task_from_dict({"name": "v", **bad})


def test_sample_scenes_probability_keeps_the_nominal_scene_in_the_training_distribution():
    """A random table is never near the default colour and a random scene has at least one distractor, so a
    policy trained only on random scenes has never seen the task's own scene (toy_hammer's Table I:
    0/45 at the training positions in the plain scene, 39/60 there with distractors). `probability` < 1
    keeps the condition's own scene for that share of the training resets."""
    base = load_task("toy_hammer")
    spec = dict(base.condition_list("visual_test")[0].random_scene)
    nominal = ArmSim(base)
    nominal.reset(0, seed=0, condition_set="train")
    plain_table = _scene_after_reset(nominal)[1]

    def scenes(probability):
        task = task_from_dict({"name": "v", "extends": "toy_hammer",
                               "sample_scenes": {**spec, **({} if probability is None else
                                                            {"probability": probability})}})
        s = ArmSim(task)
        out = []
        for seed in range(40):
            s.reset(1, seed=seed, condition_set="train")
            out.append(_scene_after_reset(s))
        return out

    always, half = scenes(None), scenes(0.5)
    assert all(len(d) >= 2 and not np.allclose(t, plain_table) for d, t in always)
    kept = [len(d) == 0 and np.allclose(t, plain_table) for d, t in half]
    assert 8 <= sum(kept) <= 32  # about half (binomial 40, 0.5: outside [8, 32] has probability < 1e-4)
    assert all(len(d) >= 2 for (d, _), k in zip(half, kept, strict=True) if not k)  # the rest random, as before
    for a, b in zip(always, scenes(1.0), strict=True):  # probability 1 draws the same scenes as no key at all
        np.testing.assert_array_equal(a[1], b[1])
        assert len(a[0]) == len(b[0]) and all(np.array_equal(x[1], y[1]) for x, y in zip(a[0], b[0], strict=True))
    with pytest.raises(ValueError, match="probability"):
        draw_distractor_scene({"probability": 1.5}, np.random.default_rng(0), np.zeros(2),
                              np.array([[1.0, 0.0, 0.0]]), np.array([0.5, 0.5, 0.5, 1]),
                              np.array([[-0.1, -0.1], [0.1, 0.1]]))


def test_every_table_i_set_holds_at_least_the_papers_trial_count():
    """Issue 21 item 5: the paper's trials (coat hanger 18 / 24 / 18, shape sorting 27 / 36 / 40, toy hammer
    45 / 60 / 60, bottle cap 27 / 12 / 40); a listed set with fewer situations than trials gives the rest
    as seeded start perturbations (``entries`` + ``trials``), which it must have."""
    from gps_trainer.paper.evaluation import default_trials

    paper = {"coat_hanger": (18, 24, 18), "shape_sorting": (27, 36, 40), "toy_hammer": (45, 60, 60),
             "bottle_cap": (27, 12, 40)}
    for name, counts in paper.items():
        task = load_task(name)
        for cset, n in zip(("train_perturbed", "spatial_test", "visual_test"), counts, strict=True):
            assert default_trials(task, cset) >= n, (name, cset)
            conds = task.condition_list(cset)
            if default_trials(task, cset) > len(conds):
                assert all(c.perturbation > 0 for c in conds), (name, cset)
        # a new position for every spatial-test trial (toy_hammer's 60 trials were 6 positions until 2026-12-07,
        # and a position's outcome hardly depended on the start perturbation)
        spatial = {tuple(c.target_pose[:3]) for c in task.condition_list("spatial_test")}
        assert len(spatial) >= default_trials(task, "spatial_test"), name


def test_entries_spec_lists_conditions_with_a_trial_count():
    from gps_core.tasks import task_from_dict

    base = load_task("reach")
    data = {"name": "t", "extends": "reach", "conditions": {"visual_test": {
        "trials": 9, "perturbation": 0.02,
        "entries": [{"target_position": [0.6, -0.2, 0.5]}, {"target_position": [0.62, -0.2, 0.5], "perturbation": 0.01}]}}}
    task = task_from_dict(data)
    conds = task.condition_list("visual_test")
    assert len(conds) == 2 and task.set_trials["visual_test"] == 9
    assert [c.perturbation for c in conds] == [0.02, 0.01]  # the entry's own value wins
    assert base.condition_list("train")[0].joint_angles.tolist() == conds[0].joint_angles.tolist()
    for bad in ({"entries": []}, {"entries": "x"}, {"entries": [{"target_position": [0.6, -0.2, 0.5]}], "draw": {}}):
        with pytest.raises(ValueError, match="visual_test"):
            task_from_dict({**data, "conditions": {"visual_test": bad}})
