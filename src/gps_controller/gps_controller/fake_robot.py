"""A minimal stand-in robot for controller tests and the latency benchmark (not a simulator).

Publishes ``joint_states``, ``camera/image_raw`` (rgb8) and ``gps/target_pose`` on a wall-clock
timer at ``--rate`` Hz, integrates a damped double integrator from the torques it receives on
``effort_controller/commands``, and measures observation-to-command latency (command receipt minus
the publish time of the latest joint state, same process clock). ``--camera-frames N`` stops the
camera N images after the first command arrived (to test the controller's stale-camera abort).

    python -m gps_controller.fake_robot --rate 20 --image-size 64 --out robot.json

Prints "ready" once publishing; writes ``--out`` (JSON: commands, latencies) on exit (SIGINT/SIGTERM
or ``--duration``).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import time

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from gps_controller.conversions import image_to_msg
from gps_controller.qos import COMMAND_QOS, ROBOT_STATE_QOS, SENSOR_QOS

JOINTS = ["r_shoulder_pan_joint", "r_shoulder_lift_joint", "r_upper_arm_roll_joint", "r_elbow_flex_joint",
          "r_forearm_roll_joint", "r_wrist_flex_joint", "r_wrist_roll_joint"]
Q0 = [-0.72, -0.44, -1.32, -1.83, -1.43, -1.54, -1.94]


class FakeRobot(Node):
    def __init__(self, args):
        super().__init__("fake_robot")
        self.args = args
        self.dt = 1.0 / args.rate
        self.q = np.array(Q0, dtype=np.float64)
        self.qd = np.zeros(7)
        self.u = np.zeros(7)
        rng = np.random.default_rng(args.seed)
        self.image = rng.integers(0, 256, size=(args.image_size, args.image_size, 3), dtype=np.uint8)
        self.frames = 0
        self.last_pub: float | None = None
        self.commands: list[list[float]] = []
        self.latencies: list[float] = []
        self.js_pub = self.create_publisher(JointState, "joint_states", ROBOT_STATE_QOS)
        self.img_pub = self.create_publisher(Image, "camera/image_raw", ROBOT_STATE_QOS)
        self.target_pub = self.create_publisher(PoseStamped, "gps/target_pose", SENSOR_QOS)
        self.create_subscription(Float64MultiArray, "effort_controller/commands", self.on_command, COMMAND_QOS)
        self.create_timer(self.dt, self.on_timer)

    def on_command(self, msg: Float64MultiArray) -> None:
        now = time.perf_counter()
        u = np.asarray(msg.data, dtype=np.float64)
        if u.shape != (7,):  # ros2_control ignores a command of the wrong length
            return
        self.u = u
        self.commands.append(u.tolist())
        if self.last_pub is not None:
            self.latencies.append(now - self.last_pub)

    def on_timer(self) -> None:
        # Damped double integrator (unit inertia, damping 2/s); gravity off as in the reference.
        self.qd += self.dt * (self.u - 2.0 * self.qd)
        self.q += self.dt * self.qd
        stamp = self.get_clock().now().to_msg()
        if self.args.camera_frames < 0 or self.frames < self.args.camera_frames:
            self.img_pub.publish(image_to_msg(self.image, stamp, "head_mount_kinect_rgb_optical_frame"))
            self.frames += int(bool(self.commands))
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.5, -0.3, 0.475
        pose.pose.orientation.w, pose.pose.orientation.z = math.cos(0.3), math.sin(0.3)
        self.target_pub.publish(pose)
        js = JointState(name=JOINTS, position=self.q.tolist(), velocity=self.qd.tolist(), effort=self.u.tolist())
        js.header.stamp = stamp
        self.js_pub.publish(js)
        self.last_pub = time.perf_counter()

    def write(self) -> None:
        if self.args.out:
            with open(self.args.out, "w") as f:
                json.dump({"commands": self.commands, "latencies": self.latencies, "frames": self.frames}, f)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--camera-frames", type=int, default=-1, help="stop the camera N images after the first command (-1: never)")
    parser.add_argument("--duration", type=float, default=0.0, help="exit after this many seconds (0: run until killed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="")
    args, ros_args = parser.parse_known_args(argv)
    rclpy.init(args=ros_args)
    node = FakeRobot(args)
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    print("ready", flush=True)
    end = time.monotonic() + args.duration if args.duration > 0 else math.inf
    try:
        while rclpy.ok() and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.write()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
