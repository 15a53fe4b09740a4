"""Visuomotor CNN speed: single-image inference latency and S-step training throughput.

Inference: ``GaussianPolicy.act`` on one uint8 image + a 32-d configuration (what the controller
calls each 20 Hz tick), at 64x64 and 240x240; p50/p99/max in ms after a warm-up.
Training: ``train_policy`` minibatch steps (batch 25; forward + backward + Adam on the full CNN),
samples/s, at both sizes. Prints a table; the last line is one JSON object.

    python benchmarks/policy_speed.py [--device cpu|cuda|auto] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from gps_controller.policies import VisuomotorConfig, count_parameters, make_visuomotor_policy
from gps_trainer.policy_opt import PolicyOptConfig, resolve_device, train_policy

D_O, D_U = 32, 7


def latency(size: int, reps: int, device: torch.device) -> dict[str, float]:
    pol = make_visuomotor_policy(VisuomotorConfig(config_dim=D_O, action_dim=D_U, image_height=size,
                                                  image_width=size), seed=0).to(device)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    obs = rng.normal(size=D_O)
    for _ in range(max(3, reps // 10)):
        pol.act(obs, img)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        pol.act(obs, img, noise=rng.standard_normal(D_U))
        times.append((time.perf_counter() - t) * 1e3)
    a = np.asarray(times)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max()), "reps": reps}


def throughput(size: int, steps: int, device: torch.device) -> dict[str, float]:
    pol = make_visuomotor_policy(VisuomotorConfig(config_dim=D_O, action_dim=D_U, image_height=size,
                                                  image_width=size), seed=0)
    rng = np.random.default_rng(1)
    m = 100
    imgs = rng.integers(0, 256, size=(m, size, size, 3), dtype=np.uint8)
    obs, u = rng.normal(size=(m, D_O)), rng.normal(size=(m, D_U))
    prec = np.tile(np.eye(D_U), (m, 1, 1))
    cfg = PolicyOptConfig(iterations=1, batch_size=25, device=str(device), evaluate_full_loss=False)
    train_policy(pol, obs, imgs, u, prec, cfg)  # warm-up (allocations, normalization)
    cfg = PolicyOptConfig(iterations=steps, batch_size=25, device=str(device), evaluate_full_loss=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    train_policy(pol, obs, imgs, u, prec, cfg)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    return {"samples_per_s": steps * 25 / wall, "step_ms": wall / steps * 1e3, "steps": steps}


def mdgps_iteration(s_step_iterations: int, samples: int, iterations: int = 2) -> dict[str, float]:
    """Wall time of visuomotor MDGPS iterations on reach (64x64 CNN, 4 conditions), split into sampling
    (rollouts with rendering), dynamics (GMM prior + fit), C-step (policy linearization + LQR eta search)
    and S-step (train_policy). The last iteration is reported (the first also runs the catch-up S-step)."""
    import tempfile

    from gps_trainer.config import load_experiment
    from gps_trainer.procedure import train_in_simulation

    cfg = load_experiment("config/experiments/reach_mdgps_visual.yaml", {
        "iterations": iterations, "samples_per_condition": samples,
        "algorithm.policy_opt.iterations": s_step_iterations, "algorithm.policy_opt.device": "cpu"})
    with tempfile.TemporaryDirectory() as out:
        rows = train_in_simulation(cfg, out).rows
    r = rows[-1]
    out = {"sampling_s": r["sampling_s"], "dynamics_s": r["dynamics_s"],
           "c_step_s": r["policy_fit_s"] + r["c_step_s"], "s_step_s": r["s_step_s"],
           "policy_fit_s": r["policy_fit_s"], "samples_per_condition": samples, "conditions": cfg.conditions,
           "s_step_iterations": s_step_iterations}
    out["total_s"] = out["sampling_s"] + out["dynamics_s"] + out["c_step_s"] + out["s_step_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0 = torch default; 1 avoids oversubscription on a shared CPU)")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--mdgps", action="store_true", help="also time one visuomotor MDGPS iteration on reach")
    ap.add_argument("--mdgps-s-iterations", type=int, default=1000, help="Adam steps per S-step")
    ap.add_argument("--mdgps-samples", type=int, default=5, help="samples per condition")
    ap.add_argument("--skip-cnn", action="store_true", help="skip the inference/throughput part")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    q = args.quick
    sizes = {64: {"lat": 50 if q else 300, "steps": 5 if q else 30},
             240: {"lat": 10 if q else 60, "steps": 2 if q else 6}}
    if device.type == "cuda":
        sizes[240]["steps"] = 10 if q else 60
    result = {"benchmark": "policy_speed", "device": str(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "num_parameters": count_parameters(make_visuomotor_policy(
                  VisuomotorConfig(config_dim=39, action_dim=7, image_height=240, image_width=240))),
              "inference": {}, "training": {}}
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'size':>8} {'act p50 ms':>11} {'act p99 ms':>11} {'act max ms':>11} {'train samples/s':>16} "
          f"{'step ms (b=25)':>15}")
    for size, n in ({} if args.skip_cnn else sizes).items():
        lat = latency(size, n["lat"], device)
        thr = throughput(size, n["steps"], device)
        result["inference"][f"{size}x{size}"] = lat
        result["training"][f"{size}x{size}"] = thr
        print(f"{size:>5}x{size:<3}{lat['p50_ms']:>11.2f} {lat['p99_ms']:>11.2f} {lat['max_ms']:>11.2f} "
              f"{thr['samples_per_s']:>16.1f} {thr['step_ms']:>15.1f}")
    if args.mdgps:
        it = mdgps_iteration(args.mdgps_s_iterations, args.mdgps_samples)
        result["mdgps_iteration_64x64"] = it
        print("visuomotor MDGPS iteration on reach (64x64): " + ", ".join(
            f"{k} {v:.1f}" for k, v in it.items() if k.endswith("_s")))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
