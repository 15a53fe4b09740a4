"""Driving the real `ros2` command-line tools (../shared/ros2-tools, installed by scripts/test.sh) from tests:
start `ros2 launch` so that SIGINT reaches it, run `ros2` verbs, stop it the way a user does (Ctrl-C)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def require_ros2() -> None:
    """Skip (with the reason) where the ros2-tools kit is not installed; scripts/test.sh installs it."""
    if shutil.which("ros2") is None:
        reason = os.environ.get("GPS_ROS2_TOOLS_MISSING") or (
            "`ros2` not on PATH: run through scripts/test.sh (it installs ../shared/ros2-tools), or "
            "eval \"$(bash ../shared/ros2-tools/install.sh)\"")
        pytest.skip(reason)


def small_experiment(tmp_path: Path, conditions: int = 1, samples: int = 2) -> Path:
    """reach_traj_opt with fewer conditions and samples: one iteration in about a minute."""
    cfg = yaml.safe_load((ROOT / "config" / "experiments" / "reach_traj_opt.yaml").read_text())
    cfg.update(conditions=conditions, samples_per_condition=samples)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Launch:
    """`ros2 launch ...` as a user's terminal runs it: SIGINT (Ctrl-C) stops it; output in a file."""

    def __init__(self, args: list[str], env: dict, log: Path, cwd: Path = ROOT, prefix: list[str] | None = None):
        """``prefix``: what runs `ros2 launch` (e.g. `ip netns exec NAME`, which execs it: the same process)."""
        self.log = log
        self._out = open(log, "w")
        # Popen resets Python's SIGINT handler to the default in the child (only SIG_IGN would be inherited),
        # so `ros2 launch` sees the SIGINT sent below; its own process group for the SIGKILL clean-up.
        self.proc = subprocess.Popen([*(prefix or []), "ros2", "launch", *args], cwd=cwd, env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if re.search(pattern, text):
                return text
            if self.proc.poll() is not None:
                raise AssertionError(f"ros2 launch exited ({self.proc.returncode}) before {pattern!r}:\n{text[-4000:]}")
            time.sleep(0.5)
        raise AssertionError(f"no {pattern!r} within {timeout:g} s:\n{self.text()[-4000:]}")

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C: launch forwards SIGINT to every node and waits for them."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait(10)
        self._out.close()


def ros2(env: dict, *args: str, timeout: float = 60.0, check: bool = True, retry_s: float = 30.0) -> str:
    """Run `ros2 <args>`; its stdout. With check, a failure is retried for `retry_s` seconds (the daemon's
    graph fills in after discovery: "Node not found" right after start) before the assertion fails."""
    deadline = time.monotonic() + (retry_s if check else 0.0)
    while True:
        r = subprocess.run(["ros2", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        if not check or r.returncode == 0:
            return r.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"ros2 {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        time.sleep(1.0)


def stop_daemon(env: dict) -> None:
    subprocess.run(["ros2", "daemon", "stop"], env=env, capture_output=True, timeout=30)


def echo_once(env: dict, topic: str, timeout: float = 30.0, *qos: str) -> dict:
    """`ros2 topic echo --once` of one message, parsed from its YAML."""
    out = ros2(env, "topic", "echo", topic, "--once", *qos, timeout=timeout)
    return yaml.safe_load(out.split("\n---")[0])


def wait_for_status(env: dict, predicate, timeout: float) -> dict:
    """Poll /gps/status with `ros2 topic echo --once` until predicate(status) or the timeout."""
    deadline = time.monotonic() + timeout
    status = {}
    while time.monotonic() < deadline:
        try:
            status = echo_once(env, "/gps/status", 20.0)
        except (AssertionError, subprocess.TimeoutExpired):
            continue
        assert status.get("phase") != "error", status
        if predicate(status):
            return status
        time.sleep(2.0)
    raise AssertionError(f"/gps/status never satisfied the condition in {timeout:g} s; last: {status}")


def assert_clean_shutdown(rc: int, output: str, processes: int) -> None:
    """Every process of the launch ended cleanly and nothing printed a traceback or an asyncio error."""
    assert rc == 0, f"ros2 launch exited {rc}\n{output[-4000:]}"
    for bad in ("Traceback", "exception was never retrieved", "Destroyable", "[ERROR]"):
        assert bad not in output, f"{bad!r} in the launch output:\n{output[-6000:]}"
    assert output.count("process has finished cleanly") == processes, output[-4000:]
