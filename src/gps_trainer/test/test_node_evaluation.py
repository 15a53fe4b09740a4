"""`gps eval --through-nodes` (gps_trainer.paper.node_evaluation).

Without ROS: success and final distance computed from a Rollout state x agree with ArmSim's own
tests (reach: mean EE-point distance; shape sorting: tip inside the hole, which needs the target pose).
Through the nodes (`gps up`: lockstep gps_sim + gps_controller + trainer as processes over DDS): an
untrained MLP on o gives the same success flags and final distances as the simulation-API evaluation
for the same conditions and seed, on the train set and (after switching the controller's
condition_set parameter) the spatial test set.
"""

import json

import mujoco
import numpy as np
import pytest

from gps_core.layout import mean_ee_distance as final_distance_from_state
from gps_core.tasks import task_success as success_from_state
from gps_sim import ArmSim


def _random_configs(sim: ArmSim, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lo, hi = sim.joint_limits[:7, 0], sim.joint_limits[:7, 1]
    lo = np.where(sim.joint_limited[:7], lo, -np.pi)
    hi = np.where(sim.joint_limited[:7], hi, np.pi)
    return [rng.uniform(lo, hi) for _ in range(n)]


def test_reach_success_and_distance_from_the_state_match_the_simulator():
    sim = ArmSim("reach")
    try:
        hits = 0
        for m in range(sim.num_conditions("train")):
            sim.reset(m)
            q0 = sim.joint_positions()
            for k, q in enumerate([q0] + _random_configs(sim, 20, m)):
                sim.set_joint_state(q, np.full(7, 0.1 * k))
                x = sim.state()  # both distances float64 from the same points: rounding only
                assert final_distance_from_state(x) == pytest.approx(sim.mean_distance(), abs=1e-12)
                assert success_from_state(sim.task, x, sim.target_pose()) == sim.is_success()
            # The target moved onto the EE points: a success (the tolerance test, not a constant).
            pose = sim.target_pose()
            pose[:3] += sim.ee_points()[0] - sim.target_points()[0]
            sim.set_target_pose(pose)
            x = sim.state()
            hits += success_from_state(sim.task, x, pose)
            assert success_from_state(sim.task, x, pose) == sim.is_success()
        assert hits > 0
    finally:
        sim.close()


def test_shape_sorting_inside_hole_from_the_state_matches_the_simulator():
    sim = ArmSim("shape_sorting")
    try:
        assert sim.task.success_type == "inside_hole"
        p = sim.task.scene_params
        half, hole = float(p.get("cube_half_size", 0.06)), float(p.get("hole_half_width", 0.028))
        sim.reset(0)
        outcomes = []
        for q in _random_configs(sim, 15, 7):
            sim.set_joint_state(q)
            tip_world = sim.ee_points()[0]
            pose = sim.target_pose()
            rot = np.zeros(9)
            mujoco.mju_quat2Mat(rot, pose[3:])
            rot = rot.reshape(3, 3)
            # Inside; outside in x; outside in y; in the footprint but only 5 mm deep (wedged on the rim).
            for offset in ([0.3 * hole, -0.5 * hole, half - 0.03], [hole + 0.002, 0.0, half - 0.03],
                           [0.0, -hole - 0.002, half - 0.03], [0.0, 0.0, half - 0.005]):
                pose[:3] = tip_world - rot @ np.asarray(offset)
                sim.set_target_pose(pose)
                x = sim.state()
                got = success_from_state(sim.task, x, sim.target_pose())
                assert got == sim.is_success(), (offset, got)
                outcomes.append(got)
        assert any(outcomes) and not all(outcomes)
    finally:
        sim.close()


@pytest.mark.ros
@pytest.mark.slow
def test_eval_through_nodes_matches_the_simulation_api(tmp_path, ros_env, monkeypatch):
    """Same conditions, same reset seeds, same policy: lockstep nodes and the in-process simulator agree.

    Lockstep makes the node path the same computation as the in-process one: the same float64 joint
    state reaches the policy (DDS carries float64 exactly; the controller's FK uses the same MJCF), the
    float32 forward pass is the same on the same weights (one observation per tick in both, fp32, and
    this process runs the controller's torch thread count: the same kernels in the same order), gps_sim
    steps MuJoCo with the same torque, and the controller's safety layer (effort clamp + joint-limit guard) is what
    ``evaluate_policy(joint_limit_margin=0.05)`` applies. So flags and distances are asserted equal
    exactly. Without the guard the simulation API differs for this policy, which pushes joints into
    their limits (measured: 94 of 700 torque components zeroed per trial; distances off by 3-20 cm)."""
    for k, v in ros_env.items():  # this process's rclpy client uses the test session's domain
        monkeypatch.setenv(k, v)
    import torch
    import yaml

    from testing_helpers import ROOT

    ctrl = yaml.safe_load((ROOT / "config" / "controller.yaml").read_text())["/**/gps_controller"]["ros__parameters"]
    assert ctrl["precision"] == "fp32", "the exact comparison below needs the controller's fp32 inference"
    threads = torch.get_num_threads()
    torch.set_num_threads(ctrl["torch_threads"])  # the controller's kernels (`gps up` passes controller.yaml)
    try:
        _eval_through_nodes(tmp_path, ros_env)
    finally:
        torch.set_num_threads(threads)


def _eval_through_nodes(tmp_path, ros_env):
    from gps_controller.policies.neural import make_policy
    from gps_controller.policies.serialization import save_policy
    from gps_trainer.paper.evaluation import evaluate_policy
    from gps_trainer.paper.node_evaluation import evaluate_policy_through_nodes
    from testing_helpers import gps_cli, pid_alive, stack_pids, stop_stack, trainer_params_file

    policy = make_policy({"type": "mlp", "init_var": 0.1, "net": {"hidden": [16]}}, 32, 7, seed=3).eval()
    with __import__("torch").no_grad():  # larger outputs than the init's: the arm moves a lot in 100 steps
        for prm in policy.parameters():
            prm.mul_(4.0)
    sets, trials, seed = ("train", "spatial_test"), 4, 11
    # The simulation API with the controller's joint-limit guard (config/controller.yaml: 0.05 rad), and
    # without it (effort clamp only, the default).
    api = evaluate_policy(policy, "reach", sets, trials, seed, policy_obs="observation", joint_limit_margin=0.05)
    clamp_only = evaluate_policy(policy, "reach", sets, trials, seed, policy_obs="observation")

    out = tmp_path / "out"
    pids: list[int] = []
    try:
        up = gps_cli(ros_env, out, "up", "--trainer-params",
                     str(trainer_params_file(tmp_path, fsync=False, service_wait_s=30.0)))
        pids = stack_pids(out)
        assert up.returncode == 0, up.stderr
        nodes = evaluate_policy_through_nodes(policy, "reach", sets, trials, seed, policy_obs="observation",
                                              timeout=60.0)
        # The controller validates condition_set (a set the task has) and keeps its value on a refusal.
        from gps_trainer.paper.node_evaluation import _ControllerClient

        cli = _ControllerClient("", 30.0)
        try:
            for bad in ("bogus", ""):
                with pytest.raises(RuntimeError, match="refused condition_set"):
                    cli.set_condition_set(bad)
            assert cli.get_parameters(["condition_set"]) == {"condition_set": "train"}
        finally:
            cli.close()
        # The CLI path on the same stack (saved policy, JSON written): the train set and an out-of-distribution
        # family (issue 24: the controller takes the set, gps_sim's reset applies it).
        path = tmp_path / "policy.safetensors"
        save_policy(policy, path)
        ev = gps_cli(ros_env, out, "--timeout", "60", "eval", "--policy", str(path), "--sets", "train",
                     "ood_camera_2_validation",
                     "--trials", str(trials), "--seed", str(seed), "--policy-obs", "observation",
                     "--through-nodes", "--out", str(tmp_path / "eval.json"), timeout=170)
        assert ev.returncode == 0, ev.stderr
        for pid in pids:
            assert pid_alive(pid), f"process {pid} died; logs in {out / 'logs'}"
    finally:
        stop_stack(ros_env, out, pids)
    assert not any(pid_alive(p) for p in pids)

    assert nodes.horizon == api.horizon == 100 and list(nodes.sets) == list(sets)
    assert nodes.joint_limit_margin == api.joint_limit_margin == 0.05
    for cset in sets:
        a, n = api.sets[cset], nodes.sets[cset]
        assert n.conditions == a.conditions and n.reset_seeds == a.reset_seeds
        assert n.initial_target_positions == a.initial_target_positions
        assert n.success == a.success and n.successes == a.successes
        assert n.final_distance == a.final_distance  # exact (see the docstring)
        # The guard matters here: the clamp-only evaluation ends elsewhere.
        assert np.min(np.abs(np.subtract(clamp_only.sets[cset].final_distance, n.final_distance))) > 1e-3
    # The trials are not all alike (the test would otherwise compare little).
    # (spatial_test has fewer conditions than trials; the seed only moves visual-test distractors.)
    assert len({round(d, 6) for d in api.sets["train"].final_distance}) == trials
    assert set(api.sets["spatial_test"].conditions) == set(range(len(set(api.sets["spatial_test"].conditions))))
    assert len(set(api.sets["spatial_test"].conditions)) >= 2
    assert max(api.sets["train"].final_distance) - min(api.sets["train"].final_distance) > 1e-3
    # The controller's condition_set was restored to its configured value.
    ctrl_log = (out / "logs" / "controller.log").read_text()
    assert "'condition_set': 'spatial_test'" in ctrl_log and ctrl_log.count("'condition_set': 'train'") >= 1

    cli_res = json.loads((tmp_path / "eval.json").read_text())
    assert cli_res["through_nodes"] is True
    assert cli_res["sets"]["train"]["success"] == api.sets["train"].success
    assert cli_res["sets"]["train"]["final_distance"] == api.sets["train"].final_distance
    assert cli_res["joint_limit_margin"] == 0.05
    ood = evaluate_policy(policy, "reach", ("train", "ood_camera_2_validation"), trials, seed, policy_obs="observation",
                          joint_limit_margin=0.05).sets["ood_camera_2_validation"]
    assert cli_res["sets"]["ood_camera_2_validation"]["reset_seeds"] == ood.reset_seeds
    assert cli_res["sets"]["ood_camera_2_validation"]["final_distance"] == ood.final_distance
