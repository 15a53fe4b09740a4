"""gps_controller + gps_trainer against a real robot's ros2_control (JointGroupEffortController on
effort_controller/commands) and camera (camera/image_raw). Resets are joint-space moves (no gps_sim).

    ros2 launch launch/pr2.launch.py namespace:=pr2 experiment:=config/experiments/reach_traj_opt.yaml

The trainer on another machine (docs/networking.md): `part:=robot` on the robot's computer (the
controller beside the robot), `part:=trainer` on the trainer host, both with the same namespace.
"""

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import UnlessCondition
from launch.substitutions import EqualsSubstitution, LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

from gps_core.bringup import config_path
from launch import LaunchDescription

# A real robot: ticks on a timer, resets by a joint-space PD move (no gps_sim/reset), stale data after
# two periods; the PR2 publishes every joint's state.
CONTROLLER_OVERRIDES = {"trigger_mode": "timer", "reset_mode": "pd", "stale_timeout": 0.0,
                        "strict_joint_names": False}


def generate_launch_description():
    ns, part, server = LaunchConfiguration("namespace"), LaunchConfiguration("part"), LaunchConfiguration("discovery_server")
    return LaunchDescription([
        DeclareLaunchArgument("experiment", default_value=config_path("experiments/reach_traj_opt.yaml")),
        DeclareLaunchArgument("output_dir", default_value="runs/pr2", description="relative to the working dir"),
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        DeclareLaunchArgument("part", default_value="all", choices=["all", "robot", "trainer"],
                              description="all: controller and trainer here; robot: the controller only; "
                                          "trainer: the trainer only, for the robot's controller elsewhere"),
        DeclareLaunchArgument("discovery_server", default_value="",
                              description="Fast DDS discovery server(s) for these nodes (ROS_DISCOVERY_SERVER "
                                          "syntax); '' = the environment's"),
        SetEnvironmentVariable("ROS_DISCOVERY_SERVER", server,
                               condition=UnlessCondition(EqualsSubstitution(server, ""))),
        Node(package="gps_controller", executable="gps_controller", name="gps_controller", namespace=ns,
             condition=UnlessCondition(EqualsSubstitution(part, "trainer")), output="screen", parameters=[config_path("controller.yaml"),
                                          CONTROLLER_OVERRIDES,
                                          {"use_sim_time": LaunchConfiguration("use_sim_time")}]),
        Node(package="gps_trainer", executable="gps_trainer", name="gps_trainer", output="screen",
             condition=UnlessCondition(EqualsSubstitution(part, "robot")),
             parameters=[config_path("trainer.yaml"),
                         {"experiment": LaunchConfiguration("experiment"),
                          "output_dir": LaunchConfiguration("output_dir"),
                          "controller_namespaces": PythonExpression(["['", ns, "']"]),
                          "use_sim_time": False}]),  # the trainer's timeouts run on the system clock
    ])
