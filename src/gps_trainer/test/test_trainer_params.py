"""The trainer node's parameter file (issue 13, item 8): an unknown key, a bad value or an empty file
stops the node at start with one line naming the file, the key and the value (no traceback)."""

import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.ros

GOOD = "    experiment: config/experiments/reach_traj_opt.yaml\n    output_dir: {out}\n"


BIG = "1" * 5000


@pytest.mark.parametrize("extra, expected", [
    ("    trial_timout_s: 5.0\n", "unknown parameter 'trial_timout_s' (value 5.0)"),
    ("    trial_timeout_s: -1.0\n", "trial_timeout_s: must be >= 0.1 and <= 86400, got -1.0"),
    ("    robot_failure_limit: 1000000000000\n", "robot_failure_limit: must be >= 1 and <= 100, got 1000000000000"),
    (f"    robot_failure_limit: {BIG}\n", "gps_trainer.ros__parameters.robot_failure_limit: an integer of 5000 digits"),
    ("    fsync: 3\n", "fsync: must be a boolean, got 3"),
    ("    torch_threads: 0\n", "torch_threads: must be >= 1 and <= 256, got 0"),
    ("    overrides: [1, 2]\n", "overrides: must be a list of strings, got [1, 2]"),
    ("    overrides: ['iterations=[1']\n", "overrides: iterations: not valid YAML"),
    ("    overrides: ['samples_per_condition=1000000000']\n",
     "samples_per_condition: must be <= 1000; got 1000000000 (set by an override in {params})"),
    (None, "parameter file is empty"),
], ids=lambda v: (v or "empty")[:40].strip())
def test_bad_parameter_files_stop_the_node_naming_file_key_and_value(tmp_path, ros_env, extra, expected):
    params = tmp_path / "trainer.yaml"
    params.write_text("" if extra is None else "gps_trainer:\n  ros__parameters:\n" + GOOD.format(out=tmp_path) + extra)
    res = subprocess.run([sys.executable, "-m", "gps_trainer.trainer_node", "--ros-args", "--params-file", str(params)],
                         env=ros_env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr[-2000:]
    expected = expected.format(params=params)
    assert expected in res.stderr and str(params) in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def test_a_horizon_beyond_the_controllers_max_horizon_is_refused_at_once_naming_both(tmp_path, ros_env):
    """The trainer reads the controller's max_horizon before a phase: trials longer than it fail the phase
    with one message saying so (not two failed trials and a controller's reason about a pushed horizon),
    and the trainer keeps answering."""
    import rclpy
    import yaml

    from gps_controller.conversions import status_to_dict
    from gps_msgs.srv import GetStatus, StartIteration
    from testing_helpers import ROOT, call_service, gps_cli, stack_pids, stop_stack, trainer_params_file

    ctrl = yaml.safe_load((ROOT / "config" / "controller.yaml").read_text())
    (section,) = ctrl.values()
    section["ros__parameters"]["max_horizon"] = 120  # the task's horizon (100) + 1 fits, 150 + 1 does not
    ctrl_file = tmp_path / "controller.yaml"
    ctrl_file.write_text(yaml.safe_dump(ctrl))
    params = trainer_params_file(tmp_path, overrides=["horizon=150"], fsync=False)
    out = tmp_path / "out"
    up = gps_cli(ros_env, out, "up", "--trainer-params", str(params), "--controller-params", str(ctrl_file))
    pids = stack_pids(out)
    rclpy.init()
    node = rclpy.create_node("horizon_client")
    try:
        assert up.returncode == 0, up.stderr
        get = node.create_client(GetStatus, "/gps_trainer/get_status")
        start = node.create_client(StartIteration, "/gps_trainer/start_iteration")
        assert call_service(node, start, StartIteration.Request(iterations=1)).accepted
        deadline = time.monotonic() + 60.0
        while (st := status_to_dict(call_service(node, get, GetStatus.Request()).status))["phase"] != "error":
            assert time.monotonic() < deadline and st["rollouts_received"] == 0, st
            time.sleep(0.2)
        assert "robot /: the experiment's trials run horizon + 1 = 151 steps, over the controller's max_horizon 120" \
            in st["message"], st["message"]
        assert status_to_dict(call_service(node, get, GetStatus.Request()).status)["phase"] == "error"
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        stop_stack(ros_env, out, pids)
