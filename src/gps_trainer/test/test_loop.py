"""The GPS loop on the simulator's Python API (no ROS): resume at the next iteration with nothing
recorded lost, the run directory's files, the refusals, starting from an earlier phase, and the trial
rules the node sampler shares (seeds, T + 1 steps, extended controllers, what a Rollout must be)."""

import json

import numpy as np
import pytest
import torch

from gps_controller.conversions import RolloutData
from gps_controller.policies.serialization import load_policy
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_core.tasks import repo_root, task_success
from gps_trainer.config import load_experiment
from gps_trainer.node_sampler import Trial, TrialBook
from gps_trainer.procedure import train_in_simulation
from gps_trainer.run_dir import load_controllers, policy_file, save_controllers
from gps_trainer.sim_sampler import SimSampler, extend_controller, trial_seed

EXP = repo_root() / "config" / "experiments"
TINY = {"conditions": 2, "samples_per_condition": 2, "horizon": 8,
        "algorithm.dynamics.prior.max_clusters": 2, "algorithm.policy_prior.max_clusters": 2,
        "algorithm.policy_opt.iterations": 5, "algorithm.policy_opt.device": "cpu"}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _same(a, b) -> bool:
    """Rows equal as recorded (JSON; NaN equal to NaN)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _cfg(iterations, name="reach_mdgps.yaml", **extra):
    tiny = dict(TINY)
    if name.endswith("traj_opt.yaml"):
        tiny = {k: v for k, v in tiny.items() if not k.startswith("algorithm.policy")}
    return load_experiment(EXP / name, {**tiny, "iterations": iterations, **extra})


def test_resumed_run_continues_where_it_stopped(tmp_path):
    straight = train_in_simulation(_cfg(2), tmp_path / "straight").rows
    first = train_in_simulation(_cfg(1), tmp_path / "resumed").rows
    run = train_in_simulation(_cfg(2), tmp_path / "resumed")  # same folder, one more iteration
    assert len(run.rows) == 2 and _same(run.rows[0], first[0])
    assert run.rows[1]["iteration"] == 1 and run.algorithm.iteration_count == 2
    # Iteration 1 samples the restored controllers with per-trial seeds: the same rollouts, the same costs
    # (by construction: the controllers round-trip exactly in float64 npz, one process, one thread count).
    np.testing.assert_allclose(run.rows[1]["cost_per_condition"], straight[1]["cost_per_condition"], rtol=1e-12)
    # A finished run is not rerun.
    again = train_in_simulation(_cfg(2), tmp_path / "resumed")
    assert [r["iteration"] for r in again.rows] == [0, 1] and _same(again.rows[1], run.rows[1])


def test_the_checkpoint_decides_how_many_iterations_count(tmp_path):
    """A stop between the metrics line and the checkpoint: the unconfirmed row is done again."""
    train_in_simulation(_cfg(1), tmp_path)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"iteration": 1, "cost_per_condition": [0.0, 0.0]}) + "\n")
    rows = train_in_simulation(_cfg(2), tmp_path).rows
    assert len(rows) == 2 and rows[1]["cost_per_condition"] != [0.0, 0.0]


def test_another_configuration_is_refused_and_a_restart_replaces_it(tmp_path):
    train_in_simulation(_cfg(1), tmp_path)
    with pytest.raises(ValueError, match="another configuration"):
        train_in_simulation(_cfg(2, seed=5), tmp_path)
    rows = train_in_simulation(_cfg(1, seed=5), tmp_path, resume=False).rows  # explicit fresh start
    assert len(rows) == 1 and len(list((tmp_path / "checkpoints").iterdir())) == 1


def test_a_run_from_before_a_new_key_resumes_as_a_run_of_its_default(tmp_path):
    """A key added to the configuration since a run was written (absent from its experiment.json) counts as
    its default, which keeps the behaviour from before the key: the run resumes. Any other value of that key,
    or a changed saved value, is another configuration."""
    train_in_simulation(_cfg(1), tmp_path)
    file = tmp_path / "experiment.json"
    saved = json.loads(file.read_text())
    assert saved["algorithm"].pop("cost_hessian") == "exact"  # a key added after the first runs
    file.write_text(json.dumps(saved))
    assert [r["iteration"] for r in train_in_simulation(_cfg(2), tmp_path).rows] == [0, 1]
    file.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="another configuration"):
        train_in_simulation(_cfg(3, **{"algorithm.cost_hessian": "psd"}), tmp_path)


def test_run_directory_files_and_the_one_policy_format(tmp_path):
    run = train_in_simulation(_cfg(1), tmp_path)
    row = run.rows[0]
    assert row["evaluated"] == "global_policy" and 0.0 <= row["success_rate"] <= 1.0
    assert len(row["success"]) == 2 and len(row["final_distance"]) == 2
    for key in ("sampling_s", "algorithm_s", "evaluation_s", "sample_success_rate", "policy_cost"):
        assert key in row, key
    # The latest policy, the checkpoint's policy and the run directory all load as the same policy file.
    for source in (tmp_path, tmp_path / "checkpoints" / "iter_00000", tmp_path / "policy.safetensors"):
        pol = load_policy(policy_file(source))
        for name, tensor in run.policy.state_dict().items():
            assert torch.equal(pol.state_dict()[name], tensor), (source, name)
    assert len(load_controllers(tmp_path)) == 2 == len(load_controllers(tmp_path / "checkpoints" / "iter_00000"))
    assert (tmp_path / "cost_per_iteration.png").exists() and (tmp_path / "experiment.json").exists()


def test_gps_starts_from_a_trajectory_optimization_run(tmp_path):
    traj = train_in_simulation(_cfg(1, "reach_traj_opt.yaml"), tmp_path / "traj")
    assert traj.rows[0]["evaluated"] == "local_controllers" and traj.policy is None
    run = train_in_simulation(_cfg(1), tmp_path / "gps", init_controllers=tmp_path / "traj", iterations=0)
    for a, b in zip(run.controllers, traj.controllers, strict=True):
        np.testing.assert_array_equal(a.K, b.K)
    two = save_controllers(traj.controllers[:1], tmp_path / "one.npz")
    with pytest.raises(ValueError, match="need 2"):
        train_in_simulation(_cfg(1), tmp_path / "gps2", init_controllers=two)


def test_gps_with_a_shorter_horizon_starts_from_the_controllers_first_steps(tmp_path):
    """Controllers of a longer run start a shorter one with their first T steps, for MDGPS and BADMM (whose
    dual variables are T long: an iteration with 10-step samples and 12-step controllers failed)."""
    traj = train_in_simulation(_cfg(1, "reach_traj_opt.yaml", horizon=12), tmp_path / "traj")
    for name in ("reach_mdgps.yaml", "reach_badmm.yaml"):
        run = train_in_simulation(_cfg(1, name, horizon=10), tmp_path / name, init_controllers=tmp_path / "traj",
                                  iterations=0)
        for started, long in zip(run.controllers, traj.controllers, strict=True):
            assert started.T == 10 and long.T == 12
            np.testing.assert_array_equal(started.K, long.K[:10])
            np.testing.assert_array_equal(started.pol_covar, long.pol_covar[:10])
        run = train_in_simulation(_cfg(1, name, horizon=10), tmp_path / f"{name}_1", init_controllers=tmp_path / "traj")
        assert run.rows[-1]["iteration"] == 0 and all(c.T == 10 for c in run.controllers)
    with pytest.raises(ValueError, match="T>=14"):
        train_in_simulation(_cfg(1, horizon=14), tmp_path / "longer", init_controllers=tmp_path / "traj")


def test_sim_sampler_trials_are_seeded_and_run_T_plus_1_steps():
    cfg = _cfg(1, "reach_traj_opt.yaml")
    sampler = SimSampler(cfg.task, 8, base_seed=3)
    try:
        x0 = sampler.initial_states([0])[0]
        ctrl = LinearGaussianPolicy(np.zeros((8, 7, 32)), np.zeros((8, 7)), np.tile(0.1 * np.eye(7), (8, 1, 1)),
                                    noise_smoothing_std=1.0)
        a, b = sampler.sample(4, [ctrl], 2)[0], sampler.sample(4, [ctrl], 2)[0]
        assert a.X.shape == (2, 9, 32) and a.U.shape == (2, 9, 7)
        np.testing.assert_array_equal(a.X, b.X)  # same trials, same seeds
        assert not np.allclose(a.U[0], a.U[1])  # samples differ from each other
        np.testing.assert_array_equal(a.X[0, 0], x0)
        # the noise is the controller node's: smooth_noise(default_rng(trial seed), T + 1, dU, smoothing)
        from gps_core.linear_gaussian import smooth_noise

        np.testing.assert_array_equal(a.noise[1], smooth_noise(np.random.default_rng(trial_seed(3, 4, 0, 1)), 9, 7, 1.0))
        ev = sampler.evaluate(4, [ctrl], [0])[0]
        assert ev.N == 1 and np.all(ev.noise == 0)
        assert bool(task_success(sampler.task, ev.X[0, 8], sampler.target_pose(0))) in (True, False)
    finally:
        sampler.close()


def test_extended_controller_repeats_its_last_step():
    rng = np.random.default_rng(0)
    c = LinearGaussianPolicy(rng.normal(size=(3, 2, 4)), rng.normal(size=(3, 2)), np.tile(np.eye(2), (3, 1, 1)),
                             noise_smoothing_std=2.0)
    e = extend_controller(c, 5)
    assert e.T == 5 and e.noise_smoothing_std == 2.0 and extend_controller(c, 3) is c
    np.testing.assert_array_equal(e.K[:3], c.K)
    np.testing.assert_array_equal(e.K[3], c.K[2])
    np.testing.assert_array_equal(e.k[4], c.k[2])


def _rollout(**over):
    base = dict(states=np.zeros((9, 32)), actions=np.zeros((9, 7)), observations=np.zeros((9, 32)),
                noise=np.zeros((9, 7)), stamps=np.arange(9.0), condition=1, iteration=3, sample_index=0,
                robot_namespace="robot1", rollout_id="robot1/3/1/0/abcd")
    base.update(over)
    return RolloutData(**base)


def test_trial_book_stores_only_answers_to_outstanding_trials():
    book = TrialBook((32, 7, 32), horizon=9)
    assert "no outstanding trial" in book.check(_rollout())
    book.expect(Trial(3, 1, 0), "/robot1")
    assert book.check(_rollout()) == ""
    assert "was sent to" in book.check(_rollout(robot_namespace="intruder"))
    assert "empty rollout_id" in book.check(_rollout(rollout_id=""))
    assert "dimensions" in book.check(_rollout(states=np.zeros((9, 5)), observations=np.zeros((9, 0))))
    assert "steps" in book.check(_rollout(states=np.zeros((8, 32)), actions=np.zeros((8, 7)),
                                          observations=np.zeros((8, 32)), noise=np.zeros((8, 7)), stamps=np.arange(8.0)))
    assert "aborted" in book.check(_rollout(aborted=True, abort_reason="camera stale"))
    assert "no outstanding trial" in book.check(_rollout(sample_index=7))
    book.image_size = (64, 64)
    assert "images" in book.check(_rollout())
    assert book.check(_rollout(images=np.zeros((9, 64, 64, 3), np.uint8))) == ""


def test_select_policy_best_is_the_earliest_checkpoint_with_the_highest_training_success(tmp_path):
    from gps_trainer.paper.baselines import select_policy

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "experiment.json").write_text("{}")
    rates = [0.78, 0.89, 0.67, 0.89, 0.5]
    with open(run / "metrics.jsonl", "w") as f:
        for i, r in enumerate(rates):
            f.write(json.dumps({"iteration": i, "success_rate": r}) + "\n")
            (run / "checkpoints" / f"iter_{i:05d}").mkdir()
            (run / "checkpoints" / f"iter_{i:05d}" / "policy.safetensors").write_bytes(b"x")
    assert select_policy(run, "best") == run / "checkpoints" / "iter_00001" / "policy.safetensors"
    assert select_policy(run, "last") == run / "policy.safetensors"
    (run / "checkpoints" / "iter_00001" / "policy.safetensors").unlink()  # a checkpoint without its policy
    assert select_policy(run, "best") == run / "checkpoints" / "iter_00003" / "policy.safetensors"
    with pytest.raises(ValueError, match="select"):
        select_policy(run, "median")
    with pytest.raises(ValueError, match="--validate"):  # no development-set results in this run
        select_policy(run, "validation")


def test_select_policy_validation_counts_successes_over_the_development_sets(tmp_path):
    from gps_trainer.paper.baselines import select_policy

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "experiment.json").write_text("{}")
    # (training rate, validation rate of 8 trials, visual_validation rate of 24 trials)
    rows = [(1.0, 0.625, 0.5), (1.0, 1.0, 0.5), (0.75, 0.5, 0.75), (0.75, 1.0, 0.5), (1.0, 1.0, 0.5)]
    with open(run / "metrics.jsonl", "w") as f:
        for i, (train, val, vis) in enumerate(rows):
            f.write(json.dumps({"iteration": i, "success_rate": train, "val_validation_success": val,
                                "val_validation_trials": 8, "val_visual_validation_success": vis,
                                "val_visual_validation_trials": 24}) + "\n")
            (run / "checkpoints" / f"iter_{i:05d}").mkdir()
            (run / "checkpoints" / f"iter_{i:05d}" / "policy.safetensors").write_bytes(b"x")
    # iteration 2: 4 + 18 = 22 successes beats 8 + 12 = 20 (counts, not the mean of two rates)
    assert select_policy(run, "validation") == run / "checkpoints" / "iter_00002" / "policy.safetensors"
    (run / "checkpoints" / "iter_00002" / "policy.safetensors").unlink()
    # 20 successes at iterations 1, 3, 4: the higher training success, then the later iteration
    assert select_policy(run, "validation") == run / "checkpoints" / "iter_00004" / "policy.safetensors"


def test_the_demo_keeps_the_latest_iteration_with_the_most_training_successes(tmp_path):
    from gps_trainer.cli import _demo_policy

    run = tmp_path / "visuomotor"
    (run / "checkpoints").mkdir(parents=True)
    (run / "experiment.json").write_text("{}")
    with open(run / "metrics.jsonl", "w") as f:
        for i, r in enumerate([0.89, 0.44, 0.89, 0.67]):  # a drop (the drift), a recovery, a drop
            f.write(json.dumps({"iteration": i, "success_rate": r}) + "\n")
            (run / "checkpoints" / f"iter_{i:05d}").mkdir()
            (run / "checkpoints" / f"iter_{i:05d}" / "policy.safetensors").write_bytes(b"x")
    policy, row = _demo_policy(run)
    assert policy == run / "checkpoints" / "iter_00002" / "policy.safetensors" and row["iteration"] == 2
    (run / "checkpoints" / "iter_00002" / "policy.safetensors").unlink()
    policy, row = _demo_policy(run)
    assert policy == run / "checkpoints" / "iter_00000" / "policy.safetensors" and row["success_rate"] == 0.89
