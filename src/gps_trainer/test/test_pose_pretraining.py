"""Pose pretraining: a short run on simulator images beats predicting the mean; weights load into a policy."""

from pathlib import Path

import numpy as np
import pytest
import torch

from gps_controller.policies import VisuomotorConfig, make_visuomotor_policy
from gps_controller.policies.serialization import PolicyFormatError
from gps_trainer.pose_pretraining import (
    PosePretrainConfig,
    load_pose_regressor,
    load_pretrained_vision,
    pretrain_pose,
)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[3]


def _sim_or_skip(size):
    gps_sim = pytest.importorskip("gps_sim")
    try:
        sim = gps_sim.ArmSim("reach", image_size=size, render_images=True)
        sim.render()
    except Exception as exc:  # no offscreen GL on this machine
        pytest.skip(f"simulator rendering unavailable: {exc}")
    return sim


def test_short_pose_pretraining_beats_mean(tmp_path):
    sim = _sim_or_skip(32)
    out = tmp_path / "vision.safetensors"
    metrics = pretrain_pose({"image_size": 32, "num_train": 60, "num_test": 20, "iterations": 300,
                             "learning_rate": 3e-3, "net": {"conv_filters": [16, 16, 16]}, "device": "cpu",
                             "output": str(out), "log_every": 100}, sim=sim)
    sim.close()
    assert metrics["test_error_cm"] < 0.7 * metrics["baseline_mean_error_cm"], metrics
    assert out.exists() and out.with_suffix(".metrics.json").exists()
    # the vision tensors go into a policy of the same vision sizes
    pol = make_visuomotor_policy(VisuomotorConfig(config_dim=32, action_dim=7, image_height=32, image_width=32,
                                                  conv_filters=(16, 16, 16)))
    names = load_pretrained_vision(pol, out)
    reg = load_pose_regressor(out)
    assert len(names) == 7 and all(torch.equal(pol.state_dict()[k], reg.state_dict()[k]) for k in names)
    wrong = make_visuomotor_policy(VisuomotorConfig(config_dim=32, action_dim=7, image_height=32, image_width=32))
    with pytest.raises(PolicyFormatError, match="shape mismatch"):
        load_pretrained_vision(wrong, out)
    raw = bytearray(out.read_bytes())
    raw[-1] ^= 1
    out.write_bytes(bytes(raw))
    with pytest.raises(PolicyFormatError, match="SHA-256 mismatch"):
        load_pose_regressor(out)


def test_collection_is_seeded():
    from gps_trainer.pose_pretraining import collect_pose_images, target_box_for

    sim = _sim_or_skip(16)
    box = target_box_for(sim.task, "train", 0.05)
    a = collect_pose_images(sim, 3, np.random.default_rng(4), box)
    b = collect_pose_images(sim, 3, np.random.default_rng(4), box)
    sim.close()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.all(a[1] >= box[0] - 1e-9) and np.all(a[1] <= box[1] + 1e-9)
    assert len({tuple(p) for p in a[1]}) == 3


def test_config_yaml_loads():
    cfg = PosePretrainConfig.from_yaml(ROOT / "config/policy/pose_pretrain.yaml")
    assert cfg.task == "reach" and cfg.vision_config().conv_filters == (64, 32, 32)


def test_gps_with_the_auxiliary_pose_loss_trains_and_resumes_its_head(tmp_path):
    """policy_opt.aux_pose_weight > 0: the pose-pretraining head starts the auxiliary loss, is trained along,
    kept in the checkpoint and restored on resume; without pretrained vision the run is refused."""
    from gps_core.tasks import repo_root
    from gps_trainer.config import load_experiment
    from gps_trainer.procedure import train_in_simulation
    from gps_trainer.storage import CheckpointStore

    sim = _sim_or_skip(32)
    vision = tmp_path / "vision.safetensors"
    pretrain_pose({"image_size": 32, "num_train": 30, "num_test": 5, "iterations": 20, "net": {"conv_filters": [8, 8, 8]},
                   "device": "cpu", "output": str(vision), "log_every": 10}, sim=sim)
    sim.close()
    over = {"conditions": 2, "samples_per_condition": 2, "horizon": 8, "image_size": 32,
            "algorithm.policy.net.image_height": 32, "algorithm.policy.net.image_width": 32,
            "algorithm.policy.net.conv_filters": [8, 8, 8], "algorithm.dynamics.prior.max_clusters": 2,
            "algorithm.policy_prior.max_clusters": 2, "algorithm.policy_opt.iterations": 5,
            "algorithm.policy_opt.fc_only_iterations": 0, "algorithm.policy_opt.device": "cpu",
            "algorithm.policy_opt.aux_pose_weight": 1.0}
    exp = repo_root() / "config" / "experiments" / "reach_mdgps_visual.yaml"
    with pytest.raises(ValueError, match="aux_pose_weight"):
        train_in_simulation(load_experiment(exp, {**over, "iterations": 1}), tmp_path / "no_vision")
    over["algorithm.pretrained_vision"] = str(vision)
    run = train_in_simulation(load_experiment(exp, {**over, "iterations": 1}), tmp_path / "run")
    row = run.rows[0]
    assert row["aux_pose_loss_before"] >= 0 and np.isfinite(row["aux_pose_loss_after"])
    reg = load_pose_regressor(vision)
    pretrained_head = reg.head_matrix()
    trained = CheckpointStore(tmp_path / "run").latest().algorithm["aux_pose_head"]
    assert trained.shape == pretrained_head.shape and not np.allclose(trained, pretrained_head)
    restored = train_in_simulation(load_experiment(exp, {**over, "iterations": 2}), tmp_path / "run", iterations=0)
    np.testing.assert_array_equal(restored.algorithm.aux_pose_head, trained)
    resumed = train_in_simulation(load_experiment(exp, {**over, "iterations": 2}), tmp_path / "run")
    assert len(resumed.rows) == 2 and np.isfinite(resumed.rows[1]["aux_pose_loss_after"])


def test_command_line_reports_step_loss_and_eta_as_plain_lines_in_a_pipe(tmp_path):
    """`python -m gps_trainer.pose_pretraining` with stdout a pipe (as in a log): progress lines with the
    step, the loss and the ETA, no carriage return; the last line stays the JSON summary."""
    import json
    import os
    import re
    import subprocess
    import sys

    _sim_or_skip(16).close()
    env = {**os.environ, "GPS_PROGRESS_INTERVAL": "0.2", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    out = tmp_path / "vision.safetensors"
    r = subprocess.run([sys.executable, "-m", "gps_trainer.pose_pretraining", "image_size=16", "num_train=10",
                        "num_test=2", "iterations=60", "log_every=20", "net={conv_filters: [4, 4, 4]}",
                        "device=cpu", f"output={out}"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "\r" not in r.stdout and "\x1b" not in r.stdout
    lines = r.stdout.splitlines()
    assert json.loads(lines[-1])["weights"] == str(out)
    progress = [ln for ln in lines[:-1] if ln.startswith("pose pretraining: ")]
    assert progress == lines[:-1], "only progress lines before the summary"
    training = [ln for ln in progress if re.search(r"step \d+/60 loss \d\S* .*ETA (\d+s|\d+m\d\ds)\)$", ln)]
    assert training, r.stdout
    assert len(progress) < 60, "throttled: not one line per step"
    assert progress[-1].endswith(", done)")
