"""A stopped `procedure gps` run goes on at its first missing iteration and loses nothing it recorded."""

import json

import numpy as np
import pytest
import torch

from gps_core.tasks import repo_root
from gps_trainer.gps_config import load_gps_experiment
from gps_trainer.procedure import run_gps

TINY = {"conditions": 2, "samples_per_condition": 2, "horizon": 8,
        "algorithm.dynamics.prior.max_clusters": 2, "algorithm.policy_prior.max_clusters": 2,
        "algorithm.policy_opt.iterations": 5, "algorithm.policy_opt.device": "cpu"}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(iterations, **extra):
    return load_gps_experiment(repo_root() / "config/experiments/reach_mdgps.yaml",
                               {**TINY, "iterations": iterations, **extra})


def test_resumed_run_continues_where_it_stopped(tmp_path):
    _, straight = run_gps(_cfg(2), tmp_path / "straight", evaluate=False)
    _, first = run_gps(_cfg(1), tmp_path / "resumed", evaluate=False)
    algo, rows = run_gps(_cfg(2), tmp_path / "resumed", evaluate=False)  # same folder, one more iteration
    assert len(rows) == 2 and rows[0] == json.loads(json.dumps(first[0]))
    assert rows[1]["iteration"] == 1 and algo.iteration_count == 2
    # iteration 1 samples the restored controllers with the restored random generator: the same rollouts
    np.testing.assert_allclose(rows[1]["cost_per_condition"], straight[1]["cost_per_condition"], rtol=1e-12)
    saved = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert len(saved["iterations"]) == 2
    # a finished run is not rerun
    _, again = run_gps(_cfg(2), tmp_path / "resumed", evaluate=False)
    assert again == saved["iterations"]


def test_the_state_file_decides_how_many_iterations_count(tmp_path):
    """A stop between writing metrics.json and gps_state.npz: the unconfirmed row is done again."""
    run_gps(_cfg(1), tmp_path, evaluate=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    metrics["iterations"].append({"iteration": 1, "cost_per_condition": [0.0, 0.0]})
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    _, rows = run_gps(_cfg(2), tmp_path, evaluate=False)
    assert len(rows) == 2 and rows[1]["cost_per_condition"] != [0.0, 0.0]


def test_another_configuration_is_refused(tmp_path):
    run_gps(_cfg(1), tmp_path, evaluate=False)
    with pytest.raises(ValueError, match="another configuration"):
        run_gps(_cfg(2, seed=5), tmp_path, evaluate=False)
    _, rows = run_gps(_cfg(1, seed=5), tmp_path, evaluate=False, resume=False)  # explicit fresh start
    assert len(rows) == 1
