"""One run directory for every way of training (simulator API or ROS nodes):

    <run>/experiment.json         the experiment's configuration (a directory holding another is refused)
    <run>/checkpoints/iter_NNNNN/ per completed iteration, atomic (gps_trainer.storage.CheckpointStore):
                                  algorithm.npz (step sizes, duals, counters, random state, and under
                                  ``resume.`` what the algorithm carries to its next iterations: the step
                                  rule's memory, the GMM priors, the S-step history),
                                  controllers.npz, policy.safetensors (GPS), metadata.json (the metrics row)
    <run>/metrics.jsonl           one row per iteration (+ tensorboard/, cost_per_iteration.png)
    <run>/policy.safetensors      the latest policy (what ``gps eval --policy <run>`` takes)
    <run>/controllers.npz         the latest local controllers (what a later phase starts from)
    <run>/feature_points.png      a visuomotor policy's feature points on its last evaluation's images
    <run>/rollouts/               the rollouts the ROS nodes sent (gps_trainer.storage.RolloutStore)

A stopped run resumes at the iteration after its latest checkpoint, whichever sampler wrote it, and
goes on as it would have without the stop: it records the same iterations (tested bit for bit on the
simulator API for MDGPS, on- and off-policy, BADMM and trajectory optimization alone). A finished run is
extended the same way (an extension changes BADMM's schedules when they are lists: they span the
configured iterations).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gps_controller.overlay import draw_feature_points
from gps_controller.policies.serialization import load_policy, save_policy
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_core.samples import SampleBatch
from gps_trainer.config import ExperimentConfig, config_to_dict, experiment_from_dict
from gps_trainer.state_arrays import prefixed, under
from gps_trainer.storage import CheckpointStore

LOGGER = logging.getLogger(__name__)

__all__ = ["RunDirectory", "MetricsLogger", "save_controllers", "load_controllers", "policy_file",
           "controller_arrays", "feature_point_overlay", "algorithm_state", "read_run", "load_algorithm_state"]

#: Scalar or array attributes of TrajOptOnly / MDGPS / BADMM that a checkpoint keeps (BADMM: its duals).
_STATE_ATTRIBUTES = ("eta", "step_mult", "iteration_count", "s_step_count", "step_mults", "pol_wt",
                     "lambda_K", "lambda_k", "aux_pose_head")

#: algorithm.npz holds the algorithm's ``resume_state()`` under this prefix, and RESUME_VERSION_KEY says
#: that it does (a checkpoint written before it has neither; an algorithm with nothing to carry writes the
#: key alone).
_RESUME_PREFIX, _RESUME_VERSION_KEY = "resume", "resume_state_version"


# --------------------------------------------------------------------------- controllers and policies


def controller_arrays(controllers: list[LinearGaussianPolicy]) -> dict[str, np.ndarray]:
    """Local controllers stacked: K (M, T, dU, dX), k (M, T, dU), pol_covar (M, T, dU, dU),
    noise_smoothing_std (M,): the layout of every controllers.npz."""
    return {"K": np.stack([c.K for c in controllers]), "k": np.stack([c.k for c in controllers]),
            "pol_covar": np.stack([c.pol_covar for c in controllers]),
            "noise_smoothing_std": np.array([c.noise_smoothing_std for c in controllers])}


def save_controllers(controllers: list[LinearGaussianPolicy], path: str | Path) -> Path:
    """Local controllers as one .npz (:func:`controller_arrays`), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **controller_arrays(controllers))
    tmp.replace(path)
    return path


def load_controllers(path: str | Path) -> list[LinearGaussianPolicy]:
    """Controllers from a controllers .npz, a checkpoint directory or a run directory (its latest
    controllers). Validated by LinearGaussianPolicy; no pickles."""
    path = Path(path)
    if path.is_dir():
        path = path / "controllers.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no controllers file (a controllers .npz, checkpoint or run directory)")
    with np.load(path, allow_pickle=False) as z:
        smoothing = z["noise_smoothing_std"] if "noise_smoothing_std" in z.files else np.zeros(len(z["K"]))
        return [LinearGaussianPolicy(K, k, S, noise_smoothing_std=float(s))
                for K, k, S, s in zip(z["K"], z["k"], z["pol_covar"], smoothing, strict=True)]


def policy_file(path: str | Path) -> Path:
    """The policy file of a policy file, a checkpoint directory or a run directory (its latest)."""
    path = Path(path)
    if path.is_dir():
        path = path / "policy.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no policy (give a policy .safetensors, a checkpoint or a run directory)")
    return path


def feature_point_overlay(image: np.ndarray, points: np.ndarray, scale: int = 4) -> np.ndarray:
    """The (H, W, 3) camera image enlarged ``scale`` times (nearest neighbour) with the CNN's feature
    points (K, 2) in [-1, 1] drawn on it (the controller's RViz overlay, gps_controller.overlay)."""
    big = np.repeat(np.repeat(np.asarray(image, dtype=np.uint8), scale, axis=0), scale, axis=1)
    return draw_feature_points(big, points, radius=max(2, scale))


def algorithm_state(algo: Any) -> dict[str, np.ndarray]:
    """What a checkpoint keeps of an algorithm besides its controllers and policy: step sizes, eta,
    counters, BADMM's duals, the torch and the algorithm's numpy random states, and under ``resume.``
    the algorithm's ``resume_state()``: what its next iterations read of this one (the step-size rule's
    memory of the last iteration, the dynamics priors with their warm-started mixtures, the policy prior's
    rollouts and the S-step history that the next iteration still uses), so that a resumed run is the
    uninterrupted one."""
    out = {name: np.asarray(getattr(algo, name), dtype=np.float64) for name in _STATE_ATTRIBUTES
           if hasattr(algo, name)}
    if hasattr(algo, "resume_state"):
        out.update(prefixed(algo.resume_state(), _RESUME_PREFIX))
        out[_RESUME_VERSION_KEY] = np.asarray(1)
    out["torch_rng_state"] = torch.get_rng_state().numpy()
    rng = getattr(algo, "rng", None)
    if isinstance(rng, np.random.Generator):
        out["numpy_rng_state"] = np.frombuffer(json.dumps(rng.bit_generator.state).encode(), dtype=np.uint8)
    return out


def load_algorithm_state(algo: Any, arrays: dict[str, np.ndarray], controllers: list[LinearGaussianPolicy]) -> None:
    """Inverse of :func:`algorithm_state` (each attribute keeps its type: int, float or array). A checkpoint
    written before the resume state still resumes, with a warning: the step rule and the priors restart."""
    for name in _STATE_ATTRIBUTES:
        if name in arrays and hasattr(algo, name):
            old, value = getattr(algo, name), np.asarray(arrays[name], dtype=np.float64)
            if isinstance(old, bool | int | np.integer):
                setattr(algo, name, int(value.reshape(-1)[0]))
            elif isinstance(old, float | np.floating):
                setattr(algo, name, float(value.reshape(-1)[0]))
            else:
                setattr(algo, name, value.copy())
    if "torch_rng_state" in arrays:
        torch.set_rng_state(torch.from_numpy(np.array(arrays["torch_rng_state"], dtype=np.uint8)))
    if "numpy_rng_state" in arrays and isinstance(getattr(algo, "rng", None), np.random.Generator):
        algo.rng.bit_generator.state = json.loads(np.asarray(arrays["numpy_rng_state"]).tobytes().decode())
    if len(controllers) != len(algo.controllers):
        raise ValueError(f"the checkpoint holds {len(controllers)} controllers, the experiment {len(algo.controllers)}")
    algo.controllers = controllers
    if hasattr(algo, "load_resume_state"):
        if _RESUME_VERSION_KEY in arrays:
            algo.load_resume_state(under(arrays, _RESUME_PREFIX))
        else:
            LOGGER.warning("the checkpoint holds no resume state (written by an earlier version): the step-size "
                           "rule, the GMM priors and the S-step history restart from the next samples, so the "
                           "resumed run differs from an uninterrupted one")


# --------------------------------------------------------------------------- metrics


class MetricsLogger:
    """``metrics.jsonl`` (one row per iteration), TensorBoard scalars and ``cost_per_iteration.png``."""

    def __init__(self, output_dir: str | Path, tensorboard: bool = True):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.output_dir / "metrics.jsonl"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.output_dir / "tensorboard"))
            except Exception as exc:  # TensorBoard is optional; the JSONL and the plot are not
                LOGGER.warning("TensorBoard disabled: %s", exc)

    def history(self) -> list[dict[str, Any]]:
        if not self.jsonl.exists():
            return []
        rows = {}
        for line in self.jsonl.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a torn last line of a killed run
                continue
            rows[row["iteration"]] = row  # a re-run iteration replaces its earlier row
        return [rows[k] for k in sorted(rows)]

    def log(self, row: dict[str, Any]) -> Path:
        row = plain(row)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            it = int(row["iteration"])
            for key, value in row.items():
                if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
                    for m, v in enumerate(value):
                        if math.isfinite(v):
                            self._tb.add_scalar(f"{key}/condition_{m}", v, it)
                elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(key, float(value), it)
            self._tb.flush()
        return self.plot()

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.history()
        path = self.output_dir / "cost_per_iteration.png"
        fig, ax = plt.subplots(figsize=(6, 4))
        if rows:
            its = [r["iteration"] for r in rows]
            costs = [r.get("cost_per_condition", []) for r in rows]
            for m in range(max((len(c) for c in costs), default=0)):
                ax.plot(its, [c[m] if len(c) > m else np.nan for c in costs], marker="o", lw=1, label=f"condition {m}")
            ax.plot(its, [np.nanmean(c) if len(c) else np.nan for c in costs], "k-", lw=2, label="samples (mean)")
            ax.plot(its, [r.get("policy_cost", np.nan) for r in rows], "r--", lw=2, label="evaluated (no noise)")
            ax.legend(fontsize=7)
        ax.set_xlabel("iteration")
        ax.set_ylabel("cost")
        ax.set_title("GPS: cost per iteration")
        fig.tight_layout()
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        tmp.replace(path)
        return path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def plain(v: Any) -> Any:
    """JSON-able copy of a metrics value (numpy scalars and arrays to Python)."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, np.ndarray | list | tuple):
        return [plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


# --------------------------------------------------------------------------- the directory


def _config_json(cfg: ExperimentConfig) -> dict[str, Any]:
    """``cfg`` as experiment.json holds it (JSON types: tuples as lists)."""
    return json.loads(json.dumps(config_to_dict(cfg)))


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved configuration with the keys added to the configuration since at their defaults: every new key's
    default keeps the behaviour from before it, so a run written before a key existed is a run of that
    default (and resumes). A file that no longer loads is compared as it is (and so refused)."""
    try:
        return _config_json(experiment_from_dict(saved, source="experiment.json"))
    except (ValueError, TypeError):
        return saved


class RunDirectory:
    """The files of one run (see the module docstring). ``fresh``: start afresh in a directory that
    holds a run of the same configuration (its checkpoints are ignored and overwritten)."""

    def __init__(self, path: str | Path, cfg: ExperimentConfig, fresh: bool = False):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.cfg, self.fresh = cfg, fresh
        self._check_config()
        if fresh:  # a restart replaces the run found here
            for name in ("checkpoints", "rollouts", "tensorboard"):
                shutil.rmtree(self.path / name, ignore_errors=True)
            (self.path / "metrics.jsonl").unlink(missing_ok=True)
        self.checkpoints = CheckpointStore(self.path)
        self.checkpoints.cleanup_temporaries()
        self.metrics = MetricsLogger(self.path)

    def _check_config(self) -> None:
        """Refuse a directory holding a run of another configuration (``iterations`` may differ: a
        finished run can be extended)."""
        file = self.path / "experiment.json"
        new = _config_json(self.cfg)
        if file.exists() and not self.fresh:
            old = _with_defaults(json.loads(file.read_text()))
            if {k: v for k, v in old.items() if k != "iterations"} != {k: v for k, v in new.items() if k != "iterations"}:
                raise ValueError(f"{self.path} holds a run of another configuration ({file}); use another output "
                                 "directory, or restart to replace it")
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps(new, indent=1))
        tmp.replace(file)

    def restore(self, algo: Any) -> list[dict[str, Any]]:
        """Load the latest checkpoint into ``algo``; the metrics rows of the iterations it covers ([] for
        a new run)."""
        ckpt = self.checkpoints.latest()
        if ckpt is None:
            return []
        load_algorithm_state(algo, ckpt.algorithm, load_controllers(ckpt.path))
        if getattr(algo, "policy", None) is not None:
            if ckpt.policy_path is None:
                raise ValueError(f"{ckpt.path}: the checkpoint holds no policy, the experiment trains one")
            algo.policy.load_state_dict(load_policy(ckpt.policy_path, device=algo.policy.device).state_dict())
        rows = [r for r in self.metrics.history() if r["iteration"] <= ckpt.iteration]
        if len(rows) != ckpt.iteration + 1:  # metrics.jsonl lost lines: the checkpoints keep every row
            rows = [self.checkpoints.load(i).metadata.get("metrics", {"iteration": i})
                    for i in self.checkpoints.iterations() if i <= ckpt.iteration]
        LOGGER.info("resuming %s at iteration %d (checkpoint %s)", self.path, ckpt.iteration + 1, ckpt.path)
        return rows

    def save_iteration(self, iteration: int, algo: Any, row: dict[str, Any],
                       evaluated: list[SampleBatch] | None = None) -> Path:
        """Checkpoint of completed ``iteration`` (written last: what a resume trusts), metrics row, the
        latest policy/controllers at the top and, for a visuomotor policy, feature_points.png."""
        policy = getattr(algo, "policy", None)
        ckpt = self.checkpoints.save(iteration, algorithm_state(algo), controller_arrays(algo.controllers), policy,
                                     {"experiment": self.cfg.name, "algorithm": self.cfg.algorithm.type,
                                      "metrics": plain(row)})
        save_controllers(algo.controllers, self.path / "controllers.npz")
        if policy is not None:
            tmp = self.path / "policy.tmp.safetensors"
            save_policy(policy, tmp)
            Path(str(tmp) + ".sha256").replace(str(self.path / "policy.safetensors") + ".sha256")
            tmp.replace(self.path / "policy.safetensors")
            if policy.uses_images and evaluated:
                try:
                    self.write_overlay(policy, evaluated)
                except Exception as exc:  # a picture must not fail an iteration
                    LOGGER.warning("feature-point overlay not written: %s", exc)
        self.metrics.log(row)
        return ckpt

    def write_overlay(self, policy: Any, batches: list[SampleBatch]) -> Path:
        """feature_points.png: one row per condition (up to 4), the first and the last step of its first
        rollout, the CNN's feature points on the camera image."""
        import cv2

        rows = []
        for b in batches[:4]:
            tiles = []
            for t in (0, b.T - 1):
                _, points = policy.predict(b.obs[0, t][None], b.images[0, t][None])
                tiles.append(feature_point_overlay(b.images[0, t], points[0], scale=4))
            rows.append(np.concatenate(tiles, axis=1))
        path = self.path / "feature_points.png"
        tmp = path.with_name("feature_points.tmp.png")
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {tmp}")
        tmp.replace(path)
        return path

    def close(self) -> None:
        self.metrics.close()


def read_run(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(experiment configuration, metrics rows) of a run directory, or of the run holding ``path`` (a
    policy file or checkpoint inside it). Rows come from metrics.jsonl (a re-run iteration's last row)."""
    path = Path(path)
    for run in (path, *path.parents):
        if (run / "experiment.json").exists():
            return json.loads((run / "experiment.json").read_text()), MetricsLogger(run, tensorboard=False).history()
    raise FileNotFoundError(f"{path}: not inside a run directory (no experiment.json)")
