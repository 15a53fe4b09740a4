"""Faults on the robot side (issue 13, item 7), with the real nodes: a controller killed mid-iteration
and restarted is brought up to date (its controllers pushed again) and the iteration completes; a robot
that stays dead fails the iteration within about two trial timeouts with a message naming it."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import rclpy

from gps_controller.conversions import status_to_dict
from gps_msgs.srv import GetStatus, StartIteration
from testing_helpers import call_service, gps_cli, stack_pids, stop_stack, trainer_params_file

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]
TRIAL_TIMEOUT = 15.0


def _controller(out: Path) -> dict:
    (entry,) = [e for e in json.loads((out / "pids.json").read_text()) if e["role"] == "controller"]
    return entry


def _status(node, client) -> dict:
    return status_to_dict(call_service(node, client, GetStatus.Request()).status)


def _wait(node, client, predicate, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while not predicate(st := _status(node, client)):
        assert time.monotonic() < deadline, st
        time.sleep(0.1)
    return st


def test_a_restarted_controller_is_brought_up_to_date_and_a_dead_one_is_named(tmp_path, ros_env):
    out = tmp_path / "out"
    params = trainer_params_file(tmp_path, overrides=["samples_per_condition=3", "horizon=30"], fsync=False,
                                 trial_timeout_s=TRIAL_TIMEOUT, service_wait_s=5.0)
    up = gps_cli(ros_env, out, "up", "--trainer-params", str(params))
    pids = stack_pids(out)
    rclpy.init()
    node = rclpy.create_node("robot_faults_client")
    restarted = None
    try:
        assert up.returncode == 0, up.stderr
        get = node.create_client(GetStatus, "/gps_trainer/get_status")
        start = node.create_client(StartIteration, "/gps_trainer/start_iteration")
        assert call_service(node, start, StartIteration.Request(iterations=1), timeout=60.0).accepted
        _wait(node, get, lambda s: s["phase"] == "sampling" and s["rollouts_received"] >= 2, 120.0)
        # Kill the controller mid-iteration; start it again as `gps up` did: it knows no controller.
        ctrl = _controller(out)
        os.kill(ctrl["pid"], signal.SIGKILL)
        with open(tmp_path / "controller-restarted.log", "w") as log:
            restarted = subprocess.Popen(ctrl["cmdline"], cwd=ROOT, env=ros_env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        st = _wait(node, get, lambda s: s["iterations_completed"] >= 1 or s["phase"] == "error", 240.0)
        assert st["phase"] != "error", st["message"]
        assert st["iterations_completed"] == 1

        # Now the controller stays dead: the next iteration fails, naming the robot, within ~2 trial timeouts.
        restarted.kill()
        restarted.wait(timeout=10)
        t0 = time.monotonic()
        assert call_service(node, start, StartIteration.Request(iterations=1), timeout=60.0).accepted
        st = _wait(node, get, lambda s: s["phase"] == "error", 4 * TRIAL_TIMEOUT + 30.0)
        took = time.monotonic() - t0
        assert "robot /" in st["message"], st["message"]
        assert took < 3 * TRIAL_TIMEOUT + 20.0, took
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        if restarted is not None and restarted.poll() is None:
            restarted.kill()
        stop_stack(ros_env, out, pids)
