"""The one typed experiment config (gps_trainer.config): every shipped config loads and round-trips; bad
values, unknown keys, empty and non-mapping files are rejected with an error naming file, key and value."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from gps_trainer.config import (
    BADMMConfig,
    ConfigError,
    ExperimentConfig,
    MDGPSConfig,
    TrajOptConfig,
    TrajOptOnlyConfig,
    apply_overrides,
    config_to_dict,
    experiment_from_dict,
    load_experiment,
    parse_overrides,
)
from gps_trainer.config_schema import typed_from_dict
from gps_trainer.policy_opt import PolicyOptConfig
from gps_trainer.pose_pretraining import PosePretrainConfig

ROOT = Path(__file__).resolve().parents[3]
EXPERIMENTS = sorted((ROOT / "config" / "experiments").glob("*.yaml"))
POLICY = sorted((ROOT / "config" / "policy").glob("*.yaml"))
BASE = ROOT / "config" / "experiments" / "reach_mdgps.yaml"


def test_the_shipped_configs_are_found():
    assert len(EXPERIMENTS) >= 8 and len(POLICY) >= 4


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_experiment_loads_and_round_trips(path):
    cfg = load_experiment(path)
    raw = yaml.safe_load(path.read_text())
    assert cfg.name == raw["name"] and cfg.task == raw["task"] and cfg.iterations == raw["iterations"]
    kind = {"traj_opt": TrajOptOnlyConfig, "mdgps": MDGPSConfig, "badmm": BADMMConfig}[raw["algorithm"]["type"]]
    assert type(cfg.algorithm) is kind and cfg.algorithm.type == raw["algorithm"]["type"]
    plain = json.loads(json.dumps(config_to_dict(cfg)))  # JSON-able
    assert experiment_from_dict(plain) == cfg
    assert config_to_dict(experiment_from_dict(plain)) == plain


def test_policy_configs_load():
    sections = {p.stem: yaml.safe_load(p.read_text()) for p in POLICY}
    pose = PosePretrainConfig.from_yaml(ROOT / "config/policy/pose_pretrain.yaml")
    assert (pose.image_size, pose.num_train) == (sections["pose_pretrain"]["pose_pretrain"]["image_size"],
                                                  sections["pose_pretrain"]["pose_pretrain"]["num_train"])
    opt = PolicyOptConfig.from_yaml(ROOT / "config/policy/policy_opt.yaml")
    assert opt.batch_size == sections["policy_opt"]["policy_opt"]["batch_size"]
    # the policy sections are what MDGPS's `policy` key takes: they validate as one
    for name in ("mlp", "visuomotor_cnn"):
        spec = sections[name]["policy"]
        obs = "state" if spec["type"] == "mlp" else "observation"
        alg = MDGPSConfig(policy=spec, policy_obs=obs)
        assert alg.policy["type"] == spec["type"]


def test_defaults_follow_the_reference():
    cfg = experiment_from_dict({"algorithm": {"type": "badmm"}})
    t, d, alg = cfg.algorithm.traj_opt, cfg.algorithm.dynamics, cfg.algorithm
    assert (t.kl_step, t.min_step_mult, t.max_step_mult, t.init_eta) == (0.2, 0.01, 10.0, 1.0)
    assert (d.prior.max_clusters, d.prior.min_samples_per_cluster, d.prior.max_samples) == (20, 40, 20)
    assert (alg.inner_iterations, alg.init_pol_wt, alg.policy_dual_rate) == (4, 0.01, 0.1)
    assert alg.policy_opt_config().seed == alg.policy_seed
    assert isinstance(experiment_from_dict({}).algorithm, TrajOptOnlyConfig)


def test_overrides_are_applied_before_typing():
    cfg = load_experiment(BASE, parse_overrides(["iterations=3", "algorithm.traj_opt.kl_step=0.05",
                                                 "algorithm.cost.0.wu=0.01", "algorithm.policy_opt.device=cpu",
                                                 "horizon=0"]))
    assert (cfg.iterations, cfg.algorithm.traj_opt.kl_step, cfg.horizon) == (3, 0.05, 0)
    assert cfg.algorithm.cost[0]["wu"] == 0.01 and cfg.algorithm.policy_opt_config().device == "cpu"
    # the type switches the whole algorithm section's schema
    cfg = load_experiment(BASE, {"algorithm.type": "badmm", "algorithm.inner_iterations": 2})
    assert isinstance(cfg.algorithm, BADMMConfig) and cfg.algorithm.inner_iterations == 2
    with pytest.raises(ValueError, match="not key=value"):
        parse_overrides(["iterations"])


def test_apply_overrides_creates_sections_and_refuses_to_descend_into_values():
    raw = apply_overrides({"a": None, "b": 1}, {"a.x.y": 2, "c.d": 3})
    assert raw == {"a": {"x": {"y": 2}}, "b": 1, "c": {"d": 3}}
    with pytest.raises(ConfigError, match=r"b\.z.*not a mapping"):
        apply_overrides({"b": 1}, {"b.z": 2})
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides({"l": [1, 2]}, {"l.5": 0})


# (override, key in the message, value in the message)
BAD_VALUES = [
    ({"iterations": "ten"}, "iterations", "'ten'"),
    ({"iterations": True}, "iterations", "True"),
    ({"iterations": 0}, "iterations", "0"),
    ({"iterations": 2.0}, "iterations", "2.0"),
    ({"samples_per_condition": 2.7}, "samples_per_condition", "2.7"),
    ({"conditions": 0}, "conditions", "0"),
    ({"conditions": 9}, "conditions", "9"),  # reach has 4 training conditions
    ({"seed": -1}, "seed", "-1"),
    ({"horizon": -5}, "horizon", "-5"),
    ({"horizon": "long"}, "horizon", "'long'"),
    ({"horizon": 10**6}, "horizon", "1000000"),
    ({"image_size": -5}, "image_size", "-5"),
    ({"name": ["a"]}, "name", "['a']"),
    ({"task": "no_such_task"}, "task", "'no_such_task'"),
    ({"algorithm.type": "sac"}, "algorithm.type", "'sac'"),
    ({"algorithm": "mdgps"}, "algorithm", "'mdgps'"),
    ({"algorithm.traj_opt.kl_step": -0.1}, "algorithm.traj_opt.kl_step", "-0.1"),
    ({"algorithm.traj_opt.kl_step": float("nan")}, "algorithm.traj_opt.kl_step", "nan"),
    ({"algorithm.traj_opt.kl_step": "1e-3"}, "algorithm.traj_opt.kl_step", "write 1.0e-3; got '1e-3'"),
    ({"algorithm.traj_opt.max_eta": float("inf")}, "algorithm.traj_opt.max_eta", "inf"),
    ({"algorithm.traj_opt.min_step_mult": 20.0}, "algorithm.traj_opt.min_step_mult", "20.0"),
    ({"algorithm.traj_opt.max_eta_iterations": 1.5}, "algorithm.traj_opt.max_eta_iterations", "1.5"),
    ({"algorithm.dynamics.prior.max_clusters": 0}, "algorithm.dynamics.prior.max_clusters", "0"),
    ({"algorithm.dynamics.regularization": -1e-6}, "algorithm.dynamics.regularization", "-1e-06"),
    ({"algorithm.init_controller.type": "pid"}, "algorithm.init_controller.type", "'pid'"),
    ({"algorithm.init_controller.gains": [1.0, -2.0]}, "algorithm.init_controller.gains[1]", "-2.0"),
    ({"algorithm.init_controller.gains": []}, "algorithm.init_controller.gains", "[]"),
    ({"algorithm.init_controller.gains": "fast"}, "algorithm.init_controller.gains", "'fast'"),
    ({"algorithm.sampling.noise": "yes"}, "algorithm.sampling.noise", "'yes'"),
    ({"algorithm.sampling.smooth_noise_std": -1}, "algorithm.sampling.smooth_noise_std", "-1"),
    ({"algorithm.cost": []}, "algorithm.cost", "[]"),
    ({"algorithm.cost.0.type": "torque"}, "algorithm.cost[0]", "'torque'"),
    ({"algorithm.cost.1.wpp": 1.0}, "algorithm.cost[1]", "'wpp'"),
    ({"algorithm.policy_obs": "pixels"}, "algorithm.policy_obs", "'pixels'"),
    ({"algorithm.step_rule": "exact"}, "algorithm.step_rule", "'exact'"),
    ({"algorithm.policy_seed": -3}, "algorithm.policy_seed", "-3"),
    ({"algorithm.policy.type": "rnn"}, "algorithm.policy.type", "'rnn'"),
    ({"algorithm.policy.init_var": 0}, "algorithm.policy.init_var", "0"),
    ({"algorithm.policy.net.hidden": [64, "x"]}, "algorithm.policy.net.hidden[1]", "'x'"),
    ({"algorithm.policy.net.depth": 3}, "algorithm.policy.net.depth", None),
    ({"algorithm.policy_opt.batch_size": 0}, "algorithm.policy_opt.batch_size", "0"),
    ({"algorithm.policy_opt.learning_rate": "fast"}, "algorithm.policy_opt.learning_rate", "'fast'"),
    ({"algorithm.policy_prior.strength": 0}, "algorithm.policy_prior.strength", "0"),
]


@pytest.mark.parametrize("override,key,value", BAD_VALUES, ids=[str(b[0]) for b in BAD_VALUES])
def test_bad_values_are_rejected_naming_file_key_and_value(tmp_path, override, key, value):
    raw = yaml.safe_load(BASE.read_text())
    apply_overrides(raw, override)
    path = tmp_path / "bad_experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key}"), msg
    assert err.value.key == key and err.value.source == str(path)
    if value is not None:
        assert value in msg, msg
    # the same through the overrides argument, marked as such
    with pytest.raises(ConfigError) as err2:
        load_experiment(BASE, override)
    assert str(err2.value).startswith(f"{BASE}: {key}") and "override" in str(err2.value)


BAD_BADMM = [
    ({"algorithm.inner_iterations": 0}, "algorithm.inner_iterations", "0"),
    ({"algorithm.fixed_lg_step": 4}, "algorithm.fixed_lg_step", "4"),
    ({"algorithm.lg_step_schedule": [10.0, -1.0]}, "algorithm.lg_step_schedule[1]", "-1.0"),
    ({"algorithm.init_pol_wt": 0.0}, "algorithm.init_pol_wt", "0.0"),
    ({"algorithm.inner_iteration": 2}, "algorithm.inner_iteration", None),
]


@pytest.mark.parametrize("override,key,value", BAD_BADMM, ids=[str(b[0]) for b in BAD_BADMM])
def test_bad_badmm_values(override, key, value):
    path = ROOT / "config" / "experiments" / "reach_badmm.yaml"
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: {key}")) as err:
        load_experiment(path, override)
    assert value is None or value in str(err.value)


def test_unknown_keys_are_rejected_with_the_known_ones(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: t\ntask: reach\nalgorithm:\n  type: traj_opt\n  traj_opt:\n    kl_stepp: 0.1\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: algorithm.traj_opt.kl_stepp: unknown key; .*kl_step"):
        load_experiment(path)
    path.write_text("name: t\nnum_conditions: 4\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: num_conditions: unknown key"):
        load_experiment(path)
    # keys of another algorithm are unknown to this one
    with pytest.raises(ConfigError, match=r"algorithm.inner_iterations: unknown key"):
        load_experiment(BASE, {"algorithm.type": "mdgps", "algorithm.inner_iterations": 2})
    with pytest.raises(ConfigError, match=r"algorithm.policy: unknown key"):
        load_experiment(BASE, {"algorithm.type": "traj_opt"})


@pytest.mark.parametrize("text,reason", [
    ("", "empty experiment file"),
    ("# only a comment\n", "empty experiment file"),
    ("- a\n- b\n", "must be a mapping"),
    ("just a string\n", "must be a mapping"),
    ("name: a\nname: b\n", "duplicate key 'name'"),
    ("name: [unclosed\n", "not valid YAML"),
    ("name: t\nalgorithm:\n  traj_opt: {}\n", "algorithm.type: missing"),
])
def test_empty_non_mapping_and_malformed_files(tmp_path, text, reason):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=reason) as err:
        load_experiment(path)
    assert str(err.value).startswith(f"{path}: ")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml: cannot read"):
        load_experiment(tmp_path / "nowhere.yaml")


def test_from_dict_names_its_source_and_rejects_non_mappings():
    with pytest.raises(ConfigError, match=r"^run-42: iterations: expected an integer; got 'ten'"):
        experiment_from_dict({"iterations": "ten"}, source="run-42")
    with pytest.raises(ConfigError, match=r"^<dict>: empty"):
        experiment_from_dict(None)
    with pytest.raises(ConfigError, match=r"must be a mapping"):
        experiment_from_dict([1, 2])  # type: ignore[arg-type]


def test_visuomotor_policy_needs_observations_and_the_camera_size():
    visual = ROOT / "config" / "experiments" / "reach_mdgps_visual.yaml"
    with pytest.raises(ConfigError, match=r"algorithm.policy_obs: a visuomotor_cnn policy sees observations"):
        load_experiment(visual, {"algorithm.policy_obs": "state"})
    with pytest.raises(ConfigError, match=r"algorithm.policy.net.image_height: must equal image_size \(32\).*; got 64"):
        load_experiment(visual, {"image_size": 32})
    assert load_experiment(visual, {"image_size": 32, "algorithm.policy.net.image_height": 32,
                                    "algorithm.policy.net.image_width": 32}).image_size == 32
    with pytest.raises(ConfigError, match=r"algorithm.policy.net.image_height: must equal image_size \(128\).*; got 64"):
        experiment_from_dict({"image_size": 128, "algorithm": {"type": "mdgps", "policy_obs": "observation",
                                                              "policy": {"type": "visuomotor_cnn"}}})


def test_direct_construction_is_checked_too():
    with pytest.raises(ConfigError, match=r"kl_step: must be > 0.0; got -1.0"):
        TrajOptConfig(kl_step=-1.0)
    with pytest.raises(ConfigError, match=r"conditions: expected an integer; got 2.5"):
        ExperimentConfig(conditions=2.5)  # type: ignore[arg-type]
    assert TrajOptConfig(kl_step=1).kl_step == 1.0 and isinstance(TrajOptConfig(kl_step=1).kl_step, float)


def test_pose_and_policy_opt_sections_use_the_same_checks(tmp_path):
    with pytest.raises(ConfigError, match=r"^num_train: must be >= 1; got 0"):
        PosePretrainConfig.from_dict({"num_train": 0})
    with pytest.raises(ConfigError, match=r"^image_size: expected an integer; got 64.5"):
        PosePretrainConfig.from_dict({"image_size": 64.5})
    with pytest.raises(ConfigError, match=r"^condition_set: expected one of"):
        PosePretrainConfig.from_dict({"condition_set": "test"})
    with pytest.raises(ConfigError, match=r"^device: expected auto, cpu or cuda"):
        PosePretrainConfig.from_dict({"device": "gpu0"})
    with pytest.raises(ConfigError, match=r"^net.conv_filters\[0\]: expected an integer"):
        PosePretrainConfig.from_dict({"net": {"conv_filters": ["a", 2, 3]}})
    with pytest.raises(ConfigError, match=r"^net.image_width: must equal image_size \(64\); got 32"):
        PosePretrainConfig.from_dict({"net": {"image_width": 32}})
    assert PosePretrainConfig.from_dict({"image_size": 32, "net": {"image_width": 32}}).vision_config().image_width == 32
    with pytest.raises(ConfigError, match=r"^target_box: expected"):
        PosePretrainConfig.from_dict({"target_box": [[0, 0], [1, 1]]})
    bad = tmp_path / "pose.yaml"
    bad.write_text("pose_pretrain:\n  learning_rate: -1.0\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: pose_pretrain.learning_rate: must be > 0.0; got -1.0"):
        PosePretrainConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match=r"^lr: unknown key"):
        PolicyOptConfig.from_dict({"lr": 1.0})
    with pytest.raises(ConfigError, match=r"^iterations: expected an integer; got '1000' \(a string\)$"):
        PolicyOptConfig.from_dict({"iterations": "1000"})
    with pytest.raises(ConfigError, match=r"^batch_size: must be >= 1; got 0"):
        PolicyOptConfig.from_dict({"batch_size": 0})
    assert typed_from_dict(PolicyOptConfig, None) == PolicyOptConfig()


BIG = "1" * 5000


# (override items, key the message names, words in it): every way an override can be malformed
BAD_OVERRIDES = [
    (["iterations=[1"], "iterations", "not valid YAML"),
    (["algorithm.traj_opt.kl_step=!!python/object/apply:os.system ['true']"], "algorithm.traj_opt.kl_step",
     "the YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed"),
    ([f"iterations={BIG}"], "iterations", "an integer of 5000 digits is outside the 64-bit range"),
    ([f"algorithm.cost.0.wu={BIG}"], "algorithm.cost.0.wu", "an integer of 5000 digits"),
    (["algorithm.policy.net={hidden: [1, 2], x: !!python/tuple [1]}"], "algorithm.policy.net.x",
     "the YAML tag 'tag:yaml.org,2002:python/tuple' is not allowed"),
    ([3], "[0]", "expected a key=value string; got 3"),
    ([None], "[0]", "expected a key=value string; got None"),
    (["=5"], "[0]", "override is not key=value"),
    (["seed=1", "seed=2"], "seed", "override given twice"),
]


@pytest.mark.parametrize("items, key, words", BAD_OVERRIDES, ids=[str(b[0])[:40] for b in BAD_OVERRIDES])
def test_malformed_overrides_are_refused_naming_the_key(items, key, words):
    with pytest.raises(ConfigError) as err:
        parse_overrides(items, source="trainer.yaml: overrides")
    msg = str(err.value)
    assert msg.startswith(f"trainer.yaml: overrides: {key}: ") and words in msg and len(msg) < 600, msg


# (override, key, bound): every count has an upper bound, every seed 32 bits
OUT_OF_RANGE = [
    ({"seed": 2**64}, "seed", "must be <= 4294967295"),
    ({"iterations": 10**30}, "iterations", "must be <= 10000"),
    ({"samples_per_condition": 10**9}, "samples_per_condition", "must be <= 1000"),
    ({"horizon": 100_000}, "horizon", "must be <= 99999"),
    ({"algorithm.type": "mdgps", "algorithm.policy_seed": 2**32}, "algorithm.policy_seed", "must be <= 4294967295"),
    ({"algorithm.type": "mdgps", "algorithm.policy_opt.iterations": 10**12}, "algorithm.policy_opt.iterations",
     "must be <= 10000000"),
    ({"algorithm.type": "mdgps", "algorithm.policy.type": "mlp", "algorithm.policy.net.hidden": [64, 10**6]},
     "algorithm.policy.net.hidden", "architecture size 'hidden'=1000000 exceeds the limit of 4096"),
    ({"algorithm.dynamics.prior.max_clusters": 10**9}, "algorithm.dynamics.prior.max_clusters", "must be <= 1000"),
]


@pytest.mark.parametrize("override, key, words", OUT_OF_RANGE, ids=[b[1] for b in OUT_OF_RANGE])
def test_counts_and_seeds_beyond_their_bounds_are_refused(override, key, words):
    path = ROOT / "config" / "experiments" / "reach_traj_opt.yaml"
    with pytest.raises(ConfigError) as err:
        load_experiment(path, override, overrides_source="-p overrides")
    assert str(err.value).startswith(f"{path}: {key}: {words}"), str(err.value)
    assert str(err.value).endswith("(set by an override in -p overrides)")


def _config_classes():
    from gps_trainer import config as C

    return [C.GMMPriorConfig, C.DynamicsConfig, C.TrajOptConfig, C.InitControllerConfig, C.SamplingConfig,
            C.TrajOptOnlyConfig, C.MDGPSConfig, C.BADMMConfig, C.ExperimentConfig, PolicyOptConfig,
            PosePretrainConfig]


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_every_integer_key_has_both_bounds(cls):
    """The schema documents a range for every integer (counts, sizes, seeds): none is unbounded above."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if int in (typing.get_args(hints[f.name]) or (hints[f.name],)):
            bounds = f.metadata.get("bounds") or {}
            assert bounds.get("ge") is not None or bounds.get("gt") is not None, f.name
            assert bounds.get("le") is not None or bounds.get("lt") is not None, f.name


def test_yaml_files_with_tags_and_huge_integers_name_the_key(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: t\nalgorithm:\n  type: traj_opt\n  traj_opt:\n    max_eta_iterations: {BIG}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: algorithm.traj_opt.max_eta_iterations: an integer of 5000"):
        load_experiment(path)
    path.write_text("name: !!python/name:os.system\n")
    with pytest.raises(ConfigError, match=rf"^{path}: name: the YAML tag 'tag:yaml.org,2002:python/name:os.system'"):
        load_experiment(path)
    path.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=rf"^{path}: .*not valid YAML"):
        load_experiment(path)
