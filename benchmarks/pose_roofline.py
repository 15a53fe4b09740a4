"""Pose pretraining against this machine's arithmetic peak (issue 23's "pose pretraining <= 3 min" target).

Counts the floating-point operations of one Adam step of the Table I recipe's pose regressor (batch 25,
64x64 images, the recipe's conv trunk) with torch's FlopCounterMode, times that step, and times a square
fp32 matrix product as the attainable peak, with 1 and 2 torch threads. Prints what the recipe's steps cost
at the step rate measured and at the peak: the lower bound on pose pretraining's wall time with every
operation at matmul speed.

Usage: python benchmarks/pose_roofline.py [--steps 3000]   (after `. scripts/setup.sh`). The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from gps_trainer.pose_pretraining import PosePretrainConfig, PoseRegressor


def best_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000, help="the recipe's Adam steps (scripts/table1.sh POSE)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20, help="timed steps per thread count (the best is kept)")
    args = ap.parse_args()

    cfg = PosePretrainConfig.from_dict({"image_size": args.image_size})
    torch.manual_seed(0)
    model = PoseRegressor(cfg.vision_config())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    images = torch.rand(cfg.batch_size, 3, args.image_size, args.image_size)
    targets = torch.rand(cfg.batch_size, 3)

    def adam_step() -> None:
        pred, _ = model(images)
        loss = ((pred - targets) ** 2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        adam_step()
    step_flop = counter.get_total_flops()
    a, b = torch.rand(1024, 1024), torch.rand(1024, 1024)
    print(f"pose regressor {cfg.vision_config().conv_filters} kernels {cfg.vision_config().conv_kernels}, "
          f"batch {cfg.batch_size}, {args.image_size}x{args.image_size}: {step_flop / 1e9:.2f} GFLOP per Adam step "
          f"(forward + backward, convolutions and matrix products)")
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_average": os.getloadavg()[0], "step_gflop": step_flop / 1e9, "steps": args.steps, "threads": {}}
    threads_before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        step_s = best_seconds(adam_step, args.repeats)
        peak = 2 * 1024 ** 3 / best_seconds(lambda: a @ b, 10) / 1e9
        achieved = step_flop / step_s / 1e9
        recipe_s = args.steps * step_s
        bound_s = args.steps * step_flop / (peak * 1e9)
        print(f"{threads} thread(s): step {step_s * 1e3:.0f} ms = {achieved:.0f} GFLOP/s; 1024^2 fp32 matmul "
              f"{peak:.0f} GFLOP/s (step at {achieved / peak:.0%} of it); {args.steps} steps {recipe_s / 60:.1f} min, "
              f"at matmul speed {bound_s / 60:.1f} min")
        result["threads"][threads] = {"step_s": step_s, "achieved_gflops": achieved, "matmul_gflops": peak,
                                      "recipe_min": recipe_s / 60, "bound_min": bound_s / 60}
    torch.set_num_threads(threads_before)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
