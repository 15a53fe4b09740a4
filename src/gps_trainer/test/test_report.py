"""`gps report` produces every section from a tiny run of each experiment; sample-efficiency helpers;
the pose-prediction baseline's reconstructed state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gps_trainer.paper.sample_efficiency import gps_curve, steps_to_threshold, summarize

SMALL_CNN = {"type": "visuomotor_cnn", "init_var": 0.1,
             "net": {"image_height": 16, "image_width": 16, "conv_filters": [4, 4, 4],
                     "conv_kernels": [3, 3, 3], "conv_strides": [2, 1, 1], "fc_hidden": [8]}}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_steps_to_threshold():
    curve = [(1000, 0.0), (2000, 0.875), (3000, 0.9), (4000, 1.0)]
    assert steps_to_threshold(curve) == 3000
    assert steps_to_threshold(curve, 1.0) == 4000
    assert steps_to_threshold(curve[:2]) is None
    assert steps_to_threshold([]) is None


def test_gps_curve_counts_environment_steps(tmp_path):
    rows = [{"iteration": i, "cost_per_condition": [10.0, 12.0], "success_rate": r, "policy_cost": 5.0}
            for i, r in enumerate((0.0, 0.5, 1.0))]
    (tmp_path / "experiment.json").write_text(json.dumps({"task": "reach", "conditions": 2, "samples_per_condition": 3,
                                                          "horizon": 10, "seed": 0, "algorithm": {"type": "mdgps"}}))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    g = gps_curve(tmp_path)
    assert g["steps_per_iteration"] == 60
    assert g["curve"] == [(60, 0.0), (120, 0.5), (180, 1.0)]
    row = summarize([], g)[0]
    assert row["steps_to_threshold"] == 180 and row["method"].startswith("GPS")


def test_pose_prediction_actor_rebuilds_the_state_from_a_perfect_prediction():
    from gps_controller.policies import VisuomotorConfig, make_policy
    from gps_sim import ArmSim
    from gps_trainer.paper.baselines import PosePredictionActor
    from gps_trainer.pose_pretraining import PoseRegressor

    sim = ArmSim("reach", image_size=16, render_images=True)
    reg = PoseRegressor(VisuomotorConfig(1, 1, image_height=16, image_width=16, conv_filters=(4, 4, 4),
                                         conv_kernels=(3, 3, 3)))
    pol = make_policy({"type": "mlp", "net": {"hidden": [8]}}, 32, 7, seed=0)
    actor = PosePredictionActor(pol, reg, sim.task)
    for cset in ("train", "spatial_test", "visual_test"):
        ob = sim.reset(1, condition_set=cset)
        # a regressor that always answers the true target position
        with torch.no_grad():
            reg.head.weight.zero_()
            reg.head.bias.zero_()
            reg.pose_mean.copy_(torch.as_tensor(sim.target_pose()[:3], dtype=torch.float32))
        u = actor.act(ob.config, ob.image)
        # the target position comes back through the float32 regressor (~1e-7 relative of 0.5 m), then the
        # MLP maps the rebuilt state: float32 rounding, well inside 1e-6 m and 1e-4 on the torques
        np.testing.assert_allclose(actor.last_prediction, sim.target_pose()[:3], atol=1e-6)
        np.testing.assert_allclose(u, pol.act(sim.state()), atol=1e-4)
    sim.close()


def test_gps_eval_runs_the_pose_prediction_pipeline_as_the_table1_baselines_do(tmp_path, ros_env):
    """`gps eval --pose-regressor` (what `--robustness` needs for pose prediction) gives the trials that
    evaluate_baselines gave, bit for bit, and refuses a regressor file that is not one."""
    import subprocess
    import sys

    from gps_controller.policies import VisuomotorConfig, make_policy, save_policy
    from gps_trainer.paper.baselines import evaluate_baselines
    from gps_trainer.pose_pretraining import PoseRegressor, save_pose_weights

    torch.manual_seed(0)
    reg = PoseRegressor(VisuomotorConfig(1, 1, image_height=16, image_width=16, conv_filters=(4, 4, 4),
                                         conv_kernels=(3, 3, 3)))
    save_pose_weights(reg, tmp_path / "vision.safetensors")
    save_policy(make_policy({"type": "mlp", "net": {"hidden": [8]}}, 32, 7, seed=0), tmp_path / "state.safetensors")
    sets = ("train_perturbed", "visual_test")
    evaluate_baselines("reach", tmp_path, vision=tmp_path / "vision.safetensors",
                       state_policy=tmp_path / "state.safetensors", trials_per_set=3, condition_sets=sets)
    base = [sys.executable, "-m", "gps_trainer.cli", "eval", "--policy", str(tmp_path / "state.safetensors"),
            "--task", "reach", "--sets", *sets, "--trials", "3", "--threads", "1"]
    r = subprocess.run([*base, "--pose-regressor", str(tmp_path / "vision.safetensors"),
                        "--out", str(tmp_path / "eval.json")], env=ros_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ours = json.loads((tmp_path / "eval.json").read_text())
    theirs = json.loads((tmp_path / "eval_pose_prediction.json").read_text())
    assert ours["method"] == "pose_prediction"
    for name in sets:
        for key in ("success", "final_distance", "reset_seeds", "conditions"):
            assert ours["sets"][name][key] == theirs["sets"][name][key], (name, key)
    r = subprocess.run([*base, "--pose-regressor", str(tmp_path / "state.safetensors")], env=ros_env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--pose-regressor:" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_report_has_every_section_from_a_tiny_run(tmp_path):
    from gps_controller.policies import make_policy, save_policy
    from gps_core.tasks import repo_root
    from gps_trainer.config import load_experiment
    from gps_trainer.paper.architectures import run_architecture_table
    from gps_trainer.paper.evaluation import evaluate_policy
    from gps_trainer.paper.report import SECTIONS, generate_report
    from gps_trainer.paper.sample_efficiency import run_model_free
    from gps_trainer.procedure import train_in_simulation

    res = tmp_path / "results"
    # evaluation of a (tiny, untrained) visuomotor policy -> Table I row and the rollout GIF
    cnn = make_policy(SMALL_CNN, 32, 7, seed=0)
    save_policy(cnn, res / "e2e" / "policy.safetensors")
    ev = evaluate_policy(res / "e2e" / "policy.safetensors", "reach", trials_per_set=1, seed=0, horizon=3)
    ev.write_json(res / "eval_end_to_end.json", {"method": "end_to_end", "command": "gps eval ..."})
    # a second task's evaluation in a subfolder -> its own Table I, listed first (the paper's task)
    ev2 = evaluate_policy(res / "e2e" / "policy.safetensors", "shape_sorting", trials_per_set=1, seed=0, horizon=3)
    ev2.write_json(res / "shape_sorting" / "eval_end_to_end.json", {"method": "end_to_end"})
    # robustness curves of the same policy (every validation family, one 3-step trial per set)
    from gps_trainer.paper.robustness import evaluate_robustness, write_robustness_json

    rob = evaluate_robustness(res / "e2e" / "policy.safetensors", "reach", "validation", trials_per_set=1, horizon=3)
    write_robustness_json(rob, "validation", res / "e2e" / "robustness_validation.json",
                          {"method": "end_to_end", "command": "gps eval --robustness ..."})
    # architecture comparison on 10 rendered images
    run_architecture_table({"image_size": 16, "num_train": 6, "num_test": 4, "iterations": 2, "batch_size": 3,
                            "device": "cpu", "output": "", "net": SMALL_CNN["net"] | {"fc_hidden": [8]}},
                           res / "architectures.json", command="python -m gps_trainer.paper.architectures ...")
    # model-free RL: one PPO update
    run_model_free("ppo", 0, 64, 64, res / "model_free" / "ppo_seed0", eval_episodes=1, quiet=True,
                   hyper={"n_steps": 64, "batch_size": 32, "n_epochs": 1}, command="python -m ...")
    # one tiny state-based MDGPS iteration
    cfg = load_experiment(repo_root() / "config/experiments/reach_mdgps.yaml",
                              {"iterations": 1, "conditions": 2, "samples_per_condition": 2, "horizon": 8,
                               "algorithm.dynamics.prior.max_clusters": 2, "algorithm.policy_prior.max_clusters": 2,
                               "algorithm.policy_opt.iterations": 5, "algorithm.policy_opt.device": "cpu"})
    train_in_simulation(cfg, res / "gps_state")
    # a state run on another task: in the cost plot, not in the comparison with model-free RL on reach
    cfg_ss = load_experiment(repo_root() / "config/experiments/shape_sorting_mdgps.yaml",
                                 {"iterations": 1, "conditions": 1, "samples_per_condition": 2, "horizon": 8,
                                  "algorithm.dynamics.prior.max_clusters": 2, "algorithm.policy_prior.max_clusters": 2,
                                  "algorithm.policy_opt.iterations": 5, "algorithm.policy_opt.device": "cpu"})
    train_in_simulation(cfg_ss, res / "_shape_sorting_state")  # sorts before gps_state
    out = generate_report(res, tmp_path / "docs" / "results.md")
    text = out.read_text()
    for section in SECTIONS:
        assert section in text
    assert "No " not in text.split("## How to reproduce")[0]  # every section found its inputs
    assert "| end-to-end training |" in text and "96.3%" in text  # ours next to the paper's
    table_i = text.split(SECTIONS[1])[0]
    assert 0 < table_i.index("task `shape_sorting`") < table_i.index("task `reach`")
    assert table_i.count("| end-to-end training |") == 2 + 4  # ours (2 tasks) + the paper's 4 tasks
    assert "| softmax + feature points (ours) |" in text and "| max-pooling + fully connected |" in text
    assert "| PPO | 0 |" in text
    gps_rows = [ln for ln in text.splitlines() if ln.startswith("| GPS (MDGPS, state) |")]
    assert len(gps_rows) == 1 and "| 32 |" in gps_rows[0]  # the reach run: 1 x 2 conditions x 2 x T 8
    imgs = tmp_path / "docs" / "images" / "results"
    robustness = text.split(SECTIONS[6])[1].split(SECTIONS[7])[0]
    assert "**Task `reach`, validation families** (strength 0 = `train_validation`)" in robustness
    assert sum(ln.startswith("| end-to-end training | ") for ln in robustness.splitlines()) == 6  # a row per family
    assert "gps eval --robustness ..." in text.split(SECTIONS[7])[1]
    for name in ("cost_per_iteration.png", "success_vs_env_steps.png", "pose_error_per_architectures.png",
                 "rollout_visual_test.gif", "diagnostics_gps_state.png", "robustness_reach_validation.png"):
        assert (imgs / name).stat().st_size > 1000, name
    from PIL import Image

    with Image.open(imgs / "rollout_visual_test.gif") as g:
        assert g.n_frames > 10
    import cv2

    video = cv2.VideoCapture(str(imgs / "rollout_visual_test.mp4"))
    frames = []
    while (frame := video.read())[0]:
        frames.append(frame[1])
    video.release()
    assert len(frames) == 100 and frames[0].shape[:2] == (4 * 16, 4 * 16)  # every control step, 4x scale
    assert "rollout_visual_test.mp4" in text


def test_report_says_what_is_missing(tmp_path):
    from gps_trainer.paper.report import SECTIONS, generate_report

    text = generate_report(tmp_path / "nothing", tmp_path / "results.md").read_text()
    assert all(s in text for s in SECTIONS)
    assert "No policy evaluation found" in text and "No visuomotor (CNN) policy available" in text
    assert "No robustness evaluation found" in text


def test_gif_replays_the_chosen_visual_test_trial(tmp_path):
    """The report's GIF shows the evaluation's first successful visual-test trial (else its first one);
    replaying (condition, reset seed) reproduces that trial's final distance."""
    from gps_controller.policies import make_policy, save_policy
    from gps_trainer.paper.evaluation import evaluate_policy
    from gps_trainer.paper.report import _first_success, rollout_gif

    fake = {"sets": {"visual_test": {"success": [False, True, True], "conditions": [0, 1, 2],
                                     "reset_seeds": [11, 22, 33]}}}
    assert _first_success(fake) == (1, 22)
    fake["sets"]["visual_test"]["success"] = [False, False, False]
    assert _first_success(fake) is None and _first_success({}) is None

    cnn = make_policy(SMALL_CNN, 32, 7, seed=1)
    save_policy(cnn, tmp_path / "policy.safetensors")
    ev = evaluate_policy(tmp_path / "policy.safetensors", "reach", trials_per_set=2, seed=4,
                         condition_sets=("visual_test",)).to_dict()
    condition, seed = _first_success(ev) or (ev["sets"]["visual_test"]["conditions"][0],
                                             ev["sets"]["visual_test"]["reset_seeds"][0])
    vt = ev["sets"]["visual_test"]
    i = next(k for k, (c, s) in enumerate(zip(vt["conditions"], vt["reset_seeds"], strict=True)) if (c, s) == (condition, seed))
    info = rollout_gif(tmp_path / "policy.safetensors", "reach", tmp_path / "r.gif", condition=condition, seed=seed)
    assert info["final_distance_m"] == pytest.approx(vt["final_distance"][i], abs=1e-9)
    assert info["success"] == vt["success"][i]


def test_rate_cell_names_the_situations_when_trials_repeat_them():
    from gps_trainer.paper.report import _fmt_rate

    cell = {"rate": 0.5, "successes": 6, "trials": 12, "ci_low": 0.25, "ci_high": 0.75}
    assert _fmt_rate(cell) == "50.0% (6/12; 95% CI 25-75%)"  # older files: no count
    assert _fmt_rate(cell | {"situations": 12}) == "50.0% (6/12; 95% CI 25-75%)"
    assert _fmt_rate(cell | {"situations": 4}) == "50.0% (6/12, 4 situations; 95% CI 25-75%)"


def test_pose_reproduce_command_carries_every_changed_setting():
    import dataclasses
    import shlex

    import yaml

    from gps_core.tasks import repo_root
    from gps_trainer.paper.report import pose_overrides
    from gps_trainer.pose_pretraining import PosePretrainConfig

    path = repo_root() / "config/policy/pose_pretrain.yaml"
    cfg = dataclasses.asdict(PosePretrainConfig.from_dict(
        {"task": "shape_sorting", "num_train": 2000, "scene_randomization": 1.0, "iterations": 3000,
         "net": {"conv_filters": [32, 16, 16]}, "output": "/tmp/x/vision.safetensors"}))
    words = shlex.split(pose_overrides(cfg))
    assert "scene_randomization=1.0" in words and not any(w.startswith("output=") for w in words)
    data = yaml.safe_load(path.read_text())["pose_pretrain"]
    for w in words:
        key, value = w.split("=", 1)
        data[key] = yaml.safe_load(value)
    rebuilt = dataclasses.asdict(PosePretrainConfig.from_dict(data))
    assert {k: v for k, v in rebuilt.items() if k != "output"} == {k: v for k, v in cfg.items() if k != "output"}
