"""Helpers shared by the controller node's integration tests: subprocess peers and a trainer-side node."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import rclpy
import yaml

from gps_controller import conversions as conv
from gps_controller.qos import LATEST_QOS, ROLLOUT_QOS
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_msgs.msg import Rollout
from gps_msgs.srv import RunTrial, SetLinearGaussian, SetPolicyWeights

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
if ROOT not in sys.path:  # testing_helpers lives at the repository root (peers and benchmarks import this file)
    sys.path.insert(0, ROOT)
from testing_helpers import wait_for_output  # noqa: E402


def subprocess_env(domain_offset: int = 0) -> dict:
    """This test session's environment with the source tree on PYTHONPATH (as conftest's ros_env),
    optionally on a neighbouring ROS domain so a rig can run isolated from the others."""
    env = dict(os.environ)
    src = [os.path.join(ROOT, "src", p) for p in ("gps_sim", "gps_trainer", "gps_controller")]
    env["PYTHONPATH"] = os.pathsep.join(src + [env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    if domain_offset:
        env["ROS_DOMAIN_ID"] = str((int(env.get("ROS_DOMAIN_ID", "0")) + domain_offset) % 230)
    return env
#: The controller under test (a regression check can point this at an older copy of the node).
CONTROLLER_MODULE = os.environ.get("GPS_TEST_CONTROLLER_MODULE", "gps_controller.controller_node")
LIMITS = np.array([30.0, 30.0, 30.0, 30.0, 30.0, 10.0, 10.0])
Q0 = np.array([-0.72, -0.44, -1.32, -1.83, -1.43, -1.54, -1.94])
DX, DU = 32, 7


#: The controller's CNN inference settings in every rig; a test that recomputes the node's actions in
#: its own process runs the same (same kernels in the same order: bit-equal float32 outputs).
TORCH_THREADS, PRECISION = 1, "fp32"


def _write_params(path, **overrides):
    params = {"trigger_mode": "observation", "reset_mode": "none", "stale_timeout": 0.5, "horizon": 20,
              "image_size": 64, "task": "reach", "torch_threads": TORCH_THREADS, "precision": PRECISION}
    params.update(overrides)
    path.write_text(yaml.safe_dump({"/**/gps_controller": {"ros__parameters": params}}))
    return path


class Peers:
    """A fake robot and a controller node as subprocesses (stdout merged, read for 'ready')."""

    def __init__(self, env, params_file, robot_args=(), sigint_ignored=False):
        self.procs = []
        self.robot = self._start(env, [sys.executable, "-m", "gps_controller.fake_robot", *robot_args])
        wait_for_output(self.robot, "ready")
        cmd = [sys.executable, "-m", CONTROLLER_MODULE, "--ros-args", "--params-file", str(params_file)]
        if sigint_ignored:  # as a non-interactive shell starts a background job (`cmd &`): SIGINT inherited ignored
            cmd = ["bash", "-c", 'trap "" INT; exec "$@"', "bash", *cmd]
        self.controller = self._start(env, cmd)
        wait_for_output(self.controller, "ready:")
        self.logs = {id(p): [] for p in self.procs}
        for proc in self.procs:  # keep draining so a chatty peer never blocks on a full pipe
            threading.Thread(target=self._drain, args=(proc,), daemon=True).start()

    def _drain(self, proc):
        for line in proc.stdout:
            self.logs[id(proc)].append(line)

    def log(self, proc) -> str:
        return "".join(self.logs[id(proc)])

    def _start(self, env, cmd):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        return proc

    def close(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


class SimPeers(Peers):
    """The real gps_sim node (lockstep, publishing /clock) and a controller, logs drained."""

    def __init__(self, env, params_file, sim_args=()):
        self.procs = []
        sim = self._start(env, [sys.executable, "-m", "gps_sim.sim_node", *sim_args])
        self.controller = self._start(env, [sys.executable, "-m", CONTROLLER_MODULE,
                                            "--ros-args", "--params-file", str(params_file)])
        wait_for_output(self.controller, "ready:")
        self.robot = sim
        self.logs = {id(p): [] for p in self.procs}
        for proc in self.procs:
            threading.Thread(target=self._drain, args=(proc,), daemon=True).start()


class Trainer:
    """The test process's node: service clients and the rollout subscription."""

    def __init__(self):
        self.node = rclpy.create_node("test_trainer")
        self.rollouts = []
        self.overlays = []
        self.node.create_subscription(Rollout, "/gps/rollouts", self.rollouts.append, ROLLOUT_QOS)
        from sensor_msgs.msg import Image

        self.node.create_subscription(Image, "gps/feature_points/image", self.overlays.append, LATEST_QOS)
        self.clients = {
            "run_trial": self.node.create_client(RunTrial, "gps_controller/run_trial"),
            "set_linear_gaussian": self.node.create_client(SetLinearGaussian, "gps_controller/set_linear_gaussian"),
            "set_policy_weights": self.node.create_client(SetPolicyWeights, "gps_controller/set_policy_weights"),
        }
        for client in self.clients.values():
            assert client.wait_for_service(timeout_sec=30.0)

    def call(self, name, request, timeout=60.0):
        future = self.clients[name].call_async(request)
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        assert future.done(), f"{name}: no answer within {timeout} s"
        return future.result()

    def wait_rollout(self, rollout_id, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.rollouts:
                if msg.rollout_id == rollout_id:
                    return conv.rollout_from_msg(msg)
            rclpy.spin_once(self.node, timeout_sec=0.05)
        raise TimeoutError(f"rollout {rollout_id} never arrived")

    def spin_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def close(self):
        self.node.destroy_node()


def pd_controller(T=20, bias_joint4=0.0, cov=0.1):
    from gps_core.linear_gaussian import init_pd

    x0 = np.zeros(DX)
    x0[:7] = Q0
    pol = init_pd(x0, DU, T, pos_gains=10.0, init_var=cov)
    bias = pol.k.copy()
    bias[:, 4] += bias_joint4
    return LinearGaussianPolicy(pol.K, bias, pol.pol_covar)


def lg_request(condition, arrays):
    return SetLinearGaussian.Request(condition=condition, controller=conv.linear_gaussian_to_msg(arrays))


