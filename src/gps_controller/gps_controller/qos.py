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

#: Latest-value topics (target pose, overlay): RELIABLE, depth 1.
LATEST_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)


def sensor_qos(depth: int) -> QoSProfile:
    """BEST_EFFORT KEEP_LAST ``depth``: the controller's joint-state and image subscriptions, deep enough
    that a burst of bad or foreign messages cannot evict the robot's own (they are rejected cheaply)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)
