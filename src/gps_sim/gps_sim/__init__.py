"""Embedded PR2-like arm simulation (MuJoCo): tasks, Python API, gymnasium env, ROS 2 node."""

from gps_core.tasks import CONDITION_SETS, Condition, TaskConfig, load_task
from gps_sim.arm_sim import JOINT_NAMES, ArmSim, Observation

__all__ = ["ArmSim", "Observation", "JOINT_NAMES", "load_task", "TaskConfig", "Condition", "CONDITION_SETS"]
