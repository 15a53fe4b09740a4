"""A resumed run is the uninterrupted run: what the algorithms carry from one iteration to the next (the
step-size rule's memory, the GMM priors, the S-step history, the S-step's optimizer) travels in the checkpoint, so a run stopped
after its first iteration and resumed records the same iterations, bit for bit, as one never stopped."""

import json
import logging

import numpy as np
import pytest
import torch

from gps_controller.policies import make_policy
from gps_controller.policies.serialization import load_policy
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_core.tasks import repo_root
from gps_trainer.algorithms.mdgps import MDGPS, PolicyPriorBuffer
from gps_trainer.config import GMMPriorConfig, MDGPSConfig, load_experiment
from gps_trainer.dynamics import GMMPrior
from gps_trainer.procedure import train_in_simulation
from gps_trainer.storage import CheckpointStore

EXP = repo_root() / "config" / "experiments"
# test_loop's tiny runs
TINY = {"conditions": 2, "samples_per_condition": 2, "horizon": 8,
        "algorithm.dynamics.prior.max_clusters": 2, "algorithm.policy_prior.max_clusters": 2,
        "algorithm.policy_opt.iterations": 5, "algorithm.policy_opt.device": "cpu"}

CASES = {
    "mdgps": ("reach_mdgps.yaml", {}),
    # on-policy sampling, an S-step history of two iterations, and a policy prior that keeps one of the
    # two rollouts of the previous iteration (the buffer's partly pushed-out rows)
    "mdgps_on_policy": ("reach_mdgps.yaml", {"algorithm.sample_on_policy": True, "algorithm.s_step_history": 2,
                                             "algorithm.policy_prior.max_samples": 3}),
    # Adam's state carried between S-steps (it must travel in the checkpoint too)
    "mdgps_persistent_optimizer": ("reach_mdgps.yaml", {"algorithm.policy_opt.persistent_optimizer": True}),
    "badmm": ("reach_badmm.yaml", {}),
    # the nu update that reads the last iteration's KL (prev_kl); the default one does not
    "badmm_kl_ratio": ("reach_badmm.yaml", {"algorithm.fixed_lg_step": 2}),
    "traj_opt": ("reach_traj_opt.yaml", {}),
}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(name, extra, iterations=3):
    tiny = dict(TINY)
    if name.endswith("traj_opt.yaml"):
        tiny = {k: v for k, v in tiny.items() if not k.startswith("algorithm.policy")}
    return load_experiment(EXP / name, {**tiny, "iterations": iterations, **extra})


def _recorded(row):
    """A metrics row as recorded (JSON: NaN as NaN), less the wall-clock timings (keys ending in _s)."""
    return json.dumps({k: v for k, v in row.items() if not k.endswith("_s")}, sort_keys=True)


def _stop_after_first_and_resume(cfg, out):
    train_in_simulation(cfg, out, iterations=1)  # a run of 3 iterations stopped after its first
    return train_in_simulation(cfg, out)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_resumed_run_records_the_iterations_of_the_uninterrupted_run(tmp_path, case):
    name, extra = CASES[case]
    cfg = _cfg(name, extra)
    straight = train_in_simulation(cfg, tmp_path / "straight")
    resumed = _stop_after_first_and_resume(cfg, tmp_path / "resumed")
    assert [r["iteration"] for r in resumed.rows] == [0, 1, 2]
    for a, b in zip(straight.rows, resumed.rows, strict=True):
        assert _recorded(a) == _recorded(b), a["iteration"]
    if "predicted_improvement" in resumed.rows[1]:  # GPS: the step rule ran on the checkpoint's memory of 0
        assert np.isfinite(resumed.rows[1]["predicted_improvement"])
    # Exactly equal by construction: both runs do the same float64 / float32 operations in the same order on
    # the same inputs (one torch thread), and every array the resume reads round-trips bit for bit in npz.
    for a, b in zip(straight.controllers, resumed.controllers, strict=True):
        for field in ("K", "k", "pol_covar"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    if straight.policy is not None:
        sa, sb = straight.policy.state_dict(), resumed.policy.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # ... and so is everything the last checkpoints hold (the state a further resume would start from).
    last = [CheckpointStore(tmp_path / run).load(2).algorithm for run in ("straight", "resumed")]
    assert last[0].keys() == last[1].keys() and any(k.startswith("resume.") for k in last[0])
    for key in last[0]:
        np.testing.assert_array_equal(last[0][key], last[1][key], err_msg=key)


def test_a_checkpoint_without_the_resume_state_still_resumes_with_a_warning(tmp_path, caplog):
    """Checkpoints written before the resume state: the run goes on, the step rule and priors restart (the
    step rule skips its first update: NaN improvements, the symptom this state removes)."""
    cfg = _cfg("reach_mdgps.yaml", {}, iterations=2)
    train_in_simulation(cfg, tmp_path, iterations=1)
    store = CheckpointStore(tmp_path)
    ckpt = store.load(0)
    assert any(k.startswith("resume.") for k in ckpt.algorithm)
    old = {k: v for k, v in ckpt.algorithm.items() if not k.startswith("resume")}
    store.save(0, old, ckpt.controllers, load_policy(ckpt.policy_path),
               {k: v for k, v in ckpt.metadata.items() if k not in ("iteration", "created", "files")})
    with caplog.at_level(logging.WARNING, logger="gps_trainer.run_dir"):
        run = train_in_simulation(cfg, tmp_path)
    assert any("resume state" in m for m in caplog.messages)
    assert [r["iteration"] for r in run.rows] == [0, 1]
    assert np.isnan(run.rows[1]["predicted_improvement"])


# --------------------------------------------------------------------------- the pieces


def _pendulums(rng, N, T):
    """Points of a noisy damped pendulum pair: inputs [x_t; u_t] (N, T-1, 6), outputs x_t+1 (N, T-1, 4)."""
    X = np.zeros((N, T, 4))
    U = 0.3 * rng.standard_normal((N, T, 2))
    X[:, 0, :2] = np.array([1.0, -0.5]) + 0.05 * rng.standard_normal((N, 2))
    for t in range(T - 1):
        th, w = X[:, t, :2], X[:, t, 2:]
        X[:, t + 1, 2:] = w + 0.05 * (-9.8 * np.sin(th) - 0.3 * w + 3.0 * (U[:, t] - 2.0 * th))
        X[:, t + 1, :2] = th + 0.05 * X[:, t + 1, 2:]
    return np.concatenate([X[:, :-1], U[:, :-1]], axis=2), X[:, 1:]


def _npz_round_trip(arrays, path):
    np.savez(path, **arrays)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_a_restored_gmm_prior_continues_its_warm_started_fit_bit_for_bit(tmp_path):
    rng = np.random.default_rng(3)
    a, b = _pendulums(rng, 10, 30), _pendulums(rng, 10, 30)

    def prior():  # 290 then 580 points, 3 clusters both times: the second fit is warm-started
        return GMMPrior(max_clusters=3, min_samples_per_cluster=40, max_samples=15, seed=0, max_iterations=5)

    straight = prior()
    straight.update(*a)
    saved = _npz_round_trip(straight.state_arrays(), tmp_path / "prior.npz")
    restored = prior()
    restored.load_state_arrays(saved)
    for p in (straight, restored):  # the restored prior answers as the saved one, before and after update B
        assert p._gmm.n_components == 3
    np.testing.assert_array_equal(restored.eval(*b).Phi, straight.eval(*b).Phi)
    straight.update(*b)
    restored.update(*b)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_", "lower_bound_"):
        np.testing.assert_array_equal(getattr(restored._gmm, name), getattr(straight._gmm, name), err_msg=name)
    np.testing.assert_array_equal(restored._buffer, straight._buffer)
    for x, y in zip(restored.eval(*b), straight.eval(*b), strict=True):
        np.testing.assert_array_equal(x, y)
    # What the warm start is worth: the buffer alone (the mixture refitted from scratch) gives another prior.
    cold = prior()
    cold.update(*a)
    cold._gmm = None
    cold.update(*b)
    assert not np.array_equal(cold._gmm.means_, straight._gmm.means_)


def test_the_policy_prior_keeps_only_the_rows_the_next_batch_does_not_push_out(tmp_path):
    rng = np.random.default_rng(4)

    def batch(n):
        return (rng.standard_normal((n, 5, 3)), rng.standard_normal((n, 5, 2)),
                rng.integers(0, 256, (n, 5, 4, 4, 3), dtype=np.uint8))

    first, second, third = batch(3), batch(3), batch(3)
    for max_samples, kept in ((3, 0), (5, 2), (20, 6)):
        straight = PolicyPriorBuffer(GMMPriorConfig(max_samples=max_samples))
        straight.add(*first)
        straight.add(*second)
        state = straight.resume_state()
        assert (state["X"].shape[0] if state else 0) == kept
        if state:  # the images travel with their rows, and only those
            assert state["images"].shape[0] == kept and state["images"].dtype == np.uint8
        restored = PolicyPriorBuffer(GMMPriorConfig(max_samples=max_samples))
        restored.load_resume_state(_npz_round_trip(state, tmp_path / "buf.npz") if state else {})
        straight.add(*third)
        restored.add(*third)
        for name in ("X", "obs", "images"):
            np.testing.assert_array_equal(getattr(restored, name), getattr(straight, name))


def test_the_s_step_history_keeps_the_iterations_the_next_s_step_trains_on(tmp_path):
    """s_step_history h: the next S-step appends its data and trains on the latest h entries, so the
    checkpoint keeps the latest h - 1, images included (none for h = 1, the default)."""
    rng = np.random.default_rng(5)
    T = 3
    init = LinearGaussianPolicy(np.zeros((T, 2, 4)), np.zeros((T, 2)), np.tile(0.5 * np.eye(2), (T, 1, 1)))

    def algorithm(h):
        cfg = MDGPSConfig(s_step_history=h)
        return MDGPS(cfg, [init], make_policy(cfg.policy, 4, 2, seed=0), seed=0)

    for h in (1, 3):
        saved = algorithm(h)
        entries = [(rng.standard_normal((4, T, 2)), rng.integers(0, 256, (4, T, 3, 3, 3), dtype=np.uint8),
                    rng.standard_normal((4, T, 2)), rng.standard_normal((4, T, 2, 2))) for _ in range(4)]
        saved.s_step_data.extend(entries)  # what four remembered S-steps would leave (the deque keeps h)
        state = saved.resume_state()
        assert sum(k.endswith(".images") for k in state) == h - 1
        restored = algorithm(h)
        restored.load_resume_state(_npz_round_trip(state, tmp_path / "s.npz") if state else {})
        assert restored.s_step_data.maxlen == h and len(restored.s_step_data) == h - 1
        for old, new in zip(entries[len(entries) - (h - 1):] if h > 1 else [], restored.s_step_data, strict=True):
            for x, y in zip(old, new, strict=True):
                np.testing.assert_array_equal(x, y)
