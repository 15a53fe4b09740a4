"""ament conventions (issue 14): the Python packages built WITHOUT --symlink-install into a temporary
prefix, then run from another directory with no GPS_ROOT and no source tree on the path. config/,
launch/ and rviz/ come from share/gps_trainer through the ament index; `ros2 launch gps_trainer
sim.launch.py` starts the installed stack (where the ros2-tools kit is installed).

Only the ament_python packages are built here (gps_msgs and tf2_msgs come from the workspace's install/).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.ros2_cli import ROOT, Launch, assert_clean_shutdown, require_ros2, ros2, stop_daemon

pytestmark = [pytest.mark.ros, pytest.mark.slow]
PACKAGES = ("gps_core", "gps_sim", "gps_controller", "gps_trainer")


def _without_source_tree(env: dict) -> dict:
    """The environment minus everything that points into the source tree or at install/gps_{core,...}."""
    env = dict(env)
    for key in ("GPS_ROOT", "GPS_TASKS_DIR"):
        env.pop(key, None)

    def keep(entry: str) -> bool:
        if entry.startswith(str(ROOT / "src")):
            return False
        return not any(entry.startswith(str(ROOT / "install" / p)) for p in PACKAGES)

    for key in ("PYTHONPATH", "AMENT_PREFIX_PATH", "PATH", "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH"):
        if key in env:
            env[key] = os.pathsep.join(e for e in env[key].split(os.pathsep) if e and keep(e))
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """colcon build (copies, no symlinks) into a temporary prefix; returns (prefix, environment)."""
    base = tmp_path_factory.mktemp("installed")
    env = _without_source_tree(dict(os.environ))
    build = subprocess.run(
        ["colcon", "--log-base", str(base / "log"), "build", "--base-paths", str(ROOT / "src"),
         "--packages-select", *PACKAGES, "--build-base", str(base / "build"), "--install-base", str(base / "install"),
         "--event-handlers", "console_cohesion-"],
        cwd=base, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    prefix = base / "install"
    # What `. install/local_setup.bash` adds, for these ament_python packages.
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix / p) for p in PACKAGES] + [env.get("AMENT_PREFIX_PATH", "")])
    site = "lib/python3.11/site-packages"
    env["PYTHONPATH"] = os.pathsep.join([str(prefix / p / site) for p in PACKAGES] + [env.get("PYTHONPATH", "")])
    env["PATH"] = os.pathsep.join([str(prefix / "gps_trainer" / "bin"), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    assert not (prefix / "gps_core" / site / "gps_core").is_symlink()
    return prefix, env


def _run(env: dict, cwd: Path, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_installed_code_finds_config_through_the_ament_index(installed, tmp_path):
    prefix, env = installed
    r = _run(env, tmp_path, "python", "-c",
             "import gps_core, gps_trainer.cli as c; from gps_core.tasks import repo_root, load_task; "
             "print(gps_core.__file__); print(repo_root()); print(c.ROOT); print(load_task('reach').horizon)")
    assert r.returncode == 0, r.stderr
    core_file, root, cli_root, horizon = r.stdout.split()
    assert core_file.startswith(str(prefix)), core_file  # the installed copy, not the source tree
    share = prefix / "gps_trainer" / "share" / "gps_trainer"
    assert Path(root) == share and Path(cli_root) == share
    assert int(horizon) > 0
    for rel in ("config/sim.yaml", "config/tasks/reach.yaml", "config/experiments/reach_traj_opt.yaml",
                "launch/sim.launch.py", "rviz/gps.rviz"):
        assert (share / rel).is_file(), rel


def test_installed_sim_executable_starts_from_another_directory(installed, tmp_path, ros_env):
    prefix, env = installed
    env = {**env, "ROS_DOMAIN_ID": ros_env["ROS_DOMAIN_ID"]}
    exe = prefix / "gps_sim" / "lib" / "gps_sim" / "gps_sim"
    log = tmp_path / "sim.log"
    with open(log, "w") as out:
        p = subprocess.Popen([str(exe), "--ros-args", "-r", "__ns:=/installed_test"], cwd=tmp_path, env=env,
                             stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "gps_sim: task reach" not in log.read_text() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "gps_sim: task reach" in log.read_text(), log.read_text()
    finally:
        p.send_signal(signal.SIGINT)
        rc = p.wait(20)
    assert rc == 0 and "Traceback" not in log.read_text(), log.read_text()


def test_ros2_launch_of_the_installed_package(installed, tmp_path, ros_env):
    require_ros2()
    prefix, env = installed
    env = {**env, "ROS_DOMAIN_ID": ros_env["ROS_DOMAIN_ID"]}
    assert ros2(env, "pkg", "prefix", "gps_trainer").strip() == str(prefix / "gps_trainer")
    launch = Launch(["gps_trainer", "sim.launch.py", f"output_dir:={tmp_path / 'out'}"], env, tmp_path / "launch.log",
                    cwd=tmp_path)
    try:
        text = launch.wait_for(r"trainer ready", 120)
        launch.wait_for(r"\[gps_controller\]: ready", 30)
        share = prefix / "gps_trainer" / "share" / "gps_trainer"
        assert f"--params-file {share / 'config' / 'controller.yaml'}" in " ".join(
            line for line in os.popen(f"ps -ww -o args= --ppid {launch.proc.pid}").read().splitlines())
        assert str(share / "config" / "experiments" / "reach_traj_opt.yaml") in ros2(
            env, "param", "get", "/gps_trainer", "experiment")
        assert "ERROR" not in text
        rc = launch.interrupt()
    finally:
        launch.close()
        stop_daemon(env)
    assert_clean_shutdown(rc, launch.text(), processes=4)
