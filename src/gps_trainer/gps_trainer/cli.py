"""``gps``: run the GPS stack without ``ros2 launch`` (same nodes, same parameter files).

    gps up [--robots 2] [--output-dir runs/reach] [--experiment config/experiments/reach_traj_opt.yaml]
    gps train --iterations 5          # start_iteration + live progress from /gps/status
    gps status                        # get_status as JSON
    gps down                          # stop what `gps up` started (pids in <output-dir>/pids.json)
    gps demo --iterations 5           # up -> train -> success rate + image paths -> down

With a ROS distro, ``ros2 launch launch/sim.launch.py`` + ``ros2 service call`` do the same.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("GPS_ROOT", Path(__file__).resolve().parents[3]))
PIDS = "pids.json"


def _ros_args(params: Path, ns: str = "", overrides: dict | None = None) -> list[str]:
    args = ["--ros-args", "--params-file", str(params)]
    if ns:
        args += ["-r", f"__ns:=/{ns}"]
    for k, v in (overrides or {}).items():
        args += ["-p", f"{k}:={v}"]
    return args


def cmd_up(a) -> int:
    out = Path(a.output_dir).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    if (out / PIDS).exists() and any(_alive(p["pid"]) for p in json.loads((out / PIDS).read_text())):
        print(f"already up ({out / PIDS}); run `gps down` first", file=sys.stderr)
        return 1
    namespaces = [f"robot{i + 1}" for i in range(a.robots)] if a.robots > 1 else [""]
    procs = []
    for ns in namespaces:
        procs.append(("sim", ns, [sys.executable, "-m", "gps_sim.sim_node",
                                  *_ros_args(ROOT / a.sim_params, ns)]))
        procs.append(("controller", ns, [sys.executable, "-m", "gps_controller.controller_node",
                                         *_ros_args(ROOT / a.controller_params, ns)]))
    ns_list = "[" + ",".join(f"'{n}'" for n in namespaces) + "]"
    trainer_over = {"output_dir": str(out), "controller_namespaces": ns_list}
    if a.experiment:
        trainer_over["experiment"] = str(Path(a.experiment).resolve())
    procs.append(("trainer", "", [sys.executable, "-m", "gps_trainer.trainer_node",
                                  *_ros_args(ROOT / a.trainer_params, "", trainer_over)]))
    started = []
    for role, ns, cmd in procs:
        log = open(out / "logs" / f"{role}{'-' + ns if ns else ''}.log", "a")
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append({"role": role, "namespace": ns, "pid": p.pid, "cmd": cmd})
    (out / PIDS).write_text(json.dumps(started, indent=2))
    print(f"up: {len(started)} processes ({', '.join(s['role'] + (':' + s['namespace'] if s['namespace'] else '') for s in started)}); "
          f"logs in {out / 'logs'}")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def cmd_down(a) -> int:
    path = Path(a.output_dir) / PIDS
    if not path.exists():
        print("nothing to stop")
        return 0
    entries = json.loads(path.read_text())
    for e in reversed(entries):  # trainer first
        if _alive(e["pid"]):
            os.kill(e["pid"], signal.SIGINT)
    deadline = time.monotonic() + 10
    for e in entries:
        while _alive(e["pid"]) and time.monotonic() < deadline:
            try:
                os.waitpid(e["pid"], os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        if _alive(e["pid"]):
            os.kill(e["pid"], signal.SIGKILL)
    path.unlink()
    print(f"down: stopped {len(entries)} processes")
    return 0


class _Client:
    def __init__(self):
        import rclpy

        self.rclpy = rclpy
        rclpy.init()
        self.node = rclpy.create_node("gps_cli")

    def call(self, srv_type, name: str, request, timeout: float):
        client = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"{name} not available after {timeout:.0f} s (is the trainer up?)")
        future = client.call_async(request)
        self.rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        if not future.done():
            raise TimeoutError(f"{name}: no answer within {timeout:.0f} s")
        return future.result()

    def close(self):
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def _get_status(cli: _Client, timeout: float) -> dict:
    from gps_controller.conversions import status_to_dict
    from gps_msgs.srv import GetStatus

    return status_to_dict(cli.call(GetStatus, "/gps_trainer/get_status", GetStatus.Request(), timeout).status)


def cmd_status(a) -> int:
    cli = _Client()
    try:
        print(json.dumps(_get_status(cli, a.timeout), indent=2, default=str))
    finally:
        cli.close()
    return 0


def _progress_line(st: dict) -> str:
    done, exp = st["rollouts_received"], max(st["rollouts_expected"], 1)
    bar = "#" * int(20 * done / exp)
    costs = [c for c in st["cost_per_condition"] if math.isfinite(c)]
    cost = f"{sum(costs) / len(costs):.4g}" if costs else "-"
    sr = st["success_rate"]
    succ = f"{100 * sr:.0f}%" if math.isfinite(sr) else "-"
    return (f"iter {st['iteration']} [{bar:<20}] {done}/{exp} {st['phase']:<16} cost {cost} success {succ} "
            f"(done {st['iterations_completed']}, left {st['iterations_remaining']})")


def train(iterations: int, timeout: float, quiet: bool = False) -> dict:
    from gps_msgs.srv import StartIteration

    cli = _Client()
    try:
        res = cli.call(StartIteration, "/gps_trainer/start_iteration", StartIteration.Request(iterations=iterations),
                       timeout)
        if not res.accepted:
            raise RuntimeError(f"start_iteration refused: {res.message}")
        target = res.first_iteration + iterations
        deadline = time.monotonic() + max(timeout, 60.0) * iterations * 10
        while True:
            st = _get_status(cli, timeout)
            if not quiet:
                print("\r" + _progress_line(st), end="", flush=True)
            if st["phase"] == "error":
                raise RuntimeError(f"trainer error: {st['message']}")
            if st["iterations_completed"] >= target and st["iterations_remaining"] == 0:
                if not quiet:
                    print()
                return st
            if time.monotonic() > deadline:
                raise TimeoutError("training did not finish in time")
            time.sleep(0.5)
    finally:
        cli.close()


def cmd_train(a) -> int:
    try:
        st = train(a.iterations, a.timeout)
    except (RuntimeError, TimeoutError) as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: st[k] for k in ("iterations_completed", "cost_per_condition", "success_rate")}))
    return 0


def cmd_demo(a) -> int:
    if cmd_up(a) != 0:
        return 1
    try:
        st = train(a.iterations, a.timeout)
        out = Path(a.output_dir).resolve()
        images = sorted(str(p) for p in out.glob("*.png"))
        print(f"success rate: {100 * st['success_rate']:.0f}%")
        for p in images:
            print(f"image: {p}")
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        cmd_down(a)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="gps", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output-dir", default="runs/reach")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a service")
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start sim + controller (per robot) + trainer")
    demo = sub.add_parser("demo", help="up, train, report, down")
    for p in (up, demo):
        p.add_argument("--robots", type=int, default=1)
        p.add_argument("--experiment", default="")
        p.add_argument("--sim-params", default="config/sim.yaml")
        p.add_argument("--controller-params", default="config/controller.yaml")
        p.add_argument("--trainer-params", default="config/trainer.yaml")
    demo.add_argument("--iterations", type=int, default=5)
    tr = sub.add_parser("train", help="run iterations with a live progress bar")
    tr.add_argument("--iterations", type=int, default=1)
    sub.add_parser("status", help="print the trainer status")
    sub.add_parser("down", help="stop the processes `gps up` started")
    a = ap.parse_args(argv)
    return {"up": cmd_up, "down": cmd_down, "train": cmd_train, "status": cmd_status, "demo": cmd_demo}[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
