"""Pose pretraining with / without domain randomization and augmentation (issue 12 section 2), judged on
validation images only: plain scenes and random distractor scenes, drawn with seeds no run trains on.

usage: flock /tmp/gps-heavy.lock python scripts/pose_dr_validation.py TASK ITERATIONS NUM_TRAIN [VARIANT,...]
Writes the weights and validation_<task>_<variants>.json to $POSE_DR_OUT (default runs/pose_dr);
$POSE_DR_NET (JSON) overrides the network sizes, e.g. '{"conv_filters": [32, 16, 16]}'."""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gps_sim import ArmSim
from gps_trainer.pose_pretraining import (
    PosePretrainConfig,
    _mean_error_cm,
    collect_pose_images,
    load_pose_regressor,
    pose_target_box,
    pretrain_pose,
)

torch.set_num_threads(1)
OUT = Path(os.environ.get("POSE_DR_OUT", "runs/pose_dr"))
OUT.mkdir(parents=True, exist_ok=True)
task, size, iters, ntrain = sys.argv[1], 64, int(sys.argv[2]), int(sys.argv[3])
variants = {"base": {}, "scenes50": {"scene_randomization": 0.5},
            "scenes50_aug": {"scene_randomization": 0.5, "augment_shift": 2, "augment_color": 0.15},
            "scenes100": {"scene_randomization": 1.0},
            "scenes100_cos": {"scene_randomization": 1.0, "lr_schedule": "cosine"}}
chosen = sys.argv[4].split(",") if len(sys.argv) > 4 else list(variants)
sim = ArmSim(task, image_size=size, render_images=True)
cfg0 = PosePretrainConfig.from_dict({"task": task, "image_size": size})
box = pose_target_box(cfg0, sim.task)
val = {}
for name, frac, seed in (("plain", 0.0, 9001), ("scenes", 1.0, 9002)):
    val[name] = collect_pose_images(sim, 150, np.random.default_rng(seed), box, "train", 0.15, frac)
out = {}
for v in chosen:
    t0 = time.time()
    cfg = {"task": task, "image_size": size, "num_train": ntrain, "num_test": 0, "iterations": iters, "seed": 0,
           "device": "cpu", "output": str(OUT / f"pose_{task}_{v}.safetensors"), "log_every": 250,
           "net": json.loads(os.environ.get("POSE_DR_NET", "{}")), **variants[v]}
    m = pretrain_pose(cfg, sim)
    model = load_pose_regressor(cfg["output"])
    errs = {k: _mean_error_cm(model, torch.as_tensor(im), pos, "cpu") for k, (im, pos) in val.items()}
    out[v] = {"config": variants[v], "train_error_cm": m["train_error_cm"], "val_error_cm": errs,
              "wall_s": time.time() - t0}
    print(v, json.dumps(out[v]), flush=True)
(OUT / f"validation_{task}_{'_'.join(chosen)}.json").write_text(json.dumps(out, indent=1))
