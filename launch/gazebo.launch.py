"""Gazebo Harmonic with gz_ros2_control's effort controller and the PR2-style arm (URDF with a
ros2_control block), the camera bridged to ROS, plus gps_controller and gps_trainer.

    ros2 launch launch/gazebo.launch.py experiment:=config/experiments/reach_traj_opt.yaml

The URDF is src/gps_sim/gps_sim/models/pr2_arm.urdf (generated from the MuJoCo model by
`python -m gps_sim.urdf`); controllers: config/gazebo_controllers.yaml.
Needs the docker/ image (ros_gz_sim, ros_gz_bridge, gz_ros2_control, controller_manager).
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from gps_core.bringup import config_path
from gps_core.tasks import repo_root
from launch import LaunchDescription

# python -m gps_sim.urdf (installed with gps_sim's package data); world: python -m gps_sim.gz_world
URDF = str(Path(__import__("gps_sim").__file__).resolve().parent / "models" / "pr2_arm.urdf")
# The URDF names the gz_ros2_control parameters by their repository-relative path; Gazebo needs it absolute.
CONTROLLERS_YAML = "config/gazebo_controllers.yaml"
# The controller node against Gazebo: ticks on a sim-time timer, resets by a joint-space PD move (there is
# no gps_sim/reset), and the target pose from the task's condition (nothing publishes gps/target_pose here).
CONTROLLER_OVERRIDES = {"trigger_mode": "timer", "reset_mode": "pd", "target_source": "task",
                        "stale_timeout": 0.0}


def generate_launch_description():
    use_sim_time = {"use_sim_time": True}
    with open(URDF) as f:
        robot_description = f.read().replace(f"<parameters>{CONTROLLERS_YAML}</parameters>",
                                             f"<parameters>{config_path('gazebo_controllers.yaml')}</parameters>")
    # The task's world: zero gravity, the Sensors system (the camera renders), table and target object.
    world = str(repo_root() / "launch" / "worlds" / "reach.sdf")
    gz = IncludeLaunchDescription(
        PythonLaunchDescriptionSource([FindPackageShare("ros_gz_sim"), "/launch/gz_sim.launch.py"]),
        launch_arguments={"gz_args": ["-r ", LaunchConfiguration("world")]}.items())
    return LaunchDescription([
        DeclareLaunchArgument("experiment", default_value=config_path("experiments/reach_traj_opt.yaml")),
        DeclareLaunchArgument("output_dir", default_value="runs/gazebo", description="relative to the working dir"),
        DeclareLaunchArgument("world", default_value=world, description="SDFormat world (python -m gps_sim.gz_world)"),
        gz,
        Node(package="robot_state_publisher", executable="robot_state_publisher", output="screen",
             parameters=[{"robot_description": robot_description}, use_sim_time]),
        Node(package="ros_gz_sim", executable="create", output="screen",
             arguments=["-topic", "robot_description", "-name", "pr2_arm"]),
        Node(package="controller_manager", executable="spawner", arguments=["joint_state_broadcaster"]),
        Node(package="controller_manager", executable="spawner", arguments=["effort_controller"]),
        Node(package="ros_gz_bridge", executable="parameter_bridge", output="screen",
             arguments=["/camera/image_raw@sensor_msgs/msg/Image[gz.msgs.Image",
                        "/camera/camera_info@sensor_msgs/msg/CameraInfo[gz.msgs.CameraInfo",
                        "/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock"]),
        Node(package="gps_controller", executable="gps_controller", name="gps_controller", output="screen",
             parameters=[config_path("controller.yaml"), CONTROLLER_OVERRIDES, use_sim_time]),
        Node(package="gps_trainer", executable="gps_trainer", name="gps_trainer", output="screen",
             parameters=[config_path("trainer.yaml"), {"use_sim_time": False},
                         {"experiment": LaunchConfiguration("experiment"),
                          "output_dir": LaunchConfiguration("output_dir")}]),
    ])
