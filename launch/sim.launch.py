"""gps_sim + gps_controller + gps_tf (one set per robot namespace) + gps_trainer, optional RViz.

    ros2 launch launch/sim.launch.py                      # from a checkout
    ros2 launch gps_trainer sim.launch.py robots:=2       # installed (share/gps_trainer/launch)
    ros2 service call /gps_trainer/start_iteration gps_msgs/srv/StartIteration "{iterations: 5}"

Robots and trainer on separate machines (docs/networking.md): each robot host runs its part, the
trainer host the trainer, all with the same ROS_DOMAIN_ID and robot namespaces:

    ros2 launch gps_trainer sim.launch.py part:=robot namespace:=robot1     # robot host 1
    ros2 launch gps_trainer sim.launch.py part:=robot namespace:=robot2     # robot host 2
    ros2 launch gps_trainer sim.launch.py part:=trainer robots:=2           # trainer host
    # networks without multicast: every host adds discovery_server:=<server ip>:11811 (a Fast DDS
    # discovery server, e.g. bash scripts/discovery_server.sh on the trainer host)

The nodes, parameter files and time source come from gps_core.bringup.sim_stack, which `gps up` uses
too. Each robot's sim publishes its own clock (`/clock`, or `/robotN/clock` with robots:=N) and that
robot's nodes read it; the trainer runs on the system clock (its timeouts must fire if a sim stops).
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import EqualsSubstitution, LaunchConfiguration
from launch_ros.actions import Node

from gps_core.bringup import PARTS, USE_SIM_TIME, config_path, sim_stack
from gps_core.tasks import repo_root
from launch import LaunchDescription


def _truthy(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def _nodes(context):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    specs = sim_stack(robots=int(arg("robots")), namespace=arg("namespace"), experiment=arg("experiment"),
                      output_dir=arg("output_dir"), use_sim_time=_truthy(arg("use_sim_time")),
                      tf=_truthy(arg("tf")), part=arg("part"), sim_params=arg("sim_params"),
                      controller_params=arg("controller_params"), trainer_params=arg("trainer_params"))
    return [Node(package=s.package, executable=s.executable, name=s.name, namespace=s.namespace or None,
                 output="screen", parameters=[*s.params_files, s.overrides], remappings=list(s.remappings))
            for s in specs]


def generate_launch_description():
    root = repo_root()
    return LaunchDescription([
        DeclareLaunchArgument("experiment", default_value=config_path("experiments/reach_traj_opt.yaml")),
        DeclareLaunchArgument("output_dir", default_value="runs/reach", description="relative to the working dir"),
        DeclareLaunchArgument("part", default_value="all", choices=list(PARTS),
                              description="all: robots and trainer here; robot: this machine's robot (sim, "
                                          "controller, TF); trainer: the trainer alone, for robots elsewhere"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="robot namespace (robots:=1): a robot host's own, or the one robot a "
                                          "trainer host serves"),
        DeclareLaunchArgument("robots", default_value="1", description="simulated robots robot1..robotN"),
        DeclareLaunchArgument("use_sim_time", default_value=str(USE_SIM_TIME).lower(),
                              description="controller and TF on the sim's clock"),
        DeclareLaunchArgument("tf", default_value="true", description="gps_tf: TF from joint_states + URDF"),
        DeclareLaunchArgument("rviz", default_value="false"),
        DeclareLaunchArgument("sim_params", default_value="", description="gps_sim parameter file ('' = config/sim.yaml)"),
        DeclareLaunchArgument("controller_params", default_value="",
                              description="gps_controller parameter file ('' = config/controller.yaml)"),
        DeclareLaunchArgument("trainer_params", default_value="",
                              description="gps_trainer parameter file ('' = config/trainer.yaml)"),
        DeclareLaunchArgument("discovery_server", default_value="",
                              description="Fast DDS discovery server(s) for these nodes, ROS_DISCOVERY_SERVER "
                                          "syntax (e.g. 10.0.0.1:11811); '' = the environment's (multicast "
                                          "discovery unless ROS_DISCOVERY_SERVER is set)"),
        SetEnvironmentVariable("ROS_DISCOVERY_SERVER", LaunchConfiguration("discovery_server"),
                               condition=UnlessCondition(EqualsSubstitution(LaunchConfiguration("discovery_server"), ""))),
        # launch escalates to SIGTERM this many seconds after Ctrl-C; nodes that save state (the trainer)
        # or join threads need more than launch's 5 s default on a loaded machine.
        DeclareLaunchArgument("sigterm_timeout", default_value="30"),
        OpaqueFunction(function=_nodes),
        Node(package="rviz2", executable="rviz2", arguments=["-d", str(root / "rviz" / "gps.rviz")],
             parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
