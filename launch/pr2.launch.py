"""gps_controller + gps_trainer against a real robot's ros2_control (JointGroupEffortController on
effort_controller/commands) and camera (camera/image_raw). Resets are joint-space moves (no gps_sim).

    ros2 launch launch/pr2.launch.py namespace:=pr2 experiment:=config/experiments/reach_traj_opt.yaml
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

from gps_core.bringup import config_path
from launch import LaunchDescription

# A real robot: ticks on a timer, resets by a joint-space PD move (no gps_sim/reset), stale data after
# two periods; the PR2 publishes every joint's state.
CONTROLLER_OVERRIDES = {"trigger_mode": "timer", "reset_mode": "pd", "stale_timeout": 0.0,
                        "strict_joint_names": False}


def generate_launch_description():
    ns = LaunchConfiguration("namespace")
    return LaunchDescription([
        DeclareLaunchArgument("experiment", default_value=config_path("experiments/reach_traj_opt.yaml")),
        DeclareLaunchArgument("output_dir", default_value="runs/pr2", description="relative to the working dir"),
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        Node(package="gps_controller", executable="gps_controller", name="gps_controller", namespace=ns,
             output="screen", parameters=[config_path("controller.yaml"),
                                          CONTROLLER_OVERRIDES,
                                          {"use_sim_time": LaunchConfiguration("use_sim_time")}]),
        Node(package="gps_trainer", executable="gps_trainer", name="gps_trainer", output="screen",
             parameters=[config_path("trainer.yaml"),
                         {"experiment": LaunchConfiguration("experiment"),
                          "output_dir": LaunchConfiguration("output_dir"),
                          "controller_namespaces": PythonExpression(["['", ns, "']"]),
                          "use_sim_time": False}]),  # the trainer's timeouts run on the system clock
    ])
