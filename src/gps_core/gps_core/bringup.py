"""How the simulated GPS stack starts: the one description both `ros2 launch launch/sim.launch.py` and
`gps up` turn into processes, so the two cannot drift apart (same nodes, parameter files, time source).

Per robot namespace: gps_sim (lockstep MuJoCo arm, publishes its own clock), gps_controller and
gps_tf (TF from joint_states and the arm's URDF); one gps_trainer for every robot.

Time: each sim publishes sim time on `clock` relative to its namespace (`/clock` with one robot in the
root namespace, `/robot1/clock`, `/robot2/clock` with several), and the nodes of that robot read it
through a `/clock` remapping, so two robots' clocks can never conflict. The trainer serves many robots
and its trial timeouts must still fire when a sim stops, so it runs on the system clock.

Parts (robots on other machines, docs/networking.md): ``part="robot"`` is what runs beside a robot (its
sim, controller and TF), ``part="trainer"`` the trainer alone, ``part="all"`` both on one machine. Every
host of one stack gives the same robot namespaces: a robot host its own (``namespace``), the trainer host
all of them (``robots`` for robot1..robotN, or ``namespace`` for one).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gps_core.tasks import repo_root

USE_SIM_TIME = True  # the default of `ros2 launch` and `gps up` alike
PARTS = ("all", "robot", "trainer")


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node of the stack: what `ros2 launch` (package/executable) or `gps up` (python -m module) runs."""

    role: str  # sim | controller | tf | trainer
    package: str
    executable: str
    module: str
    name: str
    namespace: str  # "" = root namespace
    params_files: tuple[str, ...]
    overrides: dict
    remappings: tuple[tuple[str, str], ...] = ()

    def ros_args(self) -> list[str]:
        """The command-line `--ros-args` that give a process this node's name, namespace and parameters."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:=/{self.namespace}"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        for f in self.params_files:
            args += ["--params-file", f]
        for k, v in self.overrides.items():
            args += ["-p", f"{k}:={_param_text(v)}"]
        return args


def _param_text(value) -> str:
    # `-p name:=value` parses the value as YAML.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(f"'{v}'" if isinstance(v, str) else str(v) for v in value) + "]"
    return str(value)


def config_path(name: str) -> str:
    """A file under config/ (source tree or installed share/gps_trainer)."""
    return str(repo_root() / "config" / name)


def robot_namespaces(robots: int, namespace: str = "") -> list[str]:
    """robot1..robotN for several robots; the given namespace (default root) for one."""
    if robots < 1:
        raise ValueError(f"robots must be >= 1, got {robots}")
    return [f"robot{i + 1}" for i in range(robots)] if robots > 1 else [namespace.strip("/")]


def clock_topic(namespace: str) -> str:
    """The absolute clock topic of a robot's sim (its relative `clock`)."""
    return f"/{namespace}/clock" if namespace else "/clock"


def experiment_sim_shape(experiment: str, overrides=()) -> dict:
    """The robot parameters an experiment fixes: its task (conditions, scenes, EE and target points) and
    camera image size, for the sim and the controller. The robot must run the trainer's task, or the
    trainer's start states and the robot's resets disagree (a 9-position task on a 4-position robot);
    `key=value` trainer overrides win."""
    if not experiment:
        return {}
    from gps_core import safe_yaml

    path = Path(experiment)
    data = safe_yaml.load(path.read_text(), str(path))
    shape = {k: data[k] for k in ("task", "image_size") if isinstance(data, dict) and k in data}
    for item in overrides or ():
        key, sep, text = str(item).partition("=")
        if sep and key.strip() in ("task", "image_size"):
            shape[key.strip()] = safe_yaml.load_value(text, key.strip(), "trainer overrides")
    return shape


def sim_stack(robots: int = 1, namespace: str = "", experiment: str = "", output_dir: str = "",
              use_sim_time: bool = USE_SIM_TIME, sim_params: str = "", controller_params: str = "",
              trainer_params: str = "", trainer_overrides: dict | None = None, tf: bool = True,
              publish_images: bool | None = None, part: str = "all") -> list[NodeSpec]:
    """The nodes of the simulated stack, trainer last (``part``: all of it, or only the robots' nodes or
    only the trainer). Empty parameter-file arguments mean config/'s; ``publish_images`` None keeps the
    sim's parameter file's (False: no rendering, for state-only runs)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    namespaces = robot_namespaces(robots, namespace)
    sim_shape = experiment_sim_shape(experiment, (trainer_overrides or {}).get("overrides", ()))
    camera = {} if publish_images is None else {"publish_images": bool(publish_images)}
    sim_params = sim_params or config_path("sim.yaml")
    controller_params = controller_params or config_path("controller.yaml")
    trainer_params = trainer_params or config_path("trainer.yaml")
    specs = []
    for ns in namespaces:
        clock = (("/clock", clock_topic(ns)),) if ns else ()
        timing = {"use_sim_time": use_sim_time}
        specs.append(NodeSpec("sim", "gps_sim", "gps_sim", "gps_sim.sim_node", "gps_sim", ns, (sim_params,),
                              {"publish_clock": True, **sim_shape, **camera}))
        specs.append(NodeSpec("controller", "gps_controller", "gps_controller", "gps_controller.controller_node",
                              "gps_controller", ns, (controller_params,), {**timing, **sim_shape}, clock))
        if tf:
            specs.append(NodeSpec("tf", "gps_sim", "gps_tf", "gps_sim.tf_publisher", "gps_tf", ns, (),
                                  dict(timing), clock))
    if part == "robot":
        return specs
    if part == "trainer":
        specs = []
    trainer = {"controller_namespaces": namespaces, "use_sim_time": False}
    if experiment:
        trainer["experiment"] = experiment
    if output_dir:
        trainer["output_dir"] = output_dir
    trainer.update(trainer_overrides or {})
    specs.append(NodeSpec("trainer", "gps_trainer", "gps_trainer", "gps_trainer.trainer_node", "gps_trainer", "",
                          (trainer_params,), trainer))
    return specs
