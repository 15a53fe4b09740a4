"""Simulation speed: physics-only real-time factor, per-control-step cost with images (reach, and every
Table I task's training scene with random distractors, with and without the geoms the camera does not
draw), and a T=100 lockstep rollout through the gps_sim ROS node (separate process, real DDS) with 64x64
images.

Usage: python benchmarks/sim_speed.py [--skip-ros]   (after `. scripts/setup.sh`). The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from gps_sim import ArmSim  # noqa: E402
from gps_sim.scenes import CAMERA_HIDDEN_GROUP  # noqa: E402

#: The Table I tasks' training scenes (random distractors, as the visuomotor GPS samples them).
TASK_SCENES = ("shape_sorting_grid_dr", "coat_hanger_grid_dr", "toy_hammer_dr", "bottle_cap_grid_dr")


def physics_rtf(steps: int = 400) -> float:
    sim = ArmSim("reach")
    sim.reset(0)
    u = np.random.default_rng(0).uniform(-5, 5, (steps, 7))
    t0 = time.perf_counter()
    for k in range(steps):
        sim.step(u[k])
    wall = time.perf_counter() - t0
    return steps * sim.control_dt / wall


def step_ms(image_size: int, steps: int = 40, task: str = "reach", draw_hidden: bool = False) -> float:
    """ms per control step with an image; ``draw_hidden``: the camera draws CAMERA_HIDDEN_GROUP too (what
    every frame cost before those geoms left the image)."""
    sim = ArmSim(task, image_size=image_size, render_images=True)
    sim.reset(0, seed=1)
    sim.step(np.zeros(7))  # renderer set-up
    if draw_hidden:
        sim._camera_option.geomgroup[CAMERA_HIDDEN_GROUP] = 1
    t0 = time.perf_counter()
    for _ in range(steps):
        sim.step(np.ones(7))
    out = (time.perf_counter() - t0) / steps * 1e3
    sim.close()
    return out


def ros_lockstep_rollout(horizon: int = 100, image_size: int = 64) -> dict:
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    from gps_msgs.srv import ResetCondition

    ns = "/bench_" + uuid.uuid4().hex[:8]
    proc = subprocess.Popen([sys.executable, "-m", "gps_sim.sim_node", "--ros-args", "-r", f"__ns:={ns}",
                             "-p", f"image_size:={image_size}", "-p", "mode:=lockstep"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bench_probe", namespace=ns, context=ctx)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
    js, imgs = [], []
    node.create_subscription(JointState, "joint_states", js.append, qos)
    node.create_subscription(Image, "camera/image_raw", imgs.append, qos)
    pub = node.create_publisher(Float64MultiArray, "effort_controller/commands", qos)
    cli = node.create_client(ResetCondition, "gps_sim/reset")

    def wait(pred, timeout=30.0):
        end = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > end:
                raise TimeoutError("gps_sim node did not answer")
            ex.spin_once(timeout_sec=0.01)

    try:
        if not cli.wait_for_service(timeout_sec=60.0):
            raise TimeoutError("gps_sim reset service not available")
        wait(lambda: pub.get_subscription_count() > 0)
        fut = cli.call_async(ResetCondition.Request(condition=0))
        wait(fut.done)
        wait(lambda: js and imgs)
        time.sleep(0.2)
        ex.spin_once(timeout_sec=0.01)
        n_js, n_img = len(js), len(imgs)
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for k in range(horizon):  # closed loop: each command waits for the previous state and image
            pub.publish(Float64MultiArray(data=rng.uniform(-3, 3, 7).tolist()))
            wait(lambda k=k: len(js) >= n_js + k + 1 and len(imgs) >= n_img + k + 1)
        wall = time.perf_counter() - t0
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    sim_s = horizon * 0.05
    return {"ros_lockstep_T": horizon, "ros_lockstep_wall_s": round(wall, 3),
            "ros_lockstep_rtf": round(sim_s / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-ros", action="store_true", help="no lockstep rollout through the ROS node")
    args = parser.parse_args()
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU (MuJoCo EGL/Mesa CPU rendering)",
        "physics_only_rtf": round(physics_rtf(), 1),
        "step_ms_64px": round(step_ms(64), 2),
        "step_ms_240px": round(step_ms(240), 2),
    }
    print(f"physics-only real-time factor: {result['physics_only_rtf']}x")
    print(f"control step with 64x64 image: {result['step_ms_64px']} ms; 240x240: {result['step_ms_240px']} ms")
    for task in TASK_SCENES:
        hidden = int(np.sum(ArmSim(task).model.geom_group == CAMERA_HIDDEN_GROUP))
        ms = step_ms(64, 100, task=task)
        ms_drawn = step_ms(64, 100, task=task, draw_hidden=True) if hidden else ms
        result[f"step_ms_64px_{task}"] = round(ms, 2)
        result[f"step_ms_64px_{task}_hidden_drawn"] = round(ms_drawn, 2)
        print(f"{task}: control step with 64x64 image {ms:.2f} ms ({hidden} geoms the camera does not draw; "
              f"drawn: {ms_drawn:.2f} ms, {ms_drawn / ms:.2f}x)")
    if args.skip_ros:
        print(json.dumps(result))
        return
    ros = ros_lockstep_rollout()
    result.update(ros)
    print(f"T=100 lockstep rollout via ROS (64x64): {ros['ros_lockstep_wall_s']} s wall, "
          f"{ros['ros_lockstep_rtf']}x real time")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
