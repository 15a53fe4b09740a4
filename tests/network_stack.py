"""The GPS stack across a network of namespaces (tests/netns.py): a trainer host and robot hosts, each
running its part of launch/sim.launch.py with `ros2 launch`, as users run it on separate machines.
Shared by tests/test_network_namespaces.py and benchmarks/network.py."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests import netns
from tests.ros2_cli import ROOT, Launch, assert_clean_shutdown

DISCOVERY_PORT = 11811
ITERATION_DONE = r"iteration 0: sample cost"
ITERATION_FAILED = r"iteration \d+ failed: (.*)"


@dataclass(frozen=True)
class Sizes:
    """The experiment's size: reach_traj_opt with these conditions, samples, horizon and image size."""

    conditions: int = 2
    samples: int = 2
    horizon: int = 20
    image: int = 64


def experiment(tmp_path: Path, sizes: Sizes) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "experiments" / "reach_traj_opt.yaml").read_text())
    cfg.update(conditions=sizes.conditions, samples_per_condition=sizes.samples, horizon=sizes.horizon,
               image_size=sizes.image)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def trainer_params(tmp_path: Path, **values) -> Path:
    """config/trainer.yaml with images recorded and ``values`` changed."""
    cfg = yaml.safe_load((ROOT / "config" / "trainer.yaml").read_text())
    cfg["gps_trainer"]["ros__parameters"].update(record_images=True, fsync=False, **values)
    path = tmp_path / "trainer.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Stack:
    """A trainer host and robot hosts on the lab network, each with its `ros2 launch`."""

    def __init__(self, net: netns.Network, tmp_path: Path, env: dict, robots: int = 2,
                 discovery_server: bool = False, sizes: Sizes = Sizes(), **trainer_values):
        self.tmp, self.base_env, self.sizes = tmp_path, env, sizes
        self.trainer = net.add_host("trainer")
        self.robots = [net.add_host(f"robot{i + 1}") for i in range(robots)]
        self.out = tmp_path / "out"
        self.server = f"{self.trainer.address}:{DISCOVERY_PORT}" if discovery_server else ""
        self.experiment = experiment(tmp_path, sizes)
        self.args = [f"experiment:={self.experiment}"] + ([f"discovery_server:={self.server}"]
                                                              if self.server else [])
        self.trainer_params = trainer_params(tmp_path, **trainer_values)
        self.launches: dict[str, Launch] = {}
        if self.server:
            for host in net.hosts.values():  # multicast cannot leave any host: discovery needs the server
                subprocess.run(["ip", "-n", host.netns, "route", "del", "224.0.0.0/4"], check=True, timeout=30)
            log = open(tmp_path / "discovery_server.log", "w")
            self.trainer.popen(["bash", str(ROOT / "scripts" / "discovery_server.sh"), self.trainer.address,
                                str(DISCOVERY_PORT)], env, stdout=log, stderr=subprocess.STDOUT)

    def env(self, host: netns.Host) -> dict:
        """What a user's shell on ``host`` has: the domain, subnet discovery (and the server, if any)."""
        env = host.env(self.base_env)
        if self.server:
            env["ROS_DISCOVERY_SERVER"] = self.server
        return env

    def launch(self, host: netns.Host, args: list[str]) -> Launch:
        # The launch process itself gets no ROS_DISCOVERY_SERVER: the nodes get it from discovery_server:=.
        env = host.env(self.base_env)
        self.launches[host.name] = Launch(["launch/sim.launch.py", *self.args, *args], env,
                                          self.tmp / f"{host.name}.log", prefix=host.command([]))
        return self.launches[host.name]

    def start_robot(self, host: netns.Host) -> Launch:
        return self.launch(host, ["part:=robot", f"namespace:={host.name}"])

    def start_trainer(self) -> Launch:
        # robots:=N serves robot1..robotN; one robot is named by its namespace
        serves = f"robots:={len(self.robots)}" if len(self.robots) > 1 else f"namespace:={self.robots[0].name}"
        return self.launch(self.trainer, ["part:=trainer", serves, f"output_dir:={self.out}",
                                          f"trainer_params:={self.trainer_params}"])

    def start_all(self) -> None:
        for host in self.robots:
            self.start_robot(host)
        self.start_trainer()
        self.wait_ready()

    def wait_ready(self, robots: list[netns.Host] | None = None) -> None:
        self.launches["trainer"].wait_for(r"trainer ready", 120)
        for host in robots or self.robots:
            self.launches[host.name].wait_for(r"gps_controller\]: ready", 120)

    def gps(self, host: netns.Host, *args: str, timeout: float = 300.0) -> str:
        """The `gps` command (the install path without `ros2 launch`) in a shell on ``host``."""
        r = host.run([sys.executable, "-m", "gps_trainer.cli", *args], self.env(host), timeout=timeout, cwd=ROOT)
        assert r.returncode == 0, f"gps {' '.join(args)} on {host.name} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def ros2(self, *args: str, timeout: float = 90.0, retry_s: float = 60.0) -> str:
        """`ros2 <args>` in a shell on the trainer host (retried while discovery fills in)."""
        deadline = time.monotonic() + retry_s
        while True:
            r = self.trainer.run(["ros2", *args], self.env(self.trainer), timeout=timeout, cwd=ROOT)
            if r.returncode == 0:
                return r.stdout
            if time.monotonic() > deadline:
                raise AssertionError(f"ros2 {' '.join(args)} on the trainer host -> {r.returncode}\n{r.stdout}\n{r.stderr}")
            time.sleep(1.0)

    def start_iteration(self) -> None:
        out = self.ros2("service", "call", "/gps_trainer/start_iteration", "gps_msgs/srv/StartIteration",
                        "{iterations: 1}")
        assert "accepted=True" in out, out

    def status(self) -> dict:
        out = self.ros2("topic", "echo", "--once", "--no-daemon", "/gps/status", "gps_msgs/msg/TrainerStatus")
        return yaml.safe_load(out.split("\n---")[0])

    def wait_for_trainer(self, pattern: str, timeout: float, failure_fails: bool = True) -> re.Match:
        """The trainer's log matches ``pattern``; an iteration that fails first fails the test with its reason
        (``failure_fails``)."""
        launch = self.launches["trainer"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = launch.text()
            found = re.search(pattern, text)
            if found:
                return found
            failed = re.search(ITERATION_FAILED, text)
            if failed and failure_fails:
                raise AssertionError(f"the iteration failed: {failed.group(1)}\n{text[-4000:]}")
            assert launch.proc.poll() is None, f"the trainer's launch exited:\n{text[-4000:]}"
            time.sleep(0.5)
        raise AssertionError(f"no {pattern!r} in the trainer's log within {timeout:g} s:\n{launch.text()[-4000:]}")

    def stop(self, expected_error: str = "", check: bool = True) -> None:
        """Ctrl-C on every host; with ``check``, each launch ends cleanly (3 robot processes, 1 trainer),
        its only error line the trainer's ``expected_error`` line, if given."""
        for name, launch in self.launches.items():
            rc = launch.interrupt()
            if not check:
                continue
            text = launch.text()
            if name == "trainer" and expected_error:
                text = "\n".join(line for line in text.splitlines() if not re.search(expected_error, line))
            assert_clean_shutdown(rc, text, processes=1 if name == "trainer" else 3)

    def close(self) -> None:
        for launch in self.launches.values():
            launch.close()

    def rollouts(self) -> list:
        from gps_trainer.storage import RolloutStore

        return RolloutStore(self.out, fsync=False).load(0)
