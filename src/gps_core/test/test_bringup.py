"""gps_core.bringup: the simulated robot runs the experiment's task and image size."""

import pytest

from gps_core.bringup import config_path, experiment_sim_shape, sim_stack
from gps_core.safe_yaml import YAMLValueError
from gps_core.tasks import load_task


def _sim(specs):
    (sim,) = [s for s in specs if s.role == "sim"]
    (controller,) = [s for s in specs if s.role == "controller"]
    assert {k: controller.overrides.get(k) for k in ("task", "image_size")} == \
        {k: sim.overrides.get(k) for k in ("task", "image_size")}, "the controller runs the sim's task"
    return sim


def test_the_sim_gets_the_experiments_task_and_image_size():
    exp = config_path("experiments/reach_grid_dr_mdgps_visual.yaml")
    sim = _sim(sim_stack(experiment=exp))
    assert sim.overrides["task"] == "reach_grid_dr"
    assert sim.overrides["image_size"] == 64
    # the nine training positions the trainer samples must exist in the sim's task
    assert len(load_task(sim.overrides["task"]).condition_list("train")) == 9
    assert "-p" in sim.ros_args() and "task:=reach_grid_dr" in sim.ros_args()


def test_trainer_overrides_of_task_and_image_size_reach_the_sim(tmp_path):
    exp = config_path("experiments/reach_traj_opt.yaml")
    specs = sim_stack(robots=2, experiment=exp,
                      trainer_overrides={"overrides": ["task=reach_grid", "image_size=32", "iterations=3"]})
    sims = [s for s in specs if s.role in ("sim", "controller")]
    assert len(sims) == 4
    assert all(s.overrides["task"] == "reach_grid" and s.overrides["image_size"] == 32 for s in sims)
    assert "iterations" not in sims[0].overrides


def test_no_experiment_leaves_the_sims_parameter_file_alone():
    assert experiment_sim_shape("") == {}
    assert set(_sim(sim_stack()).overrides) == {"publish_clock"}  # the task comes from sim.yaml


def test_a_broken_experiment_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(YAMLValueError, match="bad.yaml"):
        experiment_sim_shape(str(bad))


def test_publish_images_reaches_the_sims_only_when_asked():
    assert "publish_images" not in _sim(sim_stack()).overrides
    specs = sim_stack(robots=2, publish_images=False)
    assert [s.overrides["publish_images"] for s in specs if s.role == "sim"] == [False, False]
    assert "publish_images:=false" in [x for s in specs if s.role == "sim" for x in s.ros_args()]
