"""Visuomotor CNN speed per precision (fp32, bf16): single-image latency, batched inference, S-step steps.

Inference: ``GaussianPolicy.act`` on one uint8 image + a 32-d configuration (what the controller
calls each 20 Hz tick), at 64x64 and 240x240; p50/p99/max in ms after a warm-up, and the largest action
difference against fp32 on the same inputs. Batched: ``GaussianPolicy.predict`` on 256 images (what the
C-step's policy linearization does), ms per image. Training: ``train_policy`` minibatch steps (batch 25;
forward + backward + Adam on the full CNN), samples/s, at both sizes, with the forward/backward under
the given precision. Prints a table; the last line is one JSON object (with the CPU's bf16 flags and load).

    python benchmarks/policy_speed.py [--device cpu|cuda|auto] [--threads N] [--precisions fp32,bf16] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from gps_controller.policies import (
    VisuomotorConfig,
    count_parameters,
    cpu_supports_bf16,
    make_visuomotor_policy,
)
from gps_trainer.policy_opt import PolicyOptConfig, resolve_device, train_policy

D_O, D_U = 32, 7


def _policy(size: int, device: torch.device, precision: str = "fp32"):
    pol = make_visuomotor_policy(VisuomotorConfig(config_dim=D_O, action_dim=D_U, image_height=size,
                                                  image_width=size), seed=0).to(device)
    pol.set_inference_precision(precision)
    return pol


def latency(size: int, reps: int, device: torch.device, precision: str) -> dict[str, float]:
    pol = _policy(size, device, precision)
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
    # Accuracy against fp32 on 16 fixed inputs.
    imgs = rng.integers(0, 256, size=(16, size, size, 3), dtype=np.uint8)
    obs16 = rng.normal(size=(16, D_O))
    ref, _ = pol.predict(obs16, imgs, precision="fp32")
    out, _ = pol.predict(obs16, imgs)
    a = np.asarray(times)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max()), "reps": reps, "max_action_diff_vs_fp32": float(np.abs(out - ref).max()),
            "action_scale": float(np.abs(ref).max())}


def batched(size: int, device: torch.device, precision: str, n: int = 256) -> dict[str, float]:
    pol = _policy(size, device, precision)
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    obs = rng.normal(size=(n, D_O))
    pol.predict(obs[:8], imgs[:8])
    walls = []
    for _ in range(3):
        t = time.perf_counter()
        pol.predict(obs, imgs)
        walls.append(time.perf_counter() - t)
    return {"ms_per_image": min(walls) / n * 1e3, "images": n}


def throughput(size: int, steps: int, device: torch.device, precision: str) -> dict[str, float]:
    pol = _policy(size, torch.device("cpu"))
    rng = np.random.default_rng(1)
    m = 100
    imgs = rng.integers(0, 256, size=(m, size, size, 3), dtype=np.uint8)
    obs, u = rng.normal(size=(m, D_O)), rng.normal(size=(m, D_U))
    prec = np.tile(np.eye(D_U), (m, 1, 1))

    def cfg(n):
        return PolicyOptConfig(iterations=n, batch_size=25, device=str(device), evaluate_full_loss=False,
                               train_precision=precision)

    train_policy(pol, obs, imgs, u, prec, cfg(1))  # warm-up (allocations, normalization)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    train_policy(pol, obs, imgs, u, prec, cfg(steps))
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
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16, auto")
    ap.add_argument("--mdgps", action="store_true", help="also time one visuomotor MDGPS iteration on reach")
    ap.add_argument("--mdgps-s-iterations", type=int, default=1000, help="Adam steps per S-step")
    ap.add_argument("--mdgps-samples", type=int, default=5, help="samples per condition")
    ap.add_argument("--skip-cnn", action="store_true", help="skip the inference/throughput part")
    ap.add_argument("--skip-training", action="store_true", help="inference only")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    q = args.quick
    sizes = {64: {"lat": 50 if q else 300, "steps": 5 if q else 30},
             240: {"lat": 30 if q else 300, "steps": 2 if q else 6}}
    if device.type == "cuda":
        sizes[240]["steps"] = 10 if q else 60
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    result = {"benchmark": "policy_speed", "device": str(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "cpu_native_bf16": cpu_supports_bf16(),
              "cpu_bf16_flags": {k: bool(v) for k, v in torch.cpu.get_capabilities().items()
                                 if "bf16" in k or "amx" in k or k == "avx512_vnni"},
              "load_avg_before": list(os.getloadavg()),
              "num_parameters": count_parameters(make_visuomotor_policy(
                  VisuomotorConfig(config_dim=39, action_dim=7, image_height=240, image_width=240))),
              "inference": {}, "batched_inference": {}, "training": {}}
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"native bf16: {result['cpu_native_bf16']}, load {result['load_avg_before']}")
    print(f"{'size':>8} {'prec':>5} {'act p50 ms':>11} {'act p99 ms':>11} {'act max ms':>11} {'max |du|':>9} "
          f"{'batch ms/img':>13} {'train samples/s':>16} {'step ms (b=25)':>15}")
    for size, n in ({} if args.skip_cnn else sizes).items():
        for precision in precisions:
            key = f"{size}x{size}/{precision}"
            lat = latency(size, n["lat"], device, precision)
            bat = batched(size, device, precision, 256 if size <= 64 else 64)
            thr = None if args.skip_training else throughput(size, n["steps"], device, precision)
            result["inference"][key], result["batched_inference"][key] = lat, bat
            if thr is not None:
                result["training"][key] = thr
            tr = "" if thr is None else f"{thr['samples_per_s']:>16.1f} {thr['step_ms']:>15.1f}"
            print(f"{size:>5}x{size:<3}{precision:>5} {lat['p50_ms']:>11.2f} {lat['p99_ms']:>11.2f} "
                  f"{lat['max_ms']:>11.2f} {lat['max_action_diff_vs_fp32']:>9.1e} {bat['ms_per_image']:>13.3f} {tr}")
    result["load_avg_after"] = list(os.getloadavg())
    if args.mdgps:
        it = mdgps_iteration(args.mdgps_s_iterations, args.mdgps_samples)
        result["mdgps_iteration_64x64"] = it
        print("visuomotor MDGPS iteration on reach (64x64): " + ", ".join(
            f"{k} {v:.1f}" for k, v in it.items() if k.endswith("_s")))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
