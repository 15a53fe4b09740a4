"""Robots on other machines: what the network costs (issue 25).

Hosts are Linux network namespaces on one bridge (tests/netns.py: own addresses and loopbacks, DDS over
UDP on the veth links, discovery over the subnet); needs root. Prints, then one JSON line:

    bytes per rollout  a Rollout of T + 1 = 101 steps (the reach task) as CDR, 64x64 and 240x240 images,
                       and the bytes its host sent on its link per rollout (RTPS headers, fragments,
                       retransmissions included)
    rollout transfer   one rollout from a robot host to the trainer host (publish -> received, both ends
                       on this machine's clock), messages spaced so that none waits for another, on a
                       free link and on a 20 Mbit/s one (tc tbf, both directions)
    policy push        set_policy_weights with the paper's CNN's 92k parameters (370 kB of safetensors),
                       round trip from the trainer host, free link and 20 Mbit/s
    discovery time     a robot's node starts (its DDS participant) -> the trainer host's client, already
                       running, sees the robot's service ready: multicast
                       (SUBNET) and through a Fast DDS discovery server on the trainer host
    iteration          wall time of one reach_traj_opt iteration (4 conditions, 64x64 images recorded,
                       T = 100) with 1, 2 and 4 robot hosts, each its own `ros2 launch ... part:=robot`,
                       from start_iteration to the iteration's end; the loop's own split (metrics.jsonl);
                       CPU time of the robot hosts' processes (sim, controller, TF) per second of sampling

    sudo -E env PATH=$PATH python benchmarks/network.py [--samples 2] [--robots 1 2 4] [--repeats 3]

(`. scripts/setup.sh` and the ros2-tools kit first: the iteration part runs `ros2 launch`.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = [str(ROOT / "src" / p) for p in ("gps_core", "gps_sim", "gps_trainer", "gps_controller")]
sys.path[:0] = [str(ROOT), *SRC]

from tests import netns  # noqa: E402
from tests.network_stack import DISCOVERY_PORT, ITERATION_DONE, Sizes, Stack  # noqa: E402

PROBE = [sys.executable, "-m", "gps_controller.transport_probe"]
SELF = [sys.executable, str(Path(__file__).resolve())]
STEPS = 101  # a reach trial: T + 1 steps
LIMIT = "20mbit"


def bench_env() -> dict:
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(101, 160)))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *SRC, env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------------------- peers (run in a namespace)


def peer_push(count: int) -> None:
    """Trainer side of the policy push: ``count`` set_policy_weights calls of the paper's CNN weights."""
    import rclpy

    from gps_controller import conversions as conv
    from gps_controller.policies.serialization import serialize_policy
    from gps_msgs.srv import SetPolicyWeights

    arch, weights, sha = serialize_policy(_paper_cnn())
    rclpy.init()
    node = rclpy.create_node("network_bench_push")
    client = node.create_client(SetPolicyWeights, "gps_controller/set_policy_weights")
    if not client.wait_for_service(timeout_sec=60):
        raise SystemExit("push: no set_policy_weights service")
    times, accepted = [], 0
    for _ in range(count):
        req = SetPolicyWeights.Request(architecture=arch, weights=conv.to_uint8_array(weights), sha256=sha)
        t0 = time.perf_counter()
        fut = client.call_async(req)
        rclpy.spin_until_future_complete(node, fut, timeout_sec=120)
        times.append(time.perf_counter() - t0)
        accepted += bool(fut.done() and fut.result().success)
    print(json.dumps({"bytes": len(weights), "times_s": times, "accepted": accepted}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def _paper_cnn():
    """The visuomotor CNN of the reach MDGPS experiment (the paper's architecture, 64x64 images), as the
    trainer builds it."""
    from gps_controller.policies.neural import make_policy
    from gps_core.layout import NUM_JOINTS, OBS_DIM
    from gps_trainer.config import load_experiment

    cfg = load_experiment(str(ROOT / "config" / "experiments" / "reach_mdgps_visual.yaml"))
    policy = make_policy(cfg.algorithm.policy, OBS_DIM, NUM_JOINTS, seed=cfg.algorithm.policy_seed)
    policy.observes = cfg.algorithm.policy_obs
    return policy


def peer_discovery(role: str, name: str, timeout: float = 60.0) -> None:
    """'service': start a node (its DDS participant) with service ``name``, print when it started;
    'client': wait until that service is ready, print when."""
    import rclpy

    from gps_msgs.srv import GetStatus

    rclpy.init()
    started = time.time()
    node = rclpy.create_node(f"network_bench_{role}")
    if role == "service":
        node.create_service(GetStatus, name, lambda req, res: res)
        print(json.dumps({"t": started, "created": time.time()}), flush=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
    else:
        client = node.create_client(GetStatus, name)
        print("ready", flush=True)
        deadline = time.monotonic() + timeout
        while not client.service_is_ready() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.002)
        print(json.dumps({"t": time.time() if client.service_is_ready() else None}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


# ---------------------------------------------------------------------------- measurements


def rollout_bytes(image: int) -> int:
    from rclpy.serialization import serialize_message

    from gps_controller import conversions as conv
    from gps_controller.transport_probe import make_rollout

    return len(serialize_message(conv.rollout_to_msg(make_rollout(0, 0, STEPS, image))))


def rollout_transfer(robot: netns.Host, trainer: netns.Host, env: dict, image: int, count: int,
                     period: float, tmp: Path) -> dict:
    out = tmp / f"recv_{image}.json"
    sub = trainer.popen([*PROBE, "sub", "--count", str(count), "--out", str(out), "--timeout", "600"], env,
                        stdout=subprocess.PIPE, text=True)
    while "ready" not in sub.stdout.readline():
        pass
    tx0 = robot.counters()[1]
    pub = robot.run([*PROBE, "pub", "--count", str(count), "--horizon", str(STEPS), "--image-size", str(image),
                     "--period", str(period), "--timeout", "600"], env, timeout=900)
    sub.wait(timeout=600)
    tx = robot.counters()[1] - tx0
    rec = json.load(open(out))["received"]
    lat = sorted(r["latency_s"] for r in rec)
    return {"image": image, "received": len(rec), "sent": count, "publisher_rc": pub.returncode,
            "content_ok": all(r["content_ok"] for r in rec), "latency_s": lat,
            "median_s": statistics.median(lat) if lat else None, "link_bytes_per_rollout": tx / count}


def policy_push(robot: netns.Host, trainer: netns.Host, env: dict, count: int) -> dict:
    server = robot.popen([*PROBE, "weights-server", "--timeout", "600"], env, stdout=subprocess.PIPE, text=True)
    while "ready" not in server.stdout.readline():
        pass
    try:
        r = trainer.run([*SELF, "--peer", "push", "--count", str(count)], env, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"push peer failed:\n{r.stdout}\n{r.stderr}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        server.kill()
        server.wait(10)
    res["median_s"] = statistics.median(res["times_s"])
    return res


def discovery_time(robot: netns.Host, trainer: netns.Host, env: dict, repeats: int) -> list[dict]:
    """Per repeat: seconds from the robot node's start (participant creation) and from its service's
    creation until the trainer host's client sees the service ready."""
    times = []
    for i in range(repeats):
        # a new name each time: a discovery server still knows the killed service of the last round
        # (until its participant's lease expires) and would announce that one
        name = ["--name", f"network_bench/discovery_{i}_{random.SystemRandom().randint(0, 1 << 30)}"]
        client = trainer.popen([*SELF, "--peer", "discovery-client", *name], env, stdout=subprocess.PIPE, text=True)
        while "ready" not in client.stdout.readline():
            pass
        time.sleep(1.0)  # the client's own participant is announced and settled
        service = robot.popen([*SELF, "--peer", "discovery-service", *name], env, stdout=subprocess.PIPE, text=True)
        t_service = json.loads(service.stdout.readline())
        t_client = json.loads(client.stdout.readline())["t"]
        service.kill()
        service.wait(10)
        client.wait(30)
        if t_client is not None:
            times.append({"from_node_start_s": t_client - t_service["t"],
                          "from_service_created_s": t_client - t_service["created"]})
        else:
            times.append(None)
    return times


def _cpu_seconds(host: netns.Host) -> float:
    """User + system CPU seconds of every process in the host's namespace so far."""
    r = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True, timeout=30)
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in r.stdout.split():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def iteration(robots: int, samples: int, env: dict, tmp: Path, limit: str = "") -> dict:
    sizes = Sizes(conditions=4, samples=samples, horizon=100, image=64)
    work = tmp / f"iteration_{robots}{'_' + limit if limit else ''}"
    work.mkdir()
    with netns.Network() as net:
        stack = Stack(net, work, env, robots=robots, sizes=sizes)
        try:
            for host in stack.robots:
                if limit:
                    host.limit_rate(limit)
            stack.start_all()
            cpu0 = sum(_cpu_seconds(h) for h in stack.robots)
            rx0 = stack.trainer.counters()[0]
            t0 = time.perf_counter()
            stack.start_iteration()
            stack.wait_for_trainer(ITERATION_DONE, 1800)
            wall = time.perf_counter() - t0
            cpu = sum(_cpu_seconds(h) for h in stack.robots) - cpu0
            rx = stack.trainer.counters()[0] - rx0
            # a benchmark reports trials the controllers aborted (a starved lockstep sim's joint states
            # go stale) instead of failing on their error lines
            aborted = sum(stack.launches[h.name].text().count("trial aborted") for h in stack.robots)
            failed = stack.launches["trainer"].text().count("failed:")
            stack.stop(check=False)
        finally:
            stack.close()
    row = json.loads((stack.out / "metrics.jsonl").read_text().splitlines()[-1])
    split = {k: row[f"{k}_s"] for k in ("sampling", "evaluation", "dynamics", "cost", "c_step")}
    return {"robots": robots, "limit": limit or None, "rollouts": 4 * samples, "wall_s": wall, "split_s": split,
            "robot_cpu_s": cpu, "robot_cores_while_sampling": cpu / (split["sampling"] + split["evaluation"]),
            "trainer_rx_mb": rx / 1e6, "trials_aborted": aborted, "trials_failed": failed}


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", choices=["push", "discovery-service", "discovery-client"], help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=5, help=argparse.SUPPRESS)
    ap.add_argument("--name", default="", help=argparse.SUPPRESS)
    ap.add_argument("--samples", type=int, default=2, help="samples per condition in the iteration runs (4 conditions)")
    ap.add_argument("--robots", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=3, help="rollouts, pushes and discoveries per figure")
    ap.add_argument("--skip-iterations", action="store_true")
    ap.add_argument("--skip-link", action="store_true", help="only the iteration runs")
    a = ap.parse_args()
    if a.peer == "push":
        return peer_push(a.count)
    if a.peer:
        return peer_discovery(a.peer.split("-")[1], a.name)
    reason = netns.unavailable_reason()
    if reason:
        raise SystemExit(f"network benchmark: {reason}")
    env = bench_env()
    figures: dict = {"machine": f"{os.uname().machine}, {os.cpu_count()} cores",
                     "load_before": os.getloadavg(), "fastdds_builtin_transports": netns.HOST_ENV}
    figures["rollout_cdr_bytes"] = {str(s): rollout_bytes(s) for s in (64, 240)}
    print(f"rollout of {STEPS} steps as CDR: 64x64 {figures['rollout_cdr_bytes']['64'] / 1e6:.2f} MB, "
          f"240x240 {figures['rollout_cdr_bytes']['240'] / 1e6:.2f} MB", flush=True)
    with tempfile.TemporaryDirectory(prefix="gps_net_bench_") as tmpdir:
        tmp = Path(tmpdir)
        if not a.skip_link:
            with netns.Network() as net:
                trainer, robot = net.add_host("trainer"), net.add_host("robot1")
                for limit in ("", LIMIT):
                    if limit:
                        robot.limit_rate(limit)
                    key = limit or "free"
                    for image in (64, 240):
                        # spaced: each transfer alone on the link (a 240x240 rollout takes ~7 s at 20 Mbit/s)
                        period = 2.0 if image == 64 else (3.0 if not limit else 20.0)
                        r = rollout_transfer(robot, trainer, env, image, a.repeats, period, tmp)
                        figures[f"rollout_{image}_{key}"] = r
                        print(f"rollout {image}x{image}, {key} link: {r['received']}/{r['sent']} received "
                              f"(content ok: {r['content_ok']}), transfer median {r['median_s']:.3f} s "
                              f"(all: {', '.join(f'{x:.3f}' for x in r['latency_s'])}), "
                              f"{r['link_bytes_per_rollout'] / 1e6:.2f} MB on the link per rollout", flush=True)
                    p = policy_push(robot, trainer, env, a.repeats)
                    figures[f"push_{key}"] = p
                    print(f"policy push ({p['bytes'] / 1e3:.0f} kB), {key} link: {p['accepted']}/{len(p['times_s'])} "
                          f"accepted, round trip median {p['median_s'] * 1e3:.0f} ms", flush=True)
                robot.unlimit_rate()
                figures["discovery_multicast_s"] = discovery_time(robot, trainer, env, a.repeats)
                server_log = open(tmp / "discovery_server.log", "w")
                trainer.popen(["bash", str(ROOT / "scripts" / "discovery_server.sh"), trainer.address,
                               str(DISCOVERY_PORT)], env, stdout=server_log, stderr=subprocess.STDOUT)
                time.sleep(2.0)
                figures["discovery_server_s"] = discovery_time(
                    robot, trainer, {**env, "ROS_DISCOVERY_SERVER": f"{trainer.address}:{DISCOVERY_PORT}"}, a.repeats)
                for key in ("discovery_multicast_s", "discovery_server_s"):
                    print(f"{key}: node start -> service seen " + ", ".join(
                        "never" if t is None else f"{t['from_node_start_s']:.3f} s (service created -> seen "
                        f"{t['from_service_created_s']:.3f} s)" for t in figures[key]), flush=True)
        if not a.skip_iterations:
            runs = [(n, "") for n in a.robots] + [(2, LIMIT)]
            figures["iterations"] = []
            for n, limit in runs:
                it = iteration(n, a.samples, env, tmp, limit)
                figures["iterations"].append(it)
                s = it["split_s"]
                print(f"iteration, {n} robot host(s){', ' + limit + ' links' if limit else ''}: wall {it['wall_s']:.1f} s "
                      f"({it['rollouts']} rollouts + 4 evaluations; sampling {s['sampling']:.1f} s, evaluation "
                      f"{s['evaluation']:.1f} s, dynamics + cost + C-step "
                      f"{s['dynamics'] + s['cost'] + s['c_step']:.1f} s); robot hosts' CPU "
                      f"{it['robot_cores_while_sampling']:.2f} cores while trials ran; trainer received "
                      f"{it['trainer_rx_mb']:.1f} MB; {it['trials_failed']} trial(s) failed and ran again "
                      f"({it['trials_aborted']} aborted by a controller)", flush=True)
    figures["load_after"] = os.getloadavg()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
