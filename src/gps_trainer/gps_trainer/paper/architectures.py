"""The architecture comparison ("network architecture vs test error (cm)"): target-pose regression
error of four vision networks that share the same convolutional trunk, trained on the same images
with the same optimizer, batch size, step count and seed.

- ``spatial_softmax``: conv -> spatial softmax -> expected positions (feature points, 2K numbers) ->
  linear -> xyz. The paper's architecture; this is :class:`gps_trainer.pose_pretraining.PoseRegressor`.
- ``softmax_fc``: conv -> spatial softmax (per-channel distribution over pixels) -> a *learned* fully
  connected layer to 2K units (ReLU) -> linear -> xyz. The expectation is replaced by learned weights.
- ``fc``: conv -> ReLU -> fully connected to 2K units (ReLU) -> linear -> xyz.
- ``maxpool_fc``: conv with 2x2 max-pooling after the 2nd and 3rd convolution -> ReLU -> fully
  connected to 2K units (ReLU) -> linear -> xyz.

All four regress the target position normalized by the training set's mean and std, and report the
mean Euclidean error (cm) on held-out images (and its std across images), next to the error of always
predicting the training mean.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gps_controller.policies.neural import VisuomotorConfig, images_to_tensor
from gps_trainer.policy_opt import resolve_device
from gps_trainer.pose_pretraining import (
    PosePretrainConfig,
    PoseRegressor,
    collect_pose_dataset,
    train_pose_regressor,
)

__all__ = ["ARCHITECTURES", "ARCHITECTURE_LABELS", "make_pose_network", "ConvFCRegressor",
           "pose_errors_cm", "compare_architectures", "collect_architecture_data", "run_architecture_table"]

ARCHITECTURES = ("spatial_softmax", "softmax_fc", "fc", "maxpool_fc")
ARCHITECTURE_LABELS = {
    "spatial_softmax": "softmax + feature points (ours)",
    "softmax_fc": "softmax + fully connected",
    "fc": "fully connected",
    "maxpool_fc": "max-pooling + fully connected",
}


class ConvFCRegressor(nn.Module):
    """The shared conv trunk followed by a fully connected pose head (variants ``softmax_fc``, ``fc``,
    ``maxpool_fc``). Same interface as ``PoseRegressor``: forward(image) -> (xyz, features)."""

    def __init__(self, cfg: VisuomotorConfig, variant: str):
        super().__init__()
        if variant not in ("softmax_fc", "fc", "maxpool_fc"):
            raise ValueError(f"unknown fully connected variant {variant!r}")
        self.variant = variant
        chans = [cfg.image_channels, *cfg.conv_filters]
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=k // 2)
            for cin, cout, k, s in zip(chans[:-1], chans[1:], cfg.conv_kernels, cfg.conv_strides, strict=True))
        n = len(self.convs)
        # max-pooling after the last two convolutions (after every one when there are fewer than 2)
        self.pool_after = set(range(max(0, n - 2), n)) if variant == "maxpool_fc" else set()
        h, w = cfg.feature_map_size()
        for _ in self.pool_after:
            h, w = max(1, h // 2), max(1, w // 2)
        self.map_size = (h, w)
        k = cfg.num_feature_points
        self.fc = nn.Linear(cfg.conv_filters[-1] * h * w, 2 * k)
        self.head = nn.Linear(2 * k, 3)
        self.register_buffer("pose_mean", torch.zeros(3))
        self.register_buffer("pose_std", torch.ones(3))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < last or self.variant != "softmax_fc":
                x = torch.relu(x)
            if i in self.pool_after:
                x = nn.functional.max_pool2d(x, 2, ceil_mode=False) if min(x.shape[-2:]) >= 2 else x
        if self.variant == "softmax_fc":
            b, c, h, w = x.shape
            x = torch.softmax(x.reshape(b, c, h * w), dim=-1)
        feats = torch.relu(self.fc(x.reshape(x.shape[0], -1)))
        return self.head(feats) * self.pose_std + self.pose_mean, feats


def make_pose_network(name: str, cfg: VisuomotorConfig, seed: int = 0) -> nn.Module:
    """One of ARCHITECTURES, initial weights drawn from ``seed`` (global torch RNG untouched)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; expected one of {ARCHITECTURES}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return PoseRegressor(cfg) if name == "spatial_softmax" else ConvFCRegressor(cfg, name)


def pose_errors_cm(model: nn.Module, images: np.ndarray, positions: np.ndarray,
                   device: torch.device | str = "cpu", batch: int = 128) -> np.ndarray:
    """Per-image Euclidean error (cm) of the model's position predictions."""
    model.eval()
    preds = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            preds.append(model(images_to_tensor(images[s:s + batch], device))[0].double().cpu().numpy())
    return np.linalg.norm(np.concatenate(preds) - np.asarray(positions, float), axis=1) * 100.0


def compare_architectures(train_images: np.ndarray, train_positions: np.ndarray, test_images: np.ndarray,
                          test_positions: np.ndarray, cfg: PosePretrainConfig,
                          architectures: tuple[str, ...] = ARCHITECTURES,
                          progress: Any = None) -> dict[str, Any]:
    """Train every architecture on the same images (same steps, batch, learning rate, seed) and return
    {"architectures": {name: {test_error_cm, test_error_std_cm, train_error_cm, parameters, wall_time_s}},
    "baseline_mean_error_cm": ...}."""
    device = resolve_device(cfg.device)
    vis = cfg.vision_config()
    out: dict[str, Any] = {"architectures": {}}
    for name in architectures:
        t0 = time.perf_counter()
        model = make_pose_network(name, vis, cfg.seed)
        train_pose_regressor(model, train_images, train_positions, dataclasses.replace(cfg, log_every=max(1, cfg.iterations)))
        te = pose_errors_cm(model, test_images, test_positions, device)
        tr = pose_errors_cm(model, train_images, train_positions, device)
        out["architectures"][name] = {
            "label": ARCHITECTURE_LABELS[name],
            "test_error_cm": float(te.mean()), "test_error_std_cm": float(te.std()),
            "train_error_cm": float(tr.mean()),
            "parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
            "wall_time_s": time.perf_counter() - t0,
        }
        if progress is not None:
            progress(name, out["architectures"][name])
    base = np.linalg.norm(np.asarray(test_positions) - np.asarray(train_positions).mean(0), axis=1) * 100.0
    out["baseline_mean_error_cm"] = float(base.mean())
    return out


def collect_architecture_data(cfg: PosePretrainConfig, sim: Any = None
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The images pose pretraining uses (same seed, same target box), split into train and test."""
    return collect_pose_dataset(cfg, sim)


def run_architecture_table(cfg: PosePretrainConfig | dict[str, Any], output: str | Path | None = None,
                           architectures: tuple[str, ...] = ARCHITECTURES, verbose: bool = False,
                           command: str = "") -> dict[str, Any]:
    """Collect the images once, compare the architectures, write ``output`` (JSON) if given."""
    cfg = cfg if isinstance(cfg, PosePretrainConfig) else PosePretrainConfig.from_dict(cfg)
    t0 = time.perf_counter()
    data = collect_architecture_data(cfg)

    def progress(name: str, row: dict[str, Any]) -> None:
        if verbose:
            print(f"{name:<16} test error {row['test_error_cm']:.2f} +- {row['test_error_std_cm']:.2f} cm "
                  f"({row['wall_time_s']:.0f} s)", flush=True)

    res = compare_architectures(*data, cfg, architectures, progress)
    res.update(config=dataclasses.asdict(cfg), wall_time_s=time.perf_counter() - t0, command=command)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(res, indent=1, default=lambda v: None if v is math.nan else str(v)))
    return res


def main(argv: list[str] | None = None) -> int:
    """``python -m gps_trainer.paper.architectures [--config FILE] [--out JSON] [key=value ...]`` (keys of
    PosePretrainConfig; defaults from config/policy/pose_pretrain.yaml's section when --config is given)."""
    import argparse
    import shlex
    import sys

    from gps_trainer.config import parse_overrides
    from gps_trainer.config_schema import arg_int
    from gps_trainer.policy_opt import load_yaml_section

    ap = argparse.ArgumentParser(prog="gps_trainer.paper.architectures", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML with a pose_pretrain section")
    ap.add_argument("--out", default="runs/results/architectures.json")
    ap.add_argument("--threads", type=arg_int(1, 256), default=1)
    ap.add_argument("--only", nargs="*", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    ap.add_argument("overrides", nargs="*", help="key=value (YAML values)")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    data = load_yaml_section(a.config, "pose_pretrain") if a.config else {}
    try:
        data.update(parse_overrides(a.overrides))
    except ValueError as e:
        ap.error(str(e))
    data["output"] = ""
    command = "python -m gps_trainer.paper.architectures " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    res = run_architecture_table(data, a.out, tuple(a.only), verbose=True, command=command)
    print(json.dumps({k: v["test_error_cm"] for k, v in res["architectures"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
