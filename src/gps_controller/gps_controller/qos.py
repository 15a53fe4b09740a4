"""QoS profiles shared by the controller, the trainer and the probes (one definition each)."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

#: QoS of /gps/rollouts: every rollout must arrive (RELIABLE) and a burst of a whole
#: iteration's samples must not overwrite unsent ones (deep KEEP_LAST).
ROLLOUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=50,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

#: Joint states and camera images: sensor data (KEEP_LAST 5, BEST_EFFORT). A BEST_EFFORT
#: subscription matches both RELIABLE and BEST_EFFORT publishers.
SENSOR_QOS = qos_profile_sensor_data

#: Torque commands: ros2_control's JointGroupEffortController subscribes RELIABLE, depth 10.
COMMAND_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

#: Per-command stamps (diagnostics): RELIABLE and deep enough that a listener measuring every tick
#: (benchmarks/controller_latency.py) loses none; KEEP_LAST, so a slow listener never blocks the controller.
COMMAND_STAMPS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

#: Latest-value topics (target pose, overlay): RELIABLE, depth 1.
LATEST_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)


def sensor_qos(depth: int, reliable: bool) -> QoSProfile:
    """The controller's joint-state and image subscriptions: KEEP_LAST ``depth``, deep enough that a
    burst of bad or foreign messages cannot evict the robot's own (they are rejected cheaply).

    ``reliable`` for lockstep (observation-triggered) trials, where every state matters: a lost sample
    stalls the trial, and a RELIABLE reader gets lost fragments resent (a flood of huge images made the
    transport drop the simulation's own). A BEST_EFFORT reader (timer mode: a real robot's drivers
    publish sensor data best effort) matches any publisher."""
    reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


#: What a stand-in robot publishes its sensor data with: RELIABLE matches both kinds of reader.
ROBOT_STATE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
