"""Robots on other machines (issue 25): the stack across a real network, as a user runs it.

Network namespaces on one machine stand for the hosts (tests/netns.py): a trainer host and robot hosts
on one bridge, each with its own address and loopback, DDS discovery over the subnet
(ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET, this session's ROS_DOMAIN_ID), data over UDP on the link. On
each robot host `ros2 launch launch/sim.launch.py part:=robot namespace:=robotN` (sim, controller, TF);
on the trainer host `part:=trainer robots:=N` alone; `ros2 service call` on the trainer host starts an
iteration. Rollouts carry camera images (64x64; horizon 20, 2 conditions x 2 samples: small, so an
iteration takes well under a minute on 2 busy cores).

Discovery: multicast, or a Fast DDS discovery server on the trainer host with multicast made
impossible (no multicast route anywhere). The install path without `ros2 launch`: `gps up --part ...`. Link faults: a 20 Mbit/s limit, a robot's cable pulled for
10 s mid-iteration, a robot that joins after the iteration was started, a robot that stays gone.

Needs root (`ip netns`) and the ros2-tools kit; skipped with the reason otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import time

import pytest

from gps_trainer.sim_sampler import EVAL_SAMPLE_INDEX
from gps_trainer.storage import RolloutStore
from tests import netns
from tests.network_stack import ITERATION_DONE, ITERATION_FAILED, Sizes, Stack
from tests.ros2_cli import ROOT, require_ros2

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SIZES = Sizes(conditions=2, samples=2, horizon=20, image=64)
CONDITIONS, SAMPLES, HORIZON, IMAGE = SIZES.conditions, SIZES.samples, SIZES.horizon, SIZES.image


@pytest.fixture
def lab(ros_env):
    require_ros2()
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    net = netns.Network()
    stacks: list[Stack] = []
    try:
        yield lambda tmp_path, sizes=SIZES, **kw: stacks.append(Stack(net, tmp_path, ros_env, sizes=sizes, **kw)) or stacks[-1]
    finally:
        for stack in stacks:
            stack.close()
        net.close()


def assert_iteration_complete(stack: Stack, every_robot: bool = True) -> tuple[dict, dict[str, int]]:
    """Status: one iteration, every expected rollout received; each trial's rollout stored exactly once,
    the samples with their images; the rollouts came from every robot (``every_robot``; else from some
    of them) and each robot sent at least its rollouts' image bytes over its link."""
    status = stack.status()
    assert status["phase"] == "idle" and status["iterations_completed"] == 1, status
    assert status["rollouts_received"] == status["rollouts_expected"] == CONDITIONS * (SAMPLES + 1), status
    rollouts = stack.rollouts()
    samples = [r for r in rollouts if r.sample_index != EVAL_SAMPLE_INDEX]
    assert sorted((r.condition, r.sample_index) for r in samples) == [
        (m, i) for m in range(CONDITIONS) for i in range(SAMPLES)]
    assert len(rollouts) == CONDITIONS * (SAMPLES + 1)  # the samples and one noise-free evaluation each
    by_robot: dict[str, int] = {}
    for r in rollouts:
        assert not r.aborted and r.horizon == HORIZON + 1
        if r.sample_index != EVAL_SAMPLE_INDEX:  # the trainer asks for images on its samples (the evaluation of a linear-Gaussian
            # controller needs none)
            assert r.images is not None and r.images.shape == (HORIZON + 1, IMAGE, IMAGE, 3)
            by_robot[r.robot_namespace] = by_robot.get(r.robot_namespace, 0) + r.images.nbytes
    names = {host.name for host in stack.robots}
    assert {r.robot_namespace for r in rollouts} <= names
    assert set(by_robot) == names if every_robot else set(by_robot) <= names, by_robot
    for host in stack.robots:
        if host.name not in by_robot:
            continue
        _rx, tx = host.counters()
        assert tx >= by_robot[host.name], (host.name, tx, by_robot[host.name])
    return status, by_robot


def test_two_robot_hosts_train_over_multicast_discovery(lab, tmp_path, ros_env):
    stack = lab(tmp_path)
    stack.start_all()
    stack.start_iteration()
    stack.wait_for_trainer(ITERATION_DONE, 240)
    assert_iteration_complete(stack)
    # Nothing of the stack is on the machine's own loopback: a node there (localhost discovery, same
    # domain) sees none of it.
    host_view = subprocess.run(["ros2", "node", "list", "--no-daemon", "--spin-time", "3"], env=ros_env,
                               capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "gps_" not in host_view.stdout, host_view.stdout
    stack.stop()


def test_gps_up_parts_on_separate_hosts(lab, tmp_path):
    """The install path without `ros2 launch`: `gps up --part robot` on each robot host, `gps up --part
    trainer` on the trainer host, `gps train` there, `gps down` everywhere."""
    stack = lab(tmp_path)
    for host in stack.robots:
        out = stack.gps(host, "--output-dir", str(tmp_path / host.name), "up", "--part", "robot", "--namespace",
                        host.name, "--experiment", str(stack.experiment))
        assert "up: 3 processes" in out, out
    out = stack.gps(stack.trainer, "--output-dir", str(stack.out), "up", "--part", "trainer", "--robots", "2",
                    "--experiment", str(stack.experiment), "--trainer-params", str(stack.trainer_params))
    assert "up: 1 processes (trainer)" in out, out
    result = json.loads(stack.gps(stack.trainer, "--output-dir", str(stack.out), "train", "--iterations", "1")
                        .strip().splitlines()[-1])
    assert result["iterations_completed"] == 1, result
    assert_iteration_complete(stack)
    for host, out_dir in [(stack.trainer, stack.out)] + [(h, tmp_path / h.name) for h in stack.robots]:
        assert "down: stopped" in stack.gps(host, "--output-dir", str(out_dir), "down")


def test_discovery_server_without_multicast(lab, tmp_path):
    stack = lab(tmp_path, discovery_server=True)
    stack.start_all()
    stack.start_iteration()
    stack.wait_for_trainer(ITERATION_DONE, 240)
    assert_iteration_complete(stack)
    stack.stop()


# ---------------------------------------------------------------------------- faults on the link


def test_links_limited_to_20_mbit(lab, tmp_path):
    """A busy lab Wi-Fi: 20 Mbit/s each way on every robot's link; the rollouts go through the limiter."""
    stack = lab(tmp_path)
    for host in stack.robots:
        host.limit_rate("20mbit")
    stack.start_all()
    stack.start_iteration()
    stack.wait_for_trainer(ITERATION_DONE, 240)
    _status, image_bytes = assert_iteration_complete(stack)
    for host in stack.robots:
        assert host.shaped_bytes() >= image_bytes[host.name], (host.name, host.shaped_bytes(), image_bytes)
    stack.stop()


def test_robot_link_down_for_10_s_mid_iteration(lab, tmp_path):
    """robot2's cable pulled for 10 s while the iteration runs, then plugged back. Whatever robot2 was
    doing, nothing is lost and nothing is stored twice, and the trainer either asked again or waited
    for what it had been promised:
    - a trial in flight whose robot went silent fails after service_wait_s and runs again (on whichever
      robot is free); what robot2 finished meanwhile arrives late and is refused unless it answers a trial
      still outstanding from robot2;
    - a trial robot2 had answered before the cut but whose rollout was still on the wire: the rollout
      arrives once the link is back (DDS repairs it) and answers the trial;
    - a push in flight waits for the link (up to robot_failure_limit x service_wait_s = 5 x 4 s here).
    In every case robot2 delivers rollouts after the link is back, or the trainer logged the re-ask."""
    stack = lab(tmp_path, service_wait_s=4.0, robot_failure_limit=5)
    stack.start_all()
    stack.start_iteration()
    stack.wait_for_trainer(r"iteration 0: sampling", 120)
    robot2 = stack.robots[1]
    robot2.link(up=False)
    time.sleep(10.0)
    robot2.link(up=True)
    link_back_ns = time.time_ns()
    stack.wait_for_trainer(ITERATION_DONE, 240)
    # robot1 may have run every sample while robot2 was away: the iteration needs them, not both robots.
    assert_iteration_complete(stack, every_robot=False)
    log = stack.launches["trainer"].text()
    asked_again = re.search(r"trial \(0, \d, \d+, 'linear_gaussian'\) on robot2 failed: no answer", log)
    late = [r for r in RolloutStore(stack.out, fsync=False).records(0)
            if r.robot_namespace == "robot2" and r.log_time > link_back_ns]
    assert asked_again or late, log[-4000:]
    stack.stop()


def test_robot_that_joins_late(lab, tmp_path):
    """robot2 starts only after the iteration was asked for: the trainer waits for it (up to
    robot_failure_limit x service_wait_s, the budget of a robot that goes silent mid-phase; a robot host's
    start takes longer than one service_wait_s here) and both robots run the iteration's trials."""
    stack = lab(tmp_path, service_wait_s=5.0, robot_failure_limit=18)
    robot1, robot2 = stack.robots
    stack.start_robot(robot1)
    stack.start_trainer()
    stack.wait_ready(robots=[robot1])
    stack.start_iteration()
    stack.start_robot(robot2)
    stack.wait_for_trainer(ITERATION_DONE, 240)
    assert_iteration_complete(stack)  # rollouts of both robots
    stack.stop()


def test_robot_that_stays_gone_fails_the_phase_naming_it(lab, tmp_path):
    """robot2's cable pulled for good mid-iteration: after robot_failure_limit trials without an answer
    (service_wait_s each) the iteration fails, and the error names robot2; the trainer still serves."""
    # 6 samples per condition: trials are left for robot2 after its first failure, whichever moment of its
    # trial the link goes down in (mid-trial: no answer; after its answer: no rollout and no probe answers)
    stack = lab(tmp_path, sizes=dataclasses.replace(SIZES, samples=6), service_wait_s=3.0, robot_failure_limit=2)
    stack.start_all()
    stack.start_iteration()
    stack.wait_for_trainer(r"iteration 0: sampling", 120)
    stack.robots[1].link(up=False)
    failed = stack.wait_for_trainer(ITERATION_FAILED, 120, failure_fails=False)
    assert "robot robot2" in failed.group(1), failed.group(0)
    status = stack.status()
    assert status["phase"] == "error" and "robot2" in status["message"], status
    stack.stop(expected_error=ITERATION_FAILED)
