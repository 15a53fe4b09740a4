"""The launch files' `part:=` and `discovery_server:=` arguments (robots and trainer on separate
machines, issue 25): which nodes each part starts, evaluated by the real `launch` library without
starting anything. The stack running across hosts is tests/test_network_namespaces.py."""

from __future__ import annotations

import importlib.util

import pytest

from gps_core.bringup import sim_stack
from tests.ros2_cli import ROOT


def test_sim_stack_parts():
    everything = [(s.role, s.namespace) for s in sim_stack(robots=2)]
    assert [(s.role, s.namespace) for s in sim_stack(robots=2, part="robot")] == everything[:-1]
    trainer = sim_stack(robots=2, part="trainer")
    assert [(s.role, s.namespace) for s in trainer] == [("trainer", "")]
    assert trainer[0].overrides["controller_namespaces"] == ["robot1", "robot2"]
    # one robot host in its own namespace, and the trainer host that serves it
    assert {s.namespace for s in sim_stack(namespace="robot3", part="robot")} == {"robot3"}
    assert sim_stack(namespace="robot3", part="trainer")[0].overrides["controller_namespaces"] == ["robot3"]
    with pytest.raises(ValueError, match="part must be one of all, robot, trainer, got 'robots'"):
        sim_stack(part="robots")


def _evaluate(launch_file: str, **args: str) -> tuple[list[tuple[str, str]], dict]:
    """(package, executable) of every node the launch file starts with ``args``, and the environment it
    sets: its actions visited in a LaunchContext, conditions evaluated, nothing executed."""
    pytest.importorskip("launch_ros", reason="the ros2-tools kit (launch, launch_ros) is not installed")
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
    from launch.launch_context import LaunchContext
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location("launch_under_test", ROOT / "launch" / launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = LaunchContext()
    context.launch_configurations.update(args)
    nodes, env = [], {}
    pending = list(module.generate_launch_description().entities)
    while pending:
        action = pending.pop(0)
        if action.condition is not None and not action.condition.evaluate(context):
            continue
        if isinstance(action, DeclareLaunchArgument):
            action.visit(context)  # its default, unless given
        elif isinstance(action, OpaqueFunction):
            pending[:0] = action.visit(context) or []
        elif isinstance(action, SetEnvironmentVariable):
            env[action.name[0].perform(context)] = "".join(s.perform(context) for s in action.value)
        elif isinstance(action, Node):
            nodes.append((action.node_package, action.node_executable))
    return nodes, env


def test_sim_launch_parts():
    sim_robot = [("gps_sim", "gps_sim"), ("gps_controller", "gps_controller"), ("gps_sim", "gps_tf")]
    nodes, env = _evaluate("sim.launch.py")
    assert nodes == [*sim_robot, ("gps_trainer", "gps_trainer")] and env == {}
    assert _evaluate("sim.launch.py", part="robot", namespace="robot1")[0] == sim_robot
    assert _evaluate("sim.launch.py", part="trainer", robots="2")[0] == [("gps_trainer", "gps_trainer")]
    assert _evaluate("sim.launch.py", part="trainer", discovery_server="10.0.0.1:11811")[1] == {
        "ROS_DISCOVERY_SERVER": "10.0.0.1:11811"}


def test_pr2_launch_parts():
    controller, trainer = ("gps_controller", "gps_controller"), ("gps_trainer", "gps_trainer")
    assert _evaluate("pr2.launch.py")[0] == [controller, trainer]
    assert _evaluate("pr2.launch.py", part="robot", namespace="pr2")[0] == [controller]
    nodes, env = _evaluate("pr2.launch.py", part="trainer", discovery_server="10.0.0.1:11811")
    assert nodes == [trainer] and env == {"ROS_DISCOVERY_SERVER": "10.0.0.1:11811"}
