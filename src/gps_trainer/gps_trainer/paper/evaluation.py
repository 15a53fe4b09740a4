"""Success rates of a trained policy in the paper's three test conditions (Table I), under an honest protocol.

The paper evaluates every policy on (1) the training target positions, (2) new target positions in the
same range ("spatial test") and (3) the training positions with visual distractors ("visual test").
The simulator and the policies are deterministic, so repeated trials of one situation say nothing new;
here every trial is a different situation (the condition sets are defined in the task YAML,
gps_core.tasks; drawn in ``ArmSim.reset`` from (condition set, condition, reset seed)):

- ``train_perturbed``: the training positions, each trial's start joint angles perturbed by
  U(-0.03, 0.03) rad per joint (the GPS samples' set ``train`` is never perturbed); 27 trials;
- ``spatial_test``: 36 target positions drawn (seeded, at task load) uniformly over the x-y box of the
  training positions, >= 1 cm from every training and validation position; one trial each;
- ``visual_test``: the training positions, each trial a random distractor scene (2-4 objects of 5
  shapes, random sizes and colours, >= 6 cm from the target's footprint, never the target's colour) and a
  new table colour; the target keeps its look; 40 trials;
- ``validation`` (24 drawn positions) and ``visual_validation`` (24 other distractor scenes): for every
  development decision; the test sets give final numbers only;
- beyond the paper, ``ood_<kind>_<strength>_<validation|test>``: the training positions under one
  out-of-distribution family (lighting, camera pose, clutter, same-colour distractors, textures, image
  noise; gps_core.ood) at strengths 1-3; :mod:`gps_trainer.paper.robustness` runs them as robustness
  curves (``gps eval --robustness``).

:func:`evaluate_policy` runs the policy alone (its mean action, no noise, no local controllers) for the
task horizon; a trial succeeds when ``ArmSim.is_success()`` holds at the end. Each rate comes with a
Wilson score interval and the number of distinct situations behind it (``SetResult.situations``).
Trial ``i`` of a set uses condition ``i mod (number of conditions)`` and the reset seed
``numpy.random.default_rng([seed, crc32(set name), i])`` (:func:`trial_reset_seed`), so a set's result
depends only on (policy, task, set, trials, seed): not on which other sets the same call evaluates, or in
what order (``gps eval --sets visual_test`` draws the scenes of table1's three-set evaluation). Default
trial counts are the task's (``trials`` per set; the paper's 27 / 36 / 40).

``ablation`` shows whether a visuomotor policy uses what it sees: ``blank`` feeds it a black image,
``swap`` the image of another condition of the same set (same arm pose, the target elsewhere; a second
simulator mirrors the arm), with the true state otherwise.

Where it runs: directly on the simulator's Python API (``gps_sim.ArmSim``), in-process. The ROS path
(controller node + lockstep sim node) is :mod:`gps_trainer.paper.node_evaluation` (``gps eval
--through-nodes``): the same trials, the same numbers (perturbations and scenes are drawn by the sim
node's reset from the same (set, condition, seed)), with one difference in what acts on the arm:
the controller's safety layer also zeroes torque that pushes a joint further into its limit within
``joint_limit_margin`` (0.05 rad), while this evaluation only clamps the torques to the effort limits.
``joint_limit_margin=0.05`` here applies the controller's guard too (``gps_controller.safety``); then
both paths agree bit for bit (tested), also for policies that drive joints into their limits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gps_controller.policies.neural import GaussianPolicy
from gps_controller.policies.serialization import load_policy
from gps_core.progress import Progress
from gps_core.samples import POLICY_OBS
from gps_trainer.sim_sampler import safety_layer_for

__all__ = ["CONDITION_SETS", "VALIDATION_SETS", "ABLATIONS", "wilson_interval", "SetResult", "EvalResult",
           "evaluate_policy", "load_policy_for_eval", "format_table", "run_trial",
           "ImageAblation", "default_trials", "count_situations"]

CONDITION_SETS = ("train_perturbed", "spatial_test", "visual_test")  # Table I's columns, in order
VALIDATION_SETS = ("validation", "visual_validation", "train_validation")  # for development decisions
ABLATIONS = ("blank", "swap")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion: (low, high) in [0, 1]; (0, 1) when n == 0.

    centre = (p + z^2 / 2n) / (1 + z^2 / n),
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2).
    """
    n = int(n)
    k = int(successes)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class SetResult:
    """One condition set's trials."""

    condition_set: str
    trials: int
    successes: int
    ci_low: float
    ci_high: float
    success: list[bool] = field(default_factory=list)  # per trial
    conditions: list[int] = field(default_factory=list)  # condition index per trial
    reset_seeds: list[int] = field(default_factory=list)
    initial_target_positions: list[list[float]] = field(default_factory=list)  # per trial, m
    final_distance: list[float] = field(default_factory=list)  # mean EE-point distance at the end, m
    situations: int = 0  # distinct situations behind the rate (see count_situations)

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "rate": self.rate}


@dataclass
class EvalResult:
    task: str
    policy: str
    policy_obs: str
    seed: int
    trials_per_set: int | None  # None: the task's default per set (SetResult.trials has the count)
    horizon: int
    image_size: int
    sets: dict[str, SetResult]
    joint_limit_margin: float | None = None  # the joint-limit guard's margin (rad); None: effort clamp only
    ablation: str | None = None  # "blank" / "swap": the image the policy saw (see ImageAblation); None: the true one

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "sets"}
        d["sets"] = {k: v.to_dict() for k, v in self.sets.items()}
        return d

    def write_json(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**self.to_dict(), **(extra or {})}, indent=1))
        return path


def format_table(result: EvalResult) -> str:
    """Plain-text table: set, successes/trials, rate, 95% Wilson interval, distinct situations, mean final
    distance."""
    w = max([18] + [len(name) + 1 for name in result.sets])  # the OOD sets' names are longer
    lines = [f"{'set':<{w}}{'success':>10}{'rate':>9}   {'95% CI (Wilson)':<17}{'situations':>11}"
             f"{'final dist (cm)':>16}"]
    for name, s in result.sets.items():
        dist = 100 * float(np.mean(s.final_distance)) if s.final_distance else float("nan")
        lines.append(f"{name:<{w}}{f'{s.successes}/{s.trials}':>10}{100 * s.rate:>8.1f}%   "
                     f"[{100 * s.ci_low:5.1f}, {100 * s.ci_high:5.1f}]%  {s.situations:>10d}{dist:>16.2f}")
    if result.ablation:
        lines.append(f"(ablation: the policy saw the {result.ablation!r} image, not the true one)")
    return "\n".join(lines)


def trial_reset_seed(seed: int, condition_set: str, trial: int) -> int:
    """The reset seed of trial ``trial`` of ``condition_set``: a function of the set's name, not of its place
    in a call (before 2026-12-07 it was the place, so a set evaluated second drew other scenes than alone)."""
    return int(np.random.default_rng([int(seed), zlib.crc32(condition_set.encode()), int(trial)]).integers(2**31))


def default_trials(task: Any, condition_set: str) -> int:
    """The task's default trial count for a set (YAML ``trials``), else max(10, number of conditions)."""
    return int(task.set_trials.get(condition_set) or max(10, task.num_conditions(condition_set)))


def count_situations(task: Any, condition_set: str, conditions: list[int], seeds: list[int]) -> int:
    """Distinct situations among a set's trials: distinct (condition, seed) pairs where the reset draws
    something from the seed (a start perturbation, a random scene, an out-of-distribution family's draw, or
    listed distractors, which the seed jitters), else distinct conditions (a deterministic reset repeats the same situation)."""
    conds = task.condition_list(condition_set)
    keys = {(m, s) if (conds[m].perturbation > 0 or conds[m].random_scene is not None or conds[m].distractors
                       or getattr(conds[m], "ood", None) is not None)
            else (m, None) for m, s in zip(conditions, seeds, strict=True)}
    return len(keys)


class ImageAblation:
    """Replaces the image a policy sees (the vision ablation): ``blank`` a black image; ``swap`` the image of
    condition (m + 1) mod n of the same set with the same reset seed, rendered by a second simulator whose
    arm mirrors the real one (so only the scene, above all the target, differs)."""

    def __init__(self, kind: str, sim: Any):
        if kind not in ABLATIONS:
            raise ValueError(f"ablation {kind!r} unknown; expected one of {ABLATIONS}")
        self.kind, self.sim, self._other = kind, sim, None
        if kind == "swap":
            from gps_sim import ArmSim

            self._other = ArmSim(sim.task, image_size=sim.image_size, render_images=True, gravity=sim.gravity)

    def start(self, condition: int, condition_set: str, reset_seed: int) -> None:
        if self._other is not None:
            n = self.sim.num_conditions(condition_set)
            if n < 2:
                raise ValueError(f"the swap ablation needs >= 2 conditions in {condition_set!r}")
            self._other.reset((condition + 1) % n, seed=int(reset_seed), condition_set=condition_set)

    def image(self, image: np.ndarray | None) -> np.ndarray | None:
        if image is None:
            return None
        if self.kind == "blank":
            return np.zeros_like(image)
        self._other.set_joint_state(self.sim.joint_positions(), self.sim.joint_velocities())
        return self._other.render()

    def close(self) -> None:
        if self._other is not None:
            self._other.close()


def load_policy_for_eval(policy_or_path: GaussianPolicy | str | Path, policy_obs: str = "auto"
                         ) -> tuple[GaussianPolicy, str, str]:
    """(policy, what it observes, a name). ``policy_obs="auto"``: a CNN sees observations; an MLP's
    input is read from the run directory holding the weights (``algorithm.policy_obs``), else the full
    state x (the state-based MDGPS default). ``policy_or_path``: a policy file, a checkpoint or a run
    directory (its latest policy)."""
    if isinstance(policy_or_path, GaussianPolicy):
        policy, name, metrics = policy_or_path, "<in-memory policy>", None
    else:
        from gps_trainer.run_dir import policy_file

        path = policy_file(policy_or_path)
        policy, name = load_policy(path), str(path)
        metrics = path
    if policy_obs == "auto" and policy.observes:  # recorded with the policy
        policy_obs = policy.observes
    if policy_obs == "auto":
        if policy.uses_images:
            policy_obs = "observation"
        else:
            policy_obs = "state"
            if metrics is not None:
                from gps_trainer.run_dir import read_run

                try:
                    cfg, _ = read_run(metrics)
                    policy_obs = cfg.get("algorithm", {}).get("policy_obs", "state")
                except FileNotFoundError:  # a policy file outside any run directory
                    pass
    if policy_obs not in POLICY_OBS:
        raise ValueError(f"policy_obs {policy_obs!r} unknown; expected one of {POLICY_OBS} or 'auto'")
    if policy.uses_images and policy_obs != "observation":
        raise ValueError("a visuomotor policy sees observations")
    return policy.eval(), policy_obs, name


def run_trial(sim: Any, actor: Any, policy_obs: str, condition: int, condition_set: str, reset_seed: int,
              T: int, frames: list[tuple[np.ndarray, np.ndarray | None]] | None = None,
              safety: Any = None, ablation: ImageAblation | None = None) -> tuple[bool, float]:
    """One noise-free trial: reset, T steps of ``actor.act`` (torques clipped to the effort limits, or
    through ``safety.filter(u, q)``, e.g. :func:`gps_trainer.sim_sampler.safety_layer_for`), success and mean EE-point
    distance (m) at the end. With ``frames`` (a list), each step's (image, feature points or None) is
    appended (needs a rendering sim). ``ablation`` replaces the image the actor sees."""
    lim = np.asarray(sim.effort_limits, dtype=np.float64)
    ob = sim.reset(condition, seed=int(reset_seed), condition_set=condition_set)
    if ablation is not None:
        ablation.start(condition, condition_set, reset_seed)
    for _ in range(T):
        o = sim.state() if policy_obs == "state" else ob.config
        img = ob.image if actor.uses_images else None
        if ablation is not None:
            img = ablation.image(img)
        if frames is not None and isinstance(actor, GaussianPolicy) and actor.uses_images:
            u, pts = actor.act(o, img, return_features=True)
            frames.append((img, pts))
        else:
            u = actor.act(o, img)
            if frames is not None:
                frames.append((ob.image, None))
        if safety is not None:
            u = safety.filter(u, sim.joint_positions()).torque
        ob = sim.step(np.clip(u, -lim, lim))
    return bool(sim.is_success()), float(sim.mean_distance())


@dataclass
class _EvalWorkerSetup:
    """What an evaluation worker builds its simulator and actor from (pickled to it once)."""

    task: Any
    image_size: int
    render_images: bool
    actor: Any
    policy_obs: str
    horizon: int
    joint_limit_margin: float | None
    ablation: str | None
    gravity: bool


_WORKER: dict[str, Any] = {}  # an evaluation worker's simulator, actor, safety layer, ablation


def _init_eval_worker(setup: _EvalWorkerSetup) -> None:
    import torch

    from gps_sim import ArmSim

    torch.set_num_threads(1)
    sim = ArmSim(setup.task, image_size=setup.image_size, render_images=setup.render_images, gravity=setup.gravity)
    _WORKER.update(setup=setup, sim=sim,
                   safety=None if setup.joint_limit_margin is None else safety_layer_for(sim, setup.joint_limit_margin),
                   ablation=None if setup.ablation is None else ImageAblation(setup.ablation, sim))


def _eval_worker_trial(job: tuple[int, int, str, int]) -> tuple[int, tuple[bool, float]]:
    index, m, cset, reset_seed = job
    w, setup = _WORKER, _WORKER["setup"]
    return index, run_trial(w["sim"], setup.actor, setup.policy_obs, m, cset, reset_seed, setup.horizon,
                            safety=w["safety"], ablation=w["ablation"])


def _run_trials_in_workers(setup: _EvalWorkerSetup, trials: list[tuple[int, str, int, int, int]], workers: int
                           ) -> Any:
    """Yield (trial index, (success, final distance)) as the worker processes finish trials."""
    import multiprocessing

    jobs = [(index, m, cset, trial_seed) for index, (_, cset, _, m, trial_seed) in enumerate(trials)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, len(jobs)) or 1, initializer=_init_eval_worker, initargs=(setup,)) as pool:
        # one trial per task: trials differ in length (a visual trial renders distractors), so workers
        # that finish early take the next one
        yield from pool.imap_unordered(_eval_worker_trial, jobs, chunksize=1)


def evaluate_policy(
    policy_or_path: GaussianPolicy | str | Path,
    task: str = "reach",
    condition_sets: tuple[str, ...] | list[str] = CONDITION_SETS,
    trials_per_set: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    *,
    policy_obs: str = "auto",
    horizon: int | None = None,
    sim: Any = None,
    actor: Any = None,
    joint_limit_margin: float | None = None,
    ablation: str | None = None,
    progress: Progress | None = None,
    workers: int = 1,
) -> EvalResult:
    """Run the policy alone ``trials_per_set`` times on each condition set (conditions cycled; None: the
    task's default per set, :func:`default_trials`).

    ``image_size`` defaults to the policy's input size (64 for a state policy). ``sim`` may be given
    (an ``ArmSim`` of the task, rendering images if the policy needs them). ``actor`` replaces the
    policy as the thing that acts (anything with ``act(obs, image, noise)`` and ``uses_images``, e.g.
    the pose-prediction pipeline of :mod:`gps_trainer.baselines`); ``policy_or_path`` then only names it.
    ``joint_limit_margin`` (rad): also apply the controller's joint-limit guard (see the module
    docstring; 0.05 = config/controller.yaml); None: effort clamp only. ``ablation``: "blank" or "swap"
    (:class:`ImageAblation`; needs a policy that sees images). ``progress``: told each trial (set, trials
    done of all sets, successes).

    ``workers`` > 1 spreads the trials over that many processes ('spawn': MuJoCo's GL context and torch's
    thread pools do not survive a fork), each with its own simulator, the policy (or actor) pickled with
    its weights and inference precision, and one torch thread; the results come back in trial order.
    Every trial's situation is a function of (set, condition, reset seed) alone (``ArmSim.reset``) and
    the policy has no state between calls, so the result equals a one-process run at one torch thread
    (``--threads 1``) bit for bit (tested). ``sim`` must then be None (the workers build their own).
    """
    from gps_sim import ArmSim

    if actor is None:
        policy, policy_obs, name = load_policy_for_eval(policy_or_path, policy_obs)
    else:
        policy, name = actor, str(getattr(actor, "name", policy_or_path))
        policy_obs = "observation" if policy_obs == "auto" else policy_obs
    if trials_per_set is not None and trials_per_set < 1:
        raise ValueError("trials_per_set must be >= 1")
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    workers = int(workers)
    if workers > 1 and sim is not None:
        raise ValueError("workers > 1 build their own simulators: pass sim only with workers=1")
    if ablation is not None and (ablation not in ABLATIONS or not policy.uses_images):
        raise ValueError(f"ablation {ablation!r}: expected one of {ABLATIONS}, for a policy that sees images")
    if image_size is None:
        image_size = policy.image_shape[0] if getattr(policy, "image_shape", None) else 64
    own_sim = sim is None
    if own_sim:
        # with workers this one only lists the conditions: the workers render
        sim = ArmSim(task, image_size=image_size, render_images=bool(policy.uses_images) and workers == 1)
    T = int(horizon or sim.task.horizon)
    safety = None if joint_limit_margin is None else safety_layer_for(sim, joint_limit_margin)
    ablate = None if ablation is None or workers > 1 else ImageAblation(ablation, sim)
    sets: dict[str, SetResult] = {}
    try:
        missing = [cset for cset in condition_sets if sim.num_conditions(cset) == 0]
        if missing:  # before any trial: a typo in the last set must not cost the others' minutes
            raise ValueError(f"task {sim.task.name!r} has no {', '.join(map(repr, missing))} conditions")
        set_trials = [default_trials(sim.task, c) if trials_per_set is None else int(trials_per_set)
                      for c in condition_sets]
        # every trial (set index, set, trial index, condition, reset seed) before any runs: a trial's
        # situation depends on nothing else, so they may run in any order and in any process
        trials = [(k, cset, i, i % sim.num_conditions(cset), trial_reset_seed(seed, cset, i))
                  for k, cset in enumerate(condition_sets) for i in range(set_trials[k])]
        total = len(trials)
        if progress is not None:
            progress.restart(total, f"evaluating: 0/{total} trials")
        outcomes: list[tuple[bool, float] | None] = [None] * total
        done = 0
        set_done, set_successes = [0] * len(condition_sets), [0] * len(condition_sets)

        def record(index: int, outcome: tuple[bool, float]) -> None:
            nonlocal done
            outcomes[index] = outcome
            k, cset = trials[index][:2]
            done, set_done[k], set_successes[k] = done + 1, set_done[k] + 1, set_successes[k] + bool(outcome[0])
            if progress is not None:
                progress.update(done, f"evaluating: {done}/{total} trials ({cset} {set_done[k]}/{set_trials[k]}, "
                                      f"{set_successes[k]} successes)")

        if workers == 1:
            for index, (_, cset, _, m, trial_seed) in enumerate(trials):
                record(index, run_trial(sim, policy, policy_obs, m, cset, trial_seed, T, safety=safety,
                                        ablation=ablate))
        else:
            setup = _EvalWorkerSetup(sim.task, int(image_size), bool(policy.uses_images), policy, policy_obs, T,
                                     joint_limit_margin, ablation, sim.gravity)
            for index, outcome in _run_trials_in_workers(setup, trials, workers):
                record(index, outcome)
        for k, cset in enumerate(condition_sets):
            conds = sim.task.condition_list(cset)
            res = SetResult(cset, set_trials[k], 0, 0.0, 1.0)
            for index, (k_, _, _, m, trial_seed) in enumerate(trials):
                if k_ != k:
                    continue
                ok, dist = outcomes[index]
                res.success.append(bool(ok))
                res.conditions.append(m)
                res.reset_seeds.append(trial_seed)
                res.initial_target_positions.append([float(v) for v in conds[m].target_pose[:3]])
                res.final_distance.append(float(dist))
            res.successes = int(sum(res.success))
            res.ci_low, res.ci_high = wilson_interval(res.successes, res.trials)
            res.situations = count_situations(sim.task, cset, res.conditions, res.reset_seeds)
            sets[cset] = res
    finally:
        if ablate is not None:
            ablate.close()
        if own_sim:
            sim.close()
    return EvalResult(task=str(task), policy=name, policy_obs=policy_obs, seed=int(seed),
                      trials_per_set=None if trials_per_set is None else int(trials_per_set), horizon=T,
                      image_size=int(image_size), sets=sets,
                      joint_limit_margin=None if joint_limit_margin is None else float(joint_limit_margin),
                      ablation=ablation)
