"""Observation-to-command latency of the gps_controller node at 20 Hz, over real DDS.

For each policy (linear-Gaussian; CNN at 64x64; CNN at 240x240) this starts, in separate
processes, a stand-in robot (``gps_controller.fake_robot``: joint states + camera + target pose at
20 Hz, all stamped with the time of publishing) and the controller node (observation-triggered, as
against a robot publishing at the control rate), pushes the policy through the controller's services,
runs one trial of ``--ticks`` steps and reports:

- observation age at command publish, per tick (the headline figure, "end-to-end"): the controller
  publishes, with every policy command, a sensor_msgs/TimeReference on ``gps/command_stamps`` (its
  ``command_stamps_topic``): header.stamp = when the command went out, time_ref = the stamp of the
  observation it was computed from (its oldest part: joint state or image). This script subscribes and
  takes the difference tick by tick (same machine, system clock): DDS transit of the observation +
  waiting in the executor + state assembly + policy + safety + publish. p50, p99, max, and the ticks
  whose observation was more than one control period old at publish ("late");
- in-node latency: observation receipt to command publish inside the controller (its log line);
- robot-side p50: command receipt at the robot minus its latest joint-state publish (adds the
  return trip; ambiguous once a command is later than one period, so only its median is kept);
- deadline misses reported in the Rollout (the controller's own count: a command more than one period
  after its observation's receipt).

A target is met only when the age's p99 is within it, every tick's stamp arrived, and no tick was late
or missed its deadline.

Usage:  python benchmarks/controller_latency.py [--ticks 2000] [--only lg,cnn64,cnn240]
        [--executor single|multi] [--torch-threads N] [--precision fp32|bf16|auto]
        [--inference-budget F] [--max-consecutive-misses K]
        (node parameters; default: the node's defaults; ``precision`` is the CNN's inference precision)
The last line printed is one JSON object. Targets: age p99 <= 5 ms (LG), <= 25 ms (CNN 240x240), 0 late.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for sub in ("gps_sim", "gps_trainer", "gps_controller"):
    sys.path.insert(0, str(ROOT / "src" / sub))
sys.path.insert(0, str(ROOT / "src" / "gps_controller" / "test"))

CONFIGS = {"lg": ("linear_gaussian", 64), "cnn64": ("neural", 64), "cnn240": ("neural", 240)}
TARGET_P99_MS = {"lg": 5.0, "cnn240": 25.0}


def run_one(name: str, ticks: int, env: dict, workdir: Path, node_params: dict | None = None) -> dict:
    import rclpy
    from controller_rig import Peers, Trainer, _write_params, lg_request, pd_controller
    from sensor_msgs.msg import TimeReference

    from gps_controller import conversions as conv
    from gps_controller.qos import COMMAND_STAMPS_QOS
    from gps_msgs.srv import RunTrial, SetPolicyWeights

    policy_type, size = CONFIGS[name]
    params = _write_params(workdir / f"{name}.yaml", image_size=size, horizon=ticks, stale_timeout=0.5,
                           publish_overlay=False, **(node_params or {}))
    robot_out = workdir / f"{name}_robot.json"
    peers = Peers(env, params, robot_args=["--rate", "20", "--image-size", str(size), "--out", str(robot_out)])
    rclpy.init()
    trainer = Trainer()
    stamps: list[tuple[float, float]] = []  # (command published, observation stamp), s on the system clock

    def on_stamp(msg: TimeReference) -> None:
        ref = msg.time_ref.sec + msg.time_ref.nanosec * 1e-9
        stamps.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, ref if ref > 0 else np.nan))

    # spun with the trainer's node while run_trial is awaited
    trainer.node.create_subscription(TimeReference, "gps/command_stamps", on_stamp, COMMAND_STAMPS_QOS)
    try:
        if policy_type == "linear_gaussian":
            resp = trainer.call("set_linear_gaussian", lg_request(0, pd_controller(T=ticks)))
        else:
            from gps_controller.policies import VisuomotorConfig, make_visuomotor_policy, serialize_policy

            policy = make_visuomotor_policy(VisuomotorConfig(config_dim=32, action_dim=7, image_height=size,
                                                             image_width=size), seed=0)
            arch, weights, sha = serialize_policy(policy)
            resp = trainer.call("set_policy_weights", SetPolicyWeights.Request(
                architecture=arch, weights=conv.to_uint8_array(weights), sha256=sha))
        if not resp.success:  # the controller's admission check (inference_budget): a result, not a crash
            return {"policy": name, "rejected": resp.message, "ticks": 0, "aborted": False}
        t0 = time.monotonic()
        resp = trainer.call("run_trial", RunTrial.Request(condition=0, policy_type=policy_type, horizon=ticks),
                            timeout=ticks * 0.05 * 3 + 60)
        wall = time.monotonic() - t0
        assert resp.success, resp.message
        rollout = trainer.wait_rollout(resp.rollout_id, timeout=30)
        trainer.spin_for(0.5)  # the last stamps
    finally:
        trainer.close()
        rclpy.shutdown()
        peers.close()
    time.sleep(0.5)
    log = peers.log(peers.controller)
    m = re.findall(r"in-node latency p50 ([\d.]+) ms p99 ([\d.]+) ms", log)
    if not m:
        raise RuntimeError(f"no latency line in the controller log:\n{log[-2000:]}")
    node50, node99 = (float(v) for v in m[-1])
    ages = np.array([pub - obs for pub, obs in stamps]) * 1e3
    measured = ages[np.isfinite(ages)]
    if measured.size == 0:
        raise RuntimeError(f"no command stamps with an observation stamp arrived ({len(stamps)} messages)")
    robot = np.array(json.loads(robot_out.read_text())["latencies"]) * 1e3
    period_ms = 1e3 / 20.0
    return {
        "policy": name, "ticks": int(rollout.horizon), "aborted": bool(rollout.aborted),
        "abort_reason": rollout.abort_reason, "wall_s": round(wall, 1),
        "stamps_received": int(measured.size),
        "e2e_p50_ms": round(float(np.percentile(measured, 50)), 3),
        "e2e_p99_ms": round(float(np.percentile(measured, 99)), 3),
        "e2e_max_ms": round(float(measured.max()), 3),
        "late_ticks": int(np.sum(measured > period_ms)),
        "node_p50_ms": node50, "node_p99_ms": node99,
        "robot_side_p50_ms": round(float(np.percentile(robot, 50)), 3),
        "deadline_misses": int(rollout.deadline_misses),
        "ages_ms": [round(float(a), 3) for a in ages],  # per tick, in order (dropped from the printed JSON)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--only", default="lg,cnn64,cnn240")
    parser.add_argument("--executor", choices=["single", "multi"], help="controller node's executor parameter")
    parser.add_argument("--torch-threads", type=int, help="controller node's torch_threads parameter")
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"],
                        help="controller node's precision parameter (CNN inference; issue 16)")
    parser.add_argument("--inference-budget", type=float,
                        help="controller node's inference_budget (admission check of a pushed policy, fraction of "
                             "the period; default 0.8); above 1 to measure a policy the controller would refuse")
    parser.add_argument("--ages-out", default="", help="write every tick's observation age (ms) per policy as JSON")
    parser.add_argument("--max-consecutive-misses", type=int,
                        help="controller node's max_consecutive_deadline_misses (default 5: a trial aborts after "
                             "5 late commands in a row, as on a real robot; 0 = never, to measure a whole trial)")
    args = parser.parse_args()
    node_params = {k: v for k, v in (("executor", args.executor), ("torch_threads", args.torch_threads),
                                     ("precision", args.precision), ("inference_budget", args.inference_budget),
                                     ("max_consecutive_deadline_misses", args.max_consecutive_misses))
                   if v is not None}
    from controller_rig import subprocess_env

    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 60))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env = subprocess_env()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            r = run_one(name, args.ticks, env, Path(tmp), node_params)
            target = TARGET_P99_MS.get(name)
            r["target_p99_ms"] = target
            if "rejected" in r:
                r["meets_target"] = False if target is not None else None
                results.append(r)
                print(f"{name:7s} policy refused by the controller: {r['rejected']} | load {os.getloadavg()[0]:.1f}",
                      flush=True)
                continue
            every_tick_on_time = (not r["aborted"] and r["stamps_received"] == r["ticks"] == args.ticks
                                  and r["late_ticks"] == 0 and r["deadline_misses"] == 0)
            r["meets_target"] = None if target is None else bool(r["e2e_p99_ms"] <= target and every_tick_on_time)
            results.append(r)
            print(f"{name:7s} ticks {r['ticks']} (stamps {r['stamps_received']})  observation age at publish: "
                  f"p50 {r['e2e_p50_ms']:.2f} ms p99 {r['e2e_p99_ms']:.2f} ms max {r['e2e_max_ms']:.2f} ms, "
                  f"late {r['late_ticks']} | in-node p50 {r['node_p50_ms']} ms p99 {r['node_p99_ms']} ms"
                  f" | robot-side p50 {r['robot_side_p50_ms']} ms | deadline misses {r['deadline_misses']}"
                  f" | load {os.getloadavg()[0]:.1f}", flush=True)
    if args.ages_out:
        Path(args.ages_out).write_text(json.dumps({r["policy"]: r.get("ages_ms", []) for r in results}))
    for r in results:
        r.pop("ages_ms", None)
    print(json.dumps({"benchmark": "controller_latency", "rate_hz": 20, "cpus": os.cpu_count(), **node_params,
                      "load_avg_1min_at_end": round(os.getloadavg()[0], 2), "results": results}))


if __name__ == "__main__":
    main()
