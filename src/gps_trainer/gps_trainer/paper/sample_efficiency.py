"""Sample efficiency against model-free RL: environment steps to reach 90% success.

Model-free side: Stable-Baselines3 SAC and PPO on the gymnasium environment of the same task
(``GpsReach-v0``, state observations x, reward = -cost), several seeds. Every ``eval_every``
environment steps the deterministic policy runs ``eval_episodes`` episodes from the training
conditions (cycled); the success rate (``info["is_success"]`` at the last step) is recorded against
the number of environment steps used for learning so far (evaluation episodes are not counted, as
for GPS).

GPS side: a state-based MDGPS run directory (``python -m gps_trainer.procedure gps ...``): after
iteration i it has used (i + 1) x conditions x samples_per_condition x T environment steps; its
success rate is the policy alone on the training conditions (``success_rate``).

Long runs are resumable: each (algorithm, seed) writes <out>/<algo>_seed<s>/progress.json and its
model (and SAC's replay buffer) after every evaluation; running the same command again continues
from there. Progress lines go to stdout.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ALGORITHMS", "steps_to_threshold", "evaluate_success", "run_model_free", "gps_curve",
           "load_model_free_curves", "summarize"]

ALGORITHMS = ("sac", "ppo")


def steps_to_threshold(curve: list[tuple[int, float]], threshold: float = 0.9) -> int | None:
    """First environment-step count at which the success rate is >= threshold; None if never."""
    for steps, rate in curve:
        if rate >= threshold - 1e-12:
            return int(steps)
    return None


def evaluate_success(model: Any, env: Any, episodes: int, seed: int) -> float:
    """Deterministic policy from the training conditions (cycled); fraction successful at the end."""
    n_cond = env.unwrapped.sim.num_conditions("train")
    wins = 0
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e, options={"condition": e % n_cond, "condition_set": "train"})
        info: dict[str, Any] = {}
        done = False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, term, trunc, info = env.step(action)
            done = term or trunc
        wins += bool(info.get("is_success", False))
    return wins / max(episodes, 1)


def _make_model(algo: str, env: Any, seed: int, hyper: dict[str, Any]) -> Any:
    from stable_baselines3 import PPO, SAC

    kwargs = dict(hyper)
    if algo == "sac":
        return SAC("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
    if algo == "ppo":
        return PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
    raise ValueError(f"unknown algorithm {algo!r}; expected one of {ALGORITHMS}")


def run_model_free(algo: str, seed: int, total_steps: int, eval_every: int, out_dir: str | Path,
                   *, env_id: str = "GpsReach-v0", eval_episodes: int = 8, threshold: float = 0.9,
                   stop_at_threshold: bool = False, hyper: dict[str, Any] | None = None,
                   quiet: bool = False, command: str = "") -> dict[str, Any]:
    """Train ``algo`` for ``total_steps`` environment steps (resuming from ``out_dir`` if it holds a
    run), evaluating every ``eval_every`` steps. Returns the progress dict (also in progress.json)."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO, SAC

    import gps_sim.gym_env  # noqa: F401  (registers the environments)

    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prog_path, model_path, buf_path = out / "progress.json", out / "model.zip", out / "replay_buffer.pkl"
    hyper = dict(hyper or {})
    if algo == "ppo":
        hyper.setdefault("n_steps", 1024)
    env = gym.make(env_id)
    eval_env = gym.make(env_id)
    progress: dict[str, Any] = {"algorithm": algo, "seed": seed, "env_id": env_id, "total_steps": total_steps,
                                "eval_every": eval_every, "eval_episodes": eval_episodes, "threshold": threshold,
                                "hyperparameters": hyper, "evaluations": [], "done": False, "command": command}
    if prog_path.exists() and model_path.exists():
        old = json.loads(prog_path.read_text())
        progress["evaluations"] = old.get("evaluations", [])
        progress["wall_time_s"] = old.get("wall_time_s", 0.0)
        cls = SAC if algo == "sac" else PPO
        model = cls.load(model_path, env=env, device="cpu")
        if algo == "sac" and buf_path.exists():
            model.load_replay_buffer(buf_path)
    else:
        model = _make_model(algo, env, seed, hyper)
        progress["wall_time_s"] = 0.0
    steps = int(model.num_timesteps)
    t_start = time.perf_counter() - float(progress["wall_time_s"])
    try:
        while steps < total_steps:
            if stop_at_threshold and steps_to_threshold(
                    [(e["env_steps"], e["success_rate"]) for e in progress["evaluations"]], threshold) is not None:
                break
            chunk = min(eval_every, total_steps - steps)
            model.learn(chunk, reset_num_timesteps=False, progress_bar=False)
            steps = int(model.num_timesteps)
            rate = evaluate_success(model, eval_env, eval_episodes, seed=10_000 * (seed + 1) + steps)
            progress["evaluations"].append({"env_steps": steps, "success_rate": rate,
                                            "wall_time_s": time.perf_counter() - t_start})
            progress["wall_time_s"] = time.perf_counter() - t_start
            model.save(model_path)
            if algo == "sac":
                model.save_replay_buffer(buf_path)
            _write(prog_path, progress)
            if not quiet:
                print(f"[{algo} seed {seed}] {steps}/{total_steps} env steps ({100 * steps / total_steps:.0f}%): "
                      f"success {100 * rate:.0f}%  ({progress['wall_time_s']:.0f} s)", flush=True)
        progress["done"] = True
        curve = [(e["env_steps"], e["success_rate"]) for e in progress["evaluations"]]
        progress["steps_to_threshold"] = steps_to_threshold(curve, threshold)
        _write(prog_path, progress)
    finally:
        env.close()
        eval_env.close()
    return progress


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def gps_curve(metrics_path: str | Path) -> dict[str, Any]:
    """(env steps, policy success) per iteration of a GPS run (its directory, or a file in it)."""
    from gps_trainer.run_dir import read_run

    cfg, rows = read_run(metrics_path)
    conds = int(cfg.get("conditions", 4))
    samples = int(cfg.get("samples_per_condition", 5))
    T = cfg.get("horizon")
    if not T:
        from gps_core.tasks import load_task

        T = load_task(cfg.get("task", "reach")).horizon
    per_iter = conds * samples * int(T)
    curve = [((i + 1) * per_iter, float(r.get("success_rate", math.nan))) for i, r in enumerate(rows)]
    return {"steps_per_iteration": per_iter, "conditions": conds, "samples_per_condition": samples, "T": int(T),
            "curve": curve, "cost": [float(np.mean(r.get("cost_per_condition", [math.nan]))) for r in rows],
            "policy_cost": [float(r.get("policy_cost", math.nan)) for r in rows],
            "algorithm": cfg.get("algorithm", {}).get("type", "mdgps"), "config": cfg}


def load_model_free_curves(root: str | Path) -> list[dict[str, Any]]:
    """Every <root>/<algo>_seed<s>/progress.json, sorted by algorithm and seed."""
    runs = []
    for p in sorted(Path(root).glob("*_seed*/progress.json")):
        runs.append(json.loads(p.read_text()))
    return sorted(runs, key=lambda r: (r["algorithm"], r["seed"]))


def summarize(model_free: list[dict[str, Any]], gps: dict[str, Any] | None, threshold: float = 0.9
              ) -> list[dict[str, Any]]:
    """One row per run: method, seed, budget used, steps to threshold (None = not reached), final rate."""
    rows = []
    for r in model_free:
        curve = [(e["env_steps"], e["success_rate"]) for e in r["evaluations"]]
        rows.append({"method": r["algorithm"].upper(), "seed": r["seed"],
                     "budget": curve[-1][0] if curve else 0, "planned_budget": r["total_steps"],
                     "steps_to_threshold": steps_to_threshold(curve, threshold),
                     "final_success": curve[-1][1] if curve else math.nan, "done": r.get("done", False),
                     "eval_every": r.get("eval_every"), "eval_episodes": r.get("eval_episodes")})
    if gps is not None:
        curve = gps["curve"]
        rows.append({"method": f"GPS ({gps['algorithm'].upper()}, state)", "seed": gps["config"].get("seed", 0),
                     "budget": curve[-1][0] if curve else 0, "planned_budget": curve[-1][0] if curve else 0,
                     "steps_to_threshold": steps_to_threshold(curve, threshold),
                     "final_success": curve[-1][1] if curve else math.nan, "done": True,
                     "eval_every": gps["steps_per_iteration"], "eval_episodes": gps["conditions"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m gps_trainer.paper.sample_efficiency --algos sac ppo --seeds 0 1 --steps 50000 --eval-every 5000``"""
    import argparse
    import shlex
    import sys

    from gps_trainer.config_schema import MAX_SEED, arg_int

    ap = argparse.ArgumentParser(prog="gps_trainer.paper.sample_efficiency", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algos", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    ap.add_argument("--seeds", nargs="+", type=arg_int(0, MAX_SEED, "32 bits"), default=[0, 1])
    ap.add_argument("--steps", type=arg_int(1, 100_000_000), default=50_000, help="environment-step budget per run")
    ap.add_argument("--eval-every", type=arg_int(1, 100_000_000), default=5_000)
    ap.add_argument("--eval-episodes", type=arg_int(1, 100_000), default=8)
    ap.add_argument("--env", default="GpsReach-v0")
    ap.add_argument("--out", default="runs/results/model_free")
    ap.add_argument("--stop-at-threshold", action="store_true", help="stop a run once it reaches 90%%")
    a = ap.parse_args(argv)
    command = "python -m gps_trainer.paper.sample_efficiency " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    for algo in a.algos:
        for seed in a.seeds:
            p = run_model_free(algo, seed, a.steps, a.eval_every, Path(a.out) / f"{algo}_seed{seed}",
                               env_id=a.env, eval_episodes=a.eval_episodes, stop_at_threshold=a.stop_at_threshold,
                               command=command)
            reached = p["steps_to_threshold"]
            print(f"{algo} seed {seed}: " + (f"90% after {reached} env steps" if reached is not None
                                              else f"90% not reached within {p['evaluations'][-1]['env_steps']} steps"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
