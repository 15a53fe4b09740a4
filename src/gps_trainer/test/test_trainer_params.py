"""The trainer node's parameter file (issue 13, item 8): an unknown key, a bad value or an empty file
stops the node at start with one line naming the file, the key and the value (no traceback)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros

GOOD = "    experiment: config/experiments/reach_traj_opt.yaml\n    output_dir: {out}\n"


@pytest.mark.parametrize("extra, expected", [
    ("    trial_timout_s: 5.0\n", "unknown parameter 'trial_timout_s' (value 5.0)"),
    ("    trial_timeout_s: -1.0\n", "trial_timeout_s: must be >= 0.1, got -1.0"),
    ("    robot_failure_limit: 0\n", "robot_failure_limit: must be >= 1, got 0"),
    ("    fsync: 3\n", "fsync: expected bool, got 3"),
    ("    torch_threads: 0\n", "torch_threads: must be in [1, 256], got 0"),
    (None, "parameter file is empty"),
])
def test_bad_parameter_files_stop_the_node_naming_file_key_and_value(tmp_path, ros_env, extra, expected):
    params = tmp_path / "trainer.yaml"
    params.write_text("" if extra is None else "gps_trainer:\n  ros__parameters:\n" + GOOD.format(out=tmp_path) + extra)
    res = subprocess.run([sys.executable, "-m", "gps_trainer.trainer_node", "--ros-args", "--params-file", str(params)],
                         env=ros_env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr[-2000:]
    assert expected in res.stderr and str(params) in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
