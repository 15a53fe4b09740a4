"""`python -m gps_trainer.paper.baselines` reports its progress (phase, iterations / trials done, ETA) in
plain lines when its stdout is a pipe, as in a log: a tiny real run (one MDGPS iteration of a small CNN on
one condition, one evaluation trial)."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gps_core.progress import Progress
from gps_trainer.pose_pretraining import pretrain_pose

ROOT = Path(__file__).resolve().parents[3]
NET = {"conv_filters": [4, 4, 4], "conv_kernels": [3, 3, 3], "conv_strides": [2, 1, 1]}


def test_baselines_print_phase_trials_and_eta_as_plain_lines(tmp_path):
    pytest.importorskip("gps_sim")
    vision = tmp_path / "vision.safetensors"
    try:
        pretrain_pose({"image_size": 16, "num_train": 6, "num_test": 0, "iterations": 2, "batch_size": 3,
                       "device": "cpu", "output": str(vision), "net": NET}, progress=Progress("", stream=io.StringIO()))
    except Exception as exc:  # no offscreen GL on this machine
        pytest.skip(f"simulator rendering unavailable: {exc}")
    net = [f"algorithm.policy.net.{k}={v}" for k, v in {**NET, "image_height": 16, "image_width": 16,
                                                          "fc_hidden": [8]}.items()]
    env = {**os.environ, "GPS_PROGRESS_INTERVAL": "0.2", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "gps_trainer.paper.baselines", "--vision", str(vision),
                        "--methods", "pose_features", "--fc-steps", "2", "--trials", "1", "--sets", "train",
                        "--out", str(tmp_path / "out"), "iterations=1", "conditions=1", "samples_per_condition=2",
                        "horizon=8", "image_size=16", *net, "algorithm.dynamics.prior.max_clusters=2",
                        "algorithm.policy_prior.max_clusters=2", "algorithm.policy_opt.device=cpu"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "\r" not in r.stdout and "\x1b" not in r.stdout
    lines = r.stdout.splitlines()
    progress = [ln for ln in lines if ln.startswith("baselines")]
    for phase in ("sampling", "iterating", "evaluating", "checkpointing"):  # a line per phase of the iteration
        assert any(f"MDGPS iteration 1/1, {phase} (elapsed" in ln for ln in progress), (phase, r.stdout)
    assert any(re.search(r"MDGPS: 1 of up to 1 iterations done \(elapsed \S+, ETA 0s\)$", ln) for ln in progress)
    assert any(re.search(r"evaluating: 1/1 trials \(train 1/1, \d successes\) \(elapsed \S+, ETA 0s\)$", ln)
               for ln in progress), r.stdout
    assert "pose features:" in lines and progress[-1].startswith("baselines: results in ")
