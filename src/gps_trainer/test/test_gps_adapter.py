"""The trainer's MDGPS/BADMM adapter without ROS: starting from a trajectory-only run's controllers,
checkpoint state and policy round trips, evaluation metrics, and the configurations it refuses."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gps_core.samples import SampleBatch
from gps_trainer import training
from gps_trainer.algorithm_adapter import GPSAdapter, TrajOptAdapter, load_initial_controllers
from gps_trainer.procedure import save_controllers
from gps_trainer.storage import CheckpointStore

ROOT = Path(__file__).resolve().parents[3]
EXP = ROOT / "config" / "experiments"


@pytest.fixture(autouse=True)
def _restore_torch_threads():  # GPSAdapter sets one thread (CPU)
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _experiment(tmp_path: Path, name: str = "reach_mdgps.yaml", **alg) -> training.ExperimentInfo:
    raw = yaml.safe_load((EXP / name).read_text())
    raw["algorithm"].update({"policy_obs": "observation", **alg})
    raw["algorithm"]["policy"]["net"] = {"hidden": [8]}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return training.load_experiment_info(path)


def _perturbed_trajopt_checkpoint(out: Path) -> dict[str, np.ndarray]:
    """A trajectory-only run's checkpoint whose controllers differ from the LQR initialization."""
    traj = TrajOptAdapter(training.load_experiment_info(EXP / "reach_traj_opt.yaml"))
    state = traj.state_arrays()
    for key in [k for k in state if k.endswith("/k")]:
        state[key] = state[key] + np.random.default_rng(1).normal(size=state[key].shape)
    CheckpointStore(out).save(3, state, {}, None, {"algorithm": "traj_opt"})
    return state


def test_starts_from_a_trajectory_only_run(tmp_path):
    out = tmp_path / "traj"
    state = _perturbed_trajopt_checkpoint(out)
    info = _experiment(tmp_path)
    fresh = GPSAdapter(info)
    for source in (out, out / "checkpoints" / "iter_00003"):  # output directory, checkpoint directory
        adapter = GPSAdapter(info, init_controllers=str(source))
        for m in range(info.num_conditions):
            np.testing.assert_array_equal(adapter.alg.controllers[m].k, state[f"cond{m}/k"])
            np.testing.assert_array_equal(adapter.initial_controllers()[m].bias, state[f"cond{m}/k"])
        assert not np.allclose(adapter.alg.controllers[0].k, fresh.alg.controllers[0].k)
    npz = save_controllers(load_initial_controllers(out)[:2], tmp_path / "two.npz")
    with pytest.raises(ValueError, match="need 4"):
        GPSAdapter(info, init_controllers=str(npz))
    with pytest.raises(FileNotFoundError):
        GPSAdapter(info, init_controllers=str(tmp_path / "nothing_here"))


def test_refuses_a_state_policy_the_controller_cannot_feed(tmp_path):
    info = _experiment(tmp_path, policy_obs="state")
    with pytest.raises(ValueError, match="policy_obs must be 'observation'"):
        GPSAdapter(info)
    with pytest.raises(NotImplementedError):
        training.make_algorithm(training.ExperimentInfo("x", "nope", "reach", 4, 5, 100))


@pytest.mark.parametrize("name", ["reach_mdgps.yaml", "reach_badmm.yaml"])
def test_state_and_policy_round_trip(tmp_path, name):
    info = _experiment(tmp_path, name)
    a, b = GPSAdapter(info), GPSAdapter(info)
    a.alg.eta = a.alg.eta * 3.0
    a.alg.iteration_count, a.alg.s_step_count, a.alg.step_mult = 2, 5, 0.5
    with torch.no_grad():
        for p in a.policy.parameters():
            p.add_(0.1)
    if name == "reach_badmm.yaml":
        a.alg.pol_wt = a.alg.pol_wt + 1.0
    arch, weights, _ = a.serialized_policy()
    b.load_state(a.state_arrays())
    b.load_policy(arch, weights)
    assert b.alg.iteration_count == 2 and b.alg.s_step_count == 5 and b.alg.step_mult == 0.5
    np.testing.assert_allclose(b.alg.eta, a.alg.eta)
    if name == "reach_badmm.yaml":
        np.testing.assert_allclose(b.alg.pol_wt, a.alg.pol_wt)
    obs = np.random.default_rng(0).normal(size=(5, 32))
    np.testing.assert_allclose(b.policy.predict(obs)[0], a.policy.predict(obs)[0])
    assert b.serialized_policy()[2] == a.serialized_policy()[2]


def test_evaluate_reports_policy_cost_and_success(tmp_path):
    adapter = GPSAdapter(_experiment(tmp_path))
    jac = training.EEJacobians("reach")
    batches = []
    for m in range(4):
        X = np.zeros((1, 100, 32))
        X[:, :, :7] = np.linspace(-0.5, 0.5, 7)
        X[:, :, 14:23] = 0.01 if m < 3 else 0.3  # EE points 1.7 cm (or 52 cm) from their targets
        batches.append(SampleBatch(X=X, U=np.zeros((1, 100, 7)), obs=np.zeros((1, 100, 32)), images=None,
                                   noise=np.zeros((1, 100, 7)), ee_jacobians=np.stack([jac(x) for x in X]),
                                   condition=m))
    ev = adapter.evaluate(batches)
    assert ev["success_rate"] == 0.75
    assert ev["policy_success"] == [1.0, 1.0, 1.0, 0.0]
    assert ev["policy_cost_per_condition"][3] > ev["policy_cost_per_condition"][0] > 0
    assert ev["policy_cost"] == pytest.approx(np.mean(ev["policy_cost_per_condition"]))
