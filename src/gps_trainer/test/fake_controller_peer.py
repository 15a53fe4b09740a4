"""A stand-in controller for the trainer durability test ONLY (the real gps_controller node needs the
simulation). Serves ``<ns>/gps_controller/run_trial`` (+ set_linear_gaussian / set_policy_weights that
accept anything) and publishes a deterministic Rollout per trial on /gps/rollouts, derived from
(iteration, condition, sample_index) so a re-run trial has identical content but a new uuid suffix,
like the real controller. ``--delay`` seconds per trial keeps an iteration long enough to kill it.

    python fake_controller_peer.py --namespace robot1 --horizon 10 --delay 0.2
"""

import argparse
import uuid

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from gps_controller import conversions as conv
from gps_controller.qos import ROLLOUT_QOS
from gps_msgs.msg import Rollout
from gps_msgs.srv import RunTrial, SetLinearGaussian, SetPolicyWeights


class FakeController(Node):
    def __init__(self, ns: str, horizon: int, delay: float):
        super().__init__("gps_controller", namespace=ns or None)
        self.ns, self.horizon, self.delay = ns, horizon, delay
        self.pub = self.create_publisher(Rollout, "/gps/rollouts", ROLLOUT_QOS)
        self.create_service(RunTrial, "gps_controller/run_trial", self.on_run_trial)
        self.create_service(SetLinearGaussian, "gps_controller/set_linear_gaussian", self.on_accept)
        self.create_service(SetPolicyWeights, "gps_controller/set_policy_weights", self.on_accept)
        print("ready", flush=True)

    def on_accept(self, request, response):
        response.success = True
        return response

    def on_run_trial(self, req, res):
        rng = np.random.default_rng([req.iteration, req.condition, req.sample_index])
        T = req.horizon or self.horizon
        self.get_clock().sleep_for(rclpy.duration.Duration(seconds=self.delay))
        rid = f"{self.ns}/{req.iteration}/{req.condition}/{req.sample_index}/{uuid.uuid4().hex[:8]}"
        data = conv.RolloutData(states=rng.normal(size=(T, 32)), actions=rng.normal(size=(T, 7)),
                                observations=rng.normal(size=(T, 32)), noise=rng.normal(size=(T, 7)),
                                stamps=np.arange(T) * 0.05, condition=req.condition, iteration=req.iteration,
                                sample_index=req.sample_index, seed=req.seed, robot_namespace=self.ns,
                                rollout_id=rid)
        self.pub.publish(conv.rollout_to_msg(data))
        res.success, res.rollout_id, res.steps = True, rid, T
        return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--namespace", default="")
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--delay", type=float, default=0.0)
    args = ap.parse_args()
    rclpy.init()
    node = FakeController(args.namespace, args.horizon, args.delay)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
