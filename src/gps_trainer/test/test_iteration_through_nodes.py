"""Trajectory-only GPS through the real nodes, started the way ``gps up`` starts them: gps_sim (lockstep
MuJoCo arm) + gps_controller + gps_trainer as separate processes over real DDS, driven by ``gps train`` as a
user would. Two iterations on ``reach`` must lower the mean sample cost (iteration 2's rollouts are run
with the controllers that iteration 1's C-step pushed back through ``set_linear_gaussian``), and with its
stdout a pipe (a log) ``gps train`` reports its progress in plain lines, not a carriage-return bar.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from testing_helpers import (
    gps_cli,
    pid_alive,
    stack_pids,
    stop_stack,
    trainer_params_file,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]
SAMPLES = 2  # per condition (the experiment's 5 would take ~2.5x longer; 2 is enough to see the cost drop)


def _cost(status_or_row) -> float:
    return float(np.mean(status_or_row["cost_per_condition"]))


def test_two_traj_opt_iterations_through_nodes_lower_the_cost(tmp_path, ros_env):
    out = tmp_path / "out"
    params = trainer_params_file(tmp_path, overrides=[f"samples_per_condition={SAMPLES}"], fsync=False, trial_timeout_s=60.0,
                                 service_wait_s=30.0)
    up = gps_cli(ros_env, out, "up", "--trainer-params", str(params))
    pids = stack_pids(out)
    try:
        assert up.returncode == 0, up.stderr
        assert len(pids) >= 3  # sim, controller, trainer (+ TF publisher)
        train = gps_cli({**ros_env, "GPS_PROGRESS_INTERVAL": "2"}, out, "--timeout", "60", "train",
                        "--iterations", "2", timeout=300.0)
        assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
        status = gps_cli(ros_env, out, "status")
        assert status.returncode == 0, status.stderr
        st = json.loads(status.stdout)
    finally:
        stop_stack(ros_env, out, pids)
    assert not any(pid_alive(p) for p in pids)

    # progress in a pipe: plain lines (a line per phase, one at least every GPS_PROGRESS_INTERVAL s between),
    # never a carriage return; the last line is the summary
    assert "\r" not in train.stdout and "\x1b" not in train.stdout
    lines = train.stdout.splitlines()
    assert json.loads(lines[-1])["iterations_completed"] == 2
    progress = [ln for ln in lines[:-1] if ln.startswith("train: iter ")]
    assert progress == lines[:-1], train.stdout
    # `gps train` sees phases by polling the status: a phase shorter than a poll (the C-step of a traj-opt
    # iteration on an idle machine) may never show, so each iteration needs its lines, not every phase
    phases = ("sampling", "iterating", "evaluating", "checkpointing")
    for it in (0, 1):
        seen = [m.group(1) for ln in progress if (m := re.match(rf"train: iter {it} \[.*\] \d+/\d+ (\w+) ", ln))]
        assert seen and set(seen) <= {*phases, "idle"}, (it, seen)
        seen = [p for p in seen if p != "idle"]  # before the first phase or after the last
        assert seen == sorted(seen, key=phases.index), (it, seen)  # in the loop's order
    assert any(re.match(r"train: iter \d \[.*\] \d+/\d+ sampling ", ln) for ln in progress)
    assert any(re.search(r"\(elapsed \S+, ETA \d+(s|m\d\ds)\)$", ln) for ln in progress)  # after iteration 0
    assert progress[-1].endswith(", done)")
    assert len(progress) < 200, "not one line per status poll"

    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[row["iteration"]] = row
    assert sorted(rows) == [0, 1]
    # samples and the noise-free evaluation of the new controllers (one trial per condition)
    assert st["rollouts_expected"] == 4 * (SAMPLES + 1) and st["rollouts_received"] == 4 * (SAMPLES + 1)
    assert rows[1]["evaluated"] == "local_controllers" and len(rows[1]["success"]) == 4
    first, second = _cost(rows[0]), _cost(rows[1])
    assert np.isfinite(first) and np.isfinite(second)
    assert np.allclose(st["cost_per_condition"], rows[1]["cost_per_condition"])  # status reports the last iteration
    assert second < first, f"cost did not go down: iteration 1 {first:.4g}, iteration 2 {second:.4g}"
    assert rows[1]["sampling_s"] > 0 and rows[1]["c_step_s"] > 0
