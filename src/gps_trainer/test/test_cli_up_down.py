"""`gps down` signals only processes that are verifiably the ones `gps up` started (pid + command line +
start time in pids.json); a corrupt pids.json is a clear error; `gps up` fails with the dead node's last
log lines instead of returning 0 (issue 13 item 9)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from gps_trainer.cli import _proc_identity, _read_pids
from testing_helpers import ROOT, gps_cli, pid_alive, stack_pids, stop_stack


@pytest.fixture
def bystander():
    """An unrelated process (as if it had reused a pid from an old pids.json)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    time.sleep(0.2)
    yield p
    p.kill()
    p.wait()


def _write(out, entries):
    out.mkdir(parents=True, exist_ok=True)
    (out / "pids.json").write_text(json.dumps(entries))


def test_down_leaves_a_process_that_reused_the_pid_alone(tmp_path, ros_env, bystander):
    ident = _proc_identity(bystander.pid)
    out = tmp_path / "out"
    # Same pid and start time, another command line; then same pid and command line, another start time.
    for entry in ({"pid": bystander.pid, "cmdline": [sys.executable, "-m", "gps_sim.sim_node"],
                   "start_ticks": ident["start_ticks"], "role": "sim"},
                  {"pid": bystander.pid, "cmdline": ident["cmdline"], "start_ticks": ident["start_ticks"] - 1,
                   "role": "sim"}):
        _write(out, [entry])
        r = gps_cli(ros_env, out, "down")
        assert r.returncode == 0, r.stderr
        assert "left alone" in r.stderr and "stopped 0 processes" in r.stdout
        assert bystander.poll() is None  # not signalled
        assert not (out / "pids.json").exists()


def test_down_stops_a_verified_process(tmp_path, ros_env, bystander):
    ident = _proc_identity(bystander.pid)
    out = tmp_path / "out"
    _write(out, [{"pid": bystander.pid, "role": "sim", **ident}])
    r = gps_cli(ros_env, out, "down")
    assert r.returncode == 0 and "stopped 1 processes" in r.stdout, r.stdout + r.stderr
    assert bystander.wait(10) is not None


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"pid": 5}', '[{"pid": -1, "cmdline": [], "start_ticks": 0}]',
                                     "\udcff"])
def test_corrupt_pids_file_is_a_clear_error(tmp_path, ros_env, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / "pids.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    for cmd in ("down", "up"):
        r = gps_cli(ros_env, out, cmd)
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and "pids.json" in r.stderr and "not a pids file" in r.stderr
    assert (out / "pids.json").exists()  # kept for the user to inspect
    with pytest.raises(ValueError, match="pids.json"):
        _read_pids(out / "pids.json")


@pytest.mark.ros
def test_up_fails_with_the_dead_nodes_log_and_stops_the_rest(tmp_path, ros_env):
    sim = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text())
    sim["/**/gps_sim"]["ros__parameters"]["mode"] = "bogus_mode"
    bad = tmp_path / "sim.yaml"
    bad.write_text(yaml.safe_dump(sim))
    out = tmp_path / "out"
    r = gps_cli(ros_env, out, "up", "--sim-params", str(bad), "--wait-timeout", "60", timeout=120)
    try:
        assert r.returncode == 1, r.stdout + r.stderr
        assert "sim" in r.stderr and "exited before answering" in r.stderr
        assert "bogus_mode" in r.stderr  # the node's own last log lines
        assert not (out / "pids.json").exists()
        logs = sorted(p.name for p in (out / "logs").iterdir())
        assert "sim.log" in logs and "trainer.log" in logs
    finally:
        stop_stack(ros_env, out, stack_pids(out))
    # The nodes that had started are stopped (none is left in this session's domain).
    time.sleep(0.5)
    for line in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines():
        if str(out) in line:
            pid = int(line.split()[0])
            assert not pid_alive(pid), line


@pytest.mark.ros
def test_up_two_robots_each_on_its_own_clock(tmp_path, ros_env):
    """gps up --robots 2 starts what `ros2 launch launch/sim.launch.py robots:=2` starts (gps_core.bringup):
    each robot's controller and TF read that robot's sim clock; nothing publishes or reads /clock."""
    import rclpy

    out = tmp_path / "out"
    r = gps_cli(ros_env, out, "up", "--robots", "2", "--wait-timeout", "90", timeout=150)
    pids = stack_pids(out)
    rclpy.init()
    node = rclpy.create_node("clock_probe")
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert [e["role"] for e in json.loads((out / "pids.json").read_text())] == \
            ["sim", "controller", "tf", "sim", "controller", "tf", "trainer"]
        want = {f"/robot{i}/clock": ({(f"/robot{i}", "gps_sim")}, {(f"/robot{i}", "gps_controller"),
                                                                   (f"/robot{i}", "gps_tf")}) for i in (1, 2)}
        want["/clock"] = (set(), set())
        deadline = time.monotonic() + 30
        while True:
            rclpy.spin_once(node, timeout_sec=0.2)
            got = {t: ({(i.node_namespace, i.node_name) for i in node.get_publishers_info_by_topic(t)},
                       {(i.node_namespace, i.node_name) for i in node.get_subscriptions_info_by_topic(t)})
                   for t in want}
            if got == want or time.monotonic() > deadline:
                break
        assert got == want
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        stop_stack(ros_env, out, pids)
