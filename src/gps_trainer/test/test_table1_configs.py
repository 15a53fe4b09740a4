"""The experiments scripts/table1.sh runs per task (its ``case "$TASK"`` block, parsed here): every one loads
with the script's overrides; the state and visuomotor MDGPS runs optimize the same cost as the trajectory
optimization whose controllers they start from; all three train on the same conditions, and the visuomotor
run's task is a scene-randomized (``_dr``) variant of them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from gps_core.ood import TRAIN_APPEARANCE_KEYS
from gps_core.tasks import load_task
from gps_trainer.config import ExperimentConfig, load_experiment, parse_overrides

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "table1.sh"
TASKS = ("reach", "shape_sorting", "coat_hanger", "toy_hammer", "bottle_cap")
ARRAYS = ("CTRL", "STATE", "VISUAL")


def parse_case_block(text: str) -> dict[str, dict[str, list[str]]]:
    """``{task: {"NPOS": [n], "CTRL": [args], "STATE": [...], "VISUAL": [...]}}`` from the script's case block
    (shell words as bash splits them: comments dropped, quotes removed)."""
    m = re.search(r'^case "\$TASK" in\n(.*?)^esac$', text, re.S | re.M)
    assert m, f"{SCRIPT}: no 'case \"$TASK\" in ... esac' block"
    branches: dict[str, dict[str, list[str]]] = {}
    for bm in re.finditer(r"^  ([\w|]+)\)(.*?);;", m.group(1), re.S | re.M):
        words = shlex.split(bm.group(2), comments=True)
        arrays: dict[str, list[str]] = {}
        current: str | None = None
        for w in words:
            if current is None:
                am = re.fullmatch(r"(\w+)=\((.*)", w)
                if am is None:
                    name, _, value = w.partition("=")
                    arrays[name] = [value]
                    continue
                current, w = am.group(1), am.group(2)
                arrays[current] = []
            closed = w.endswith(")")
            w = w[:-1] if closed else w
            if w:
                arrays[current].append(w)
            if closed:
                current = None
        assert current is None, f"{SCRIPT}: branch {bm.group(1)!r}: array {current} not closed"
        for task in bm.group(1).split("|"):
            branches[task] = arrays
    return branches


SCRIPT_TEXT = SCRIPT.read_text()
BRANCHES = parse_case_block(SCRIPT_TEXT)


def experiment(task: str, which: str) -> ExperimentConfig:
    args = BRANCHES[task][which]
    assert args[0] == "--config", f"{task} {which}: {args}"
    return load_experiment(ROOT / args[1], parse_overrides(args[2:]))


def test_the_parser_reads_the_arrays_as_bash_does():
    text = ('case "$TASK" in\n  a|b)   # two (tasks)\n    NPOS=4\n    CTRL=(--config x.yaml k=1)\n'
            "    VISUAL=(--config y.yaml task=t\n            'p.q=cpu') ;;\n  *) exit 2 ;;\nesac\n")
    got = parse_case_block(text)
    assert set(got) == {"a", "b"}
    assert got["a"] == {"NPOS": ["4"], "CTRL": ["--config", "x.yaml", "k=1"],
                        "VISUAL": ["--config", "y.yaml", "task=t", "p.q=cpu"]}


def test_the_script_has_a_recipe_for_each_task_and_names_them_all():
    assert set(BRANCHES) == set(TASKS)
    for task, arrays in BRANCHES.items():
        assert set(ARRAYS) | {"NPOS"} <= set(arrays), f"{task}: {sorted(arrays)}"
    usage = re.search(r"usage: table1\.sh ([\w|]+) \[OUT\]", SCRIPT_TEXT)
    error = re.search(r"no Table I recipe for task '\$TASK' \(([\w, ]+)\)", SCRIPT_TEXT)
    assert usage and set(usage.group(1).split("|")) == set(TASKS)
    assert error and set(error.group(1).split(", ")) == set(TASKS)
    assert '"phase 2: local controllers by trajectory optimization on the $NPOS training positions"' in SCRIPT_TEXT


@pytest.mark.parametrize("task", TASKS)
def test_every_experiment_loads_with_the_scripts_overrides(task):
    ctrl, state, visual = (experiment(task, w) for w in ARRAYS)
    assert ctrl.algorithm.type == "traj_opt"
    assert state.algorithm.type == "mdgps" and state.algorithm.policy_obs == "state"
    assert visual.algorithm.type == "mdgps" and visual.algorithm.policy["type"] == "visuomotor_cnn"


@pytest.mark.parametrize("task", TASKS)
def test_every_training_run_takes_the_scripts_training_seed(task):
    """TABLE1_SEED reaches the three training runs as these overrides (the script's, checked here to load and
    take effect for every task's experiments)."""
    for which, keys in (("CTRL", ("seed",)), ("STATE", ("seed", "algorithm.policy_seed")),
                        ("VISUAL", ("seed", "algorithm.policy_seed"))):
        line = "override " + which + "".join(f' {k}="$SEED"' for k in keys)
        assert line in SCRIPT_TEXT, line
        args = BRANCHES[task][which]
        e = load_experiment(ROOT / args[1], parse_overrides([*args[2:], *(f"{k}=7" for k in keys)]))
        assert e.seed == 7, (task, which)
        if which != "CTRL":
            assert e.algorithm.policy_seed == 7, (task, which)


@pytest.mark.parametrize("task", TASKS)
def test_the_mdgps_runs_optimize_the_trajectory_optimizations_cost(task):
    ctrl, state, visual = (experiment(task, w) for w in ARRAYS)
    assert state.algorithm.cost == ctrl.algorithm.cost, f"{task}: state MDGPS cost != {BRANCHES[task]['CTRL'][1]}"
    assert visual.algorithm.cost == ctrl.algorithm.cost, f"{task}: visual MDGPS cost != {BRANCHES[task]['CTRL'][1]}"
    # the methods get the same rollout budget, and the local dynamics are fitted from at least as many
    # rollouts as the trajectory optimization was tuned with (shape_sorting's GPS runs: 10, validated)
    assert state.samples_per_condition == visual.samples_per_condition >= ctrl.samples_per_condition, task


def _same_conditions(a, b) -> bool:
    return (np.array_equal(a.target_pose, b.target_pose) and np.array_equal(a.joint_angles, b.joint_angles)
            and ((a.grasp is None and b.grasp is None)
                 or (a.grasp is not None and b.grasp is not None and np.array_equal(a.grasp, b.grasp))))


@pytest.mark.parametrize("task", TASKS)
def test_all_three_train_on_the_same_conditions_and_the_visual_run_randomizes_its_scenes(task):
    ctrl, state, visual = (experiment(task, w) for w in ARRAYS)
    n = int(BRANCHES[task]["NPOS"][0])
    assert ctrl.conditions == state.conditions == visual.conditions == n
    assert state.task in (task, f"{task}_grid") and ctrl.task == state.task
    assert visual.task in (f"{task}_dr", f"{task}_grid_dr", f"{task}_grid_dr_appearance")
    conds = {e.task: load_task(e.task).condition_list("train")[:n] for e in (ctrl, state, visual)}
    ref = conds[state.task]
    assert len(ref) == n
    for name, cs in conds.items():
        assert len(cs) == n and all(_same_conditions(a, b) for a, b in zip(cs, ref, strict=True)), name
    assert all(c.random_scene for c in conds[visual.task]), f"{visual.task}: no sample_scenes"
    assert not any(c.random_scene for c in ref), f"{state.task}: its training samples should be clean"
    # The scene spec of the samples is the task's own visual-set spec (the one pose pretraining draws from).
    spec = next(c.random_scene for c in load_task(task).condition_list("visual_validation") if c.random_scene)
    samples = [{k: v for k, v in c.random_scene.items() if k != "probability" and k not in TRAIN_APPEARANCE_KEYS}
               for c in conds[visual.task]]
    assert all(sample == spec for sample in samples)
    # the appearance levers (issue 24) are the same in the GPS samples and in pose pretraining (APPEARANCE)
    levers = [{k: c.random_scene[k] for k in TRAIN_APPEARANCE_KEYS if c.random_scene.get(k)} for c in conds[visual.task]]
    pose = dict(w.removeprefix("scene_").split("=") for w in BRANCHES[task].get("APPEARANCE", []))
    assert all(lever == {k: int(v) for k, v in pose.items()} for lever in levers), (task, levers[0], pose)
    # pose pretraining sees the task's own scene as often as the GPS samples do (toy_hammer: a quarter)
    default = re.search(r"^SCENES=([\d.]+)", SCRIPT_TEXT, re.M)
    assert default, f"{SCRIPT}: no default SCENES="
    share = float(BRANCHES[task].get("SCENES", [default.group(1)])[0])
    assert share == conds[visual.task][0].random_scene.get("probability", 1.0), (task, share)
