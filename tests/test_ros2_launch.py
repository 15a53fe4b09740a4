"""The user's path with the real tools (issue 14): `ros2 launch launch/sim.launch.py` with its default
arguments, `ros2 service call .../start_iteration` trains an iteration, `ros2 topic echo /gps/status`,
`ros2 param get`, and Ctrl-C stops every process without a traceback. Also robots:=2 (one clock per robot).

Needs the ros2-tools kit (scripts/test.sh installs it; skipped with the reason where it is absent).
"""

from __future__ import annotations

import time

import pytest

from tests.ros2_cli import (
    Launch,
    assert_clean_shutdown,
    echo_once,
    require_ros2,
    ros2,
    small_experiment,
    stop_daemon,
    wait_for_status,
)

pytestmark = [pytest.mark.ros]


@pytest.fixture
def kit_env(ros_env):
    require_ros2()
    yield ros_env
    stop_daemon(ros_env)


def _train_one_iteration(env: dict) -> dict:
    res = ros2(env, "service", "call", "/gps_trainer/start_iteration", "gps_msgs/srv/StartIteration",
               "{iterations: 1}", timeout=60)
    assert "accepted=True" in res, res
    return wait_for_status(env, lambda s: s["iterations_completed"] >= 1 and s["iterations_remaining"] == 0, 240)


@pytest.mark.slow
def test_sim_launch_default_arguments_trains_and_stops_cleanly(tmp_path, kit_env):
    exp = small_experiment(tmp_path)
    launch = Launch(["launch/sim.launch.py", f"experiment:={exp}", f"output_dir:={tmp_path / 'out'}"], kit_env,
                    tmp_path / "launch.log")
    try:
        launch.wait_for(r"trainer ready", 90)
        launch.wait_for(r"\[gps_controller\]: ready", 30)
        # Defaults: controller and TF on the sim's clock, the trainer on the system clock.
        assert "True" in ros2(kit_env, "param", "get", "/gps_controller", "use_sim_time")
        assert "False" in ros2(kit_env, "param", "get", "/gps_trainer", "use_sim_time")
        assert str(exp) in ros2(kit_env, "param", "get", "/gps_trainer", "experiment")
        idle = echo_once(kit_env, "/gps/status")  # published while idle: the trainer's timer is on wall time
        assert idle["iterations_completed"] == 0
        st = _train_one_iteration(kit_env)
        assert st["iterations_completed"] == 1
        # 1 condition x 2 samples, plus the noise-free evaluation of the controller where the trainer runs one
        assert st["rollouts_received"] == st["rollouts_expected"] >= 2
        assert (tmp_path / "out" / "metrics.jsonl").exists()
        rc = launch.interrupt()
    finally:
        launch.close()
    assert_clean_shutdown(rc, launch.text(), processes=4)  # sim, controller, tf, trainer


@pytest.mark.slow
def test_sim_launch_two_robots_each_with_its_own_clock(tmp_path, kit_env):
    exp = small_experiment(tmp_path)
    launch = Launch(["launch/sim.launch.py", "robots:=2", f"experiment:={exp}", f"output_dir:={tmp_path / 'out'}"],
                    kit_env, tmp_path / "launch.log")
    try:
        launch.wait_for(r"trainer ready", 120)
        deadline = time.monotonic() + 60  # the daemon's graph fills in after discovery
        topics = []
        while not {"/robot1/clock", "/robot2/clock"} <= set(topics) and time.monotonic() < deadline:
            topics = ros2(kit_env, "topic", "list").split()
            time.sleep(1.0)
        assert "/robot1/clock" in topics and "/robot2/clock" in topics, topics
        # Nobody publishes the shared /clock: two sims' times can never interleave on one topic.
        info = ros2(kit_env, "topic", "info", "/clock", check=False)
        assert "Publisher count: 0" in info or "Unknown topic" in info or not info.strip(), info
        for ns in ("robot1", "robot2"):
            assert "True" in ros2(kit_env, "param", "get", f"/{ns}/gps_controller", "use_sim_time")
            clock_subs = ros2(kit_env, "topic", "info", "-v", f"/{ns}/clock")
            assert f"Node namespace: /{ns}" in clock_subs and "Subscription count: 0" not in clock_subs
        st = _train_one_iteration(kit_env)
        assert st["iterations_completed"] == 1
        rc = launch.interrupt()
    finally:
        launch.close()
    assert_clean_shutdown(rc, launch.text(), processes=7)  # 2 x (sim, controller, tf) + trainer


@pytest.mark.parametrize("launch_file", ["sim", "gazebo", "pr2"])
def test_every_launch_file_loads_and_shows_its_arguments(launch_file, kit_env):
    out = ros2(kit_env, "launch", "-s", f"launch/{launch_file}.launch.py", timeout=120)
    assert "'experiment'" in out and "config/experiments/reach_traj_opt.yaml" in out
