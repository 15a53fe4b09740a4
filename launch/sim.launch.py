"""gps_sim + gps_controller (one per robot namespace) + gps_trainer, optional RViz.

    ros2 launch launch/sim.launch.py experiment:=config/experiments/reach_traj_opt.yaml robots:=2 rviz:=true
    ros2 service call /gps_trainer/start_iteration gps_msgs/srv/StartIteration "{iterations: 5}"

Same nodes and parameter files as `gps up` (the embedded path without `ros2 launch`).
"""

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name):
    return os.path.join(ROOT, "config", name)


def _nodes(context):
    robots = int(LaunchConfiguration("robots").perform(context))
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
    namespaces = [f"robot{i + 1}" for i in range(robots)] if robots > 1 else [LaunchConfiguration("namespace").perform(context)]
    actions = []
    for ns in namespaces:
        actions.append(Node(package="gps_sim", executable="gps_sim", name="gps_sim", namespace=ns, output="screen",
                            parameters=[_config("sim.yaml")]))
        actions.append(Node(package="gps_controller", executable="gps_controller", name="gps_controller",
                            namespace=ns, output="screen",
                            parameters=[_config("controller.yaml"), {"use_sim_time": use_sim_time}]))
    actions.append(Node(package="gps_trainer", executable="gps_trainer", name="gps_trainer", output="screen",
                        parameters=[_config("trainer.yaml"), {
                            "experiment": LaunchConfiguration("experiment").perform(context),
                            "output_dir": LaunchConfiguration("output_dir").perform(context),
                            "controller_namespaces": namespaces,
                            "use_sim_time": use_sim_time}]))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("experiment", default_value=_config("experiments/reach_traj_opt.yaml")),
        DeclareLaunchArgument("output_dir", default_value=os.path.join(ROOT, "runs", "reach")),
        DeclareLaunchArgument("namespace", default_value="", description="robot namespace (robots:=1)"),
        DeclareLaunchArgument("robots", default_value="1", description="simulated robots robot1..robotN"),
        DeclareLaunchArgument("use_sim_time", default_value="true"),
        DeclareLaunchArgument("rviz", default_value="false"),
        OpaqueFunction(function=_nodes),
        Node(package="rviz2", executable="rviz2", arguments=["-d", os.path.join(ROOT, "rviz", "gps.rviz")],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
