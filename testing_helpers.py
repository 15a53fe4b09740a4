"""Helpers shared by the tests (and benchmarks) that run nodes as subprocesses.

Importable from any test (pytest's pythonpath includes the repository root). controller_rig.py puts
the root on sys.path itself, for the peer scripts and benchmarks that import it outside pytest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml


def wait_for_output(proc: subprocess.Popen, word: str = "ready", timeout: float = 60.0) -> str:
    """Read proc's stdout (a text pipe) line by line until a line contains `word`; return that line.

    Raises RuntimeError with the rest of the process's output if it exits first, TimeoutError if no
    such line arrives within `timeout` seconds (checked between lines: a silent process blocks the
    read until it prints or exits).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if word in line:
            return line
        if proc.poll() is not None:
            rest = proc.stdout.read()
            if proc.stderr is not None:
                rest += proc.stderr.read()
            raise RuntimeError(f"process exited with {proc.returncode} before printing {word!r}: {rest}")
    raise TimeoutError(f"process never printed {word!r} within {timeout:g} s")


# ---------------------------------------------------------------------------------- the `gps up` stack
ROOT = Path(__file__).resolve().parent


def trainer_params_file(tmp_path: Path, **overrides) -> Path:
    """A copy of config/trainer.yaml with `overrides`, keyed `/**/gps_trainer` so it applies in any namespace."""
    params = yaml.safe_load((ROOT / "config" / "trainer.yaml").read_text())["gps_trainer"]["ros__parameters"]
    params.update(overrides)
    path = tmp_path / "trainer.yaml"
    path.write_text(yaml.safe_dump({"/**/gps_trainer": {"ros__parameters": params}}))
    return path


#: `gps up`'s wait for every node to answer, in tests that do not set their own: its default (45 s) is what a
#: user waits for; on a machine whose cores are busy with other jobs (load 13 here) a trainer's start (imports
#: of torch, rclpy) took longer than that, and a slow start is not what those tests check.
UP_WAIT_S = 150


def gps_cli(env: dict, out: Path, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run the `gps` CLI (`python -m gps_trainer.cli --output-dir out ...`) from the repository root."""
    if args[:1] == ("up",) and "--wait-timeout" not in args:
        args = (*args, "--wait-timeout", str(UP_WAIT_S))
        timeout = max(timeout, UP_WAIT_S + 90)
    return subprocess.run([sys.executable, "-m", "gps_trainer.cli", "--output-dir", str(out), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def stack_pids(out: Path) -> list[int]:
    """The pids `gps up` recorded in its output directory (empty if it wrote none)."""
    path = out / "pids.json"
    return [e["pid"] for e in json.loads(path.read_text())] if path.exists() else []


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie child of this process counts as dead."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def stop_stack(env: dict, out: Path, pids: list[int]) -> None:
    """`gps down`, then SIGKILL the process group of anything still alive (each node leads its own session)."""
    try:
        gps_cli(env, out, "down", timeout=30.0)
    except subprocess.TimeoutExpired:
        pass
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 10.0
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)  # SIGKILLed orphans are reaped by init


def call_service(node, client, request, timeout: float = 30.0):
    """Call a ROS service from a test node and return the response; assert it answered in time."""
    import rclpy

    assert client.wait_for_service(timeout_sec=timeout), f"{client.srv_name} not available"
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    assert future.done(), f"no answer from {client.srv_name}"
    return future.result()


def wait_for_iterations(node, get_status, iterations: int, timeout: float, pids: list[int]) -> dict:
    """Poll gps_trainer/get_status until `iterations` are completed and none remain; return the status.

    Fails on an "error" phase, on a node of the stack that died, or after `timeout` seconds.
    """
    from gps_controller.conversions import status_to_dict
    from gps_msgs.srv import GetStatus

    deadline = time.monotonic() + timeout
    while True:
        st = status_to_dict(call_service(node, get_status, GetStatus.Request()).status)
        assert st["phase"] != "error", st["message"]
        if st["iterations_completed"] >= iterations and st["iterations_remaining"] == 0:
            return st
        assert time.monotonic() < deadline, f"{iterations} iteration(s) not done in {timeout:g} s: {st}"
        for pid in pids:  # a node that died makes the wait pointless
            assert pid_alive(pid), f"process {pid} died"
        time.sleep(1.0)


def load_traj_opt_v0():
    """The frozen pre-speed-up (x, u) C-step, src/gps_trainer/test/traj_opt_v0.py, that the trajectory-
    optimization tests compare against (loaded by path: tests run in importlib mode)."""
    import importlib.util

    path = Path(__file__).resolve().parent / "src" / "gps_trainer" / "test" / "traj_opt_v0.py"
    spec = importlib.util.spec_from_file_location("traj_opt_v0", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def point_mass_batch(policy, rng, n: int = 5, T: int = 30, condition: int = 0):
    """Samples of ``policy`` on two 1-D point masses (x = [p1, p2, v1, v2], u = forces, dt = 0.1, small
    process noise): a known linear system for the trajectory-optimization and GPS tests."""
    import numpy as np

    from gps_core.linear_gaussian import smooth_noise
    from gps_core.samples import SampleBatch

    dt = 0.1
    X, U = np.zeros((n, T, 4)), np.zeros((n, T, 2))
    noise = np.stack([smooth_noise(rng, T, 2, 1.0) for _ in range(n)])
    X[:, 0] = [1.0, -1.0, 0.0, 0.0]
    for t in range(T):
        U[:, t] = X[:, t] @ policy.K[t].T + policy.k[t] + noise[:, t] @ policy.chol_pol_covar[t]
        if t < T - 1:
            X[:, t + 1, 2:] = X[:, t, 2:] + dt * U[:, t] + 0.001 * rng.standard_normal((n, 2))
            X[:, t + 1, :2] = X[:, t, :2] + dt * X[:, t + 1, 2:]
    return SampleBatch(X, U, obs=X.copy(), noise=noise, condition=condition)
