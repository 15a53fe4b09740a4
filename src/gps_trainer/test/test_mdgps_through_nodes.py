"""MDGPS (and BADMM) through the real nodes: gps_sim (lockstep) + gps_controller + gps_trainer as separate
processes over real DDS, started by `gps up`. One iteration with a small MLP policy on the robot configuration o:
the trainer samples the local controllers, runs the C- and S-steps, pushes the controllers and the
policy weights (the controller accepts them), evaluates the policy alone through the controller
(run_trial policy_type "neural", no noise) and checkpoints the policy as safetensors.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml

from gps_msgs.srv import GetStatus, StartIteration
from testing_helpers import (
    call_service,
    pid_alive,
    stack_pids,
    stop_stack,
    trainer_params_file,
    wait_for_iterations,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]
SAMPLES = 2
CONDITIONS = 4


def _experiment(tmp_path: Path, algorithm: str) -> Path:
    """reach_<algorithm>.yaml with an MLP on o (what the controller feeds a neural policy), a tiny S-step."""
    raw = yaml.safe_load((ROOT / "config" / "experiments" / f"reach_{algorithm}.yaml").read_text())
    alg = raw["algorithm"]
    if algorithm == "badmm":
        alg["inner_iterations"] = 2
    alg["policy_obs"] = "observation"
    alg["policy"]["net"] = {"hidden": [32]}
    alg["dynamics"]["prior"]["max_clusters"] = 2
    alg["policy_prior"].update(max_clusters=2, max_samples=4)
    alg["policy_opt"].update(iterations=60, device="cpu")
    path = tmp_path / f"{algorithm}_mlp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _train_through_nodes(tmp_path: Path, ros_env: dict, experiment: Path, out: Path, iterations: int) -> dict:
    """`gps up` with ``experiment``, ``iterations`` started by the service, the stack stopped (every node
    gone); the trainer's last status."""
    pids: list[int] = []
    rclpy.init()
    node = rclpy.create_node("mdgps_test_client")
    try:
        up = subprocess.run([sys.executable, "-m", "gps_trainer.cli", "--output-dir", str(out), "up",
                             "--experiment", str(experiment),
                             "--trainer-params", str(trainer_params_file(
                                 tmp_path, overrides=[f"samples_per_condition={SAMPLES}"], fsync=False,
                                 trial_timeout_s=60.0, service_wait_s=30.0))],
                            cwd=ROOT, env=ros_env, capture_output=True, text=True, timeout=60)
        pids = stack_pids(out)
        assert up.returncode == 0, up.stderr
        assert len(pids) >= 3  # sim, controller, trainer (+ TF publisher)
        start = node.create_client(StartIteration, "/gps_trainer/start_iteration")
        res = call_service(node, start, StartIteration.Request(iterations=iterations), timeout=90.0)
        assert res.accepted, res.message
        status = wait_for_iterations(node, node.create_client(GetStatus, "/gps_trainer/get_status"), iterations,
                                     180.0 * iterations, pids)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        stop_stack(ros_env, out, pids)
    assert not any(pid_alive(p) for p in pids)
    return status


@pytest.mark.parametrize("algorithm", ["mdgps", "badmm"])
def test_one_gps_iteration_through_nodes_pushes_and_evaluates_the_policy(tmp_path, ros_env, algorithm):
    from gps_controller.policies.serialization import load_policy
    from gps_trainer.storage import CheckpointStore, RolloutStore

    out = tmp_path / "out"
    st = _train_through_nodes(tmp_path, ros_env, _experiment(tmp_path, algorithm), out, iterations=1)

    # Status: the algorithm's; the policy's own cost and success come from the evaluation.
    assert st["algorithm"] == algorithm
    assert np.isfinite(st["policy_cost"]) and st["policy_cost"] > 0
    assert 0.0 <= st["success_rate"] <= 1.0
    assert np.isfinite(st["policy_loss"])
    assert st["rollouts_expected"] == CONDITIONS * SAMPLES + CONDITIONS

    # The controller accepted the pushed weights (it logs nothing on success; a rejection fails the
    # trainer's iteration), and ran the policy alone: one noiseless neural rollout per condition.
    with RolloutStore(out, fsync=False) as store:
        neural = store.load(0, "neural")
        samples = store.load(0, "linear_gaussian")
    assert len(samples) == CONDITIONS * SAMPLES
    assert sorted(r.condition for r in neural) == list(range(CONDITIONS))
    assert all(np.all(r.noise == 0) for r in neural)
    # T + 1 steps: the success rule reads x_T, the state after the T-th action
    assert all(r.states.shape == (101, 32) and np.all(np.isfinite(r.actions)) for r in neural)
    ctrl_log = (out / "logs" / "controller.log").read_text()
    assert "set_policy_weights rejected" not in ctrl_log
    assert ctrl_log.count(", neural,") >= CONDITIONS

    # The checkpoint holds the policy (safetensors, valid SHA) and the metrics row the policy terms.
    ckpt = CheckpointStore(out).latest()
    assert ckpt is not None and ckpt.iteration == 0
    assert (ckpt.path / "policy.safetensors").exists()
    policy = load_policy(ckpt.policy_path)  # the one policy file format: `gps eval --policy` takes it
    assert policy.obs_dim == 32 and policy.action_dim == 7 and not policy.uses_images
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["policy_cost"] == pytest.approx(st["policy_cost"])
    assert row["evaluated"] == "global_policy" and row["success_rate"] == pytest.approx(st["success_rate"])
    assert len(row["policy_cost_per_condition"]) == CONDITIONS
    assert row["evaluation_s"] > 0 and row["s_step_s"] > 0
    # The neural rollouts' torques are the pushed policy's mean actions at their observations, clamped
    # to the effort limits, except components the joint-limit guard zeroed (a joint at its limit).
    lim = np.array([30.0, 30.0, 30.0, 30.0, 30.0, 10.0, 10.0])
    # predict runs the rollout's observations as one batch (other kernels than the controller's one
    # observation per tick, in another process): equal to float32 rounding, about 1e-6 relative per op
    # chain of this MLP on torques of at most 30 N m, so 1e-4 absolute (+ isclose's 1e-5 relative) holds
    # with margin while another policy's torques differ by orders of magnitude more.
    for r in neural:
        mean, _ = policy.predict(r.observations)
        same = np.isclose(r.actions, np.clip(mean, -lim, lim), atol=1e-4)
        assert np.all(r.actions[~same] == 0.0), "torques differ from the policy's beyond the joint-limit guard"
        assert same.mean() > 0.9, f"only {same.mean():.0%} of the torques are the policy's"


def test_on_policy_mdgps_samples_the_pushed_policy_with_its_noise_through_the_controller(tmp_path, ros_env):
    """``sample_on_policy`` through the nodes: iteration 1 samples the policy that iteration 0 trained, on the
    controller (run_trial "neural" with noise), and the trainer learns from those rollouts."""
    from gps_controller.policies.serialization import load_policy
    from gps_trainer.storage import CheckpointStore, RolloutStore

    experiment = _experiment(tmp_path, "mdgps")
    raw = yaml.safe_load(experiment.read_text())
    raw["algorithm"]["sample_on_policy"] = True
    experiment.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    _train_through_nodes(tmp_path, ros_env, experiment, out, iterations=2)

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["sampled"] for r in rows] == ["local_controllers", "global_policy"]
    with RolloutStore(out, fsync=False) as store:
        assert len(store.load(1, "linear_gaussian")) == 0
        on_policy = [r for r in store.load(1, "neural") if r.sample_index < SAMPLES]
    assert sorted((r.condition, r.sample_index) for r in on_policy) == \
        [(m, i) for m in range(CONDITIONS) for i in range(SAMPLES)]
    # the policy iteration 0 trained (its checkpoint) acted, with its own variance on the seeded noise
    policy = load_policy(CheckpointStore(out).path(0) / "policy.safetensors")
    std = np.sqrt(policy.variance())
    lim = np.array([30.0, 30.0, 30.0, 30.0, 30.0, 10.0, 10.0])
    for r in on_policy:
        assert np.all(np.std(r.noise, axis=0) > 0.5)  # standard-normal draws, not zeros
        mean, _ = policy.predict(r.observations)
        # float32 batch vs one observation per tick: 1e-4 N m, as in the test above
        same = np.isclose(r.actions, np.clip(mean + std * r.noise, -lim, lim), atol=1e-4)
        assert np.all(r.actions[~same] == 0.0) and same.mean() > 0.9
