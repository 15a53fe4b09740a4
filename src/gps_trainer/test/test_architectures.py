"""The architecture comparison trains all four pose networks on the same tiny data set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gps_trainer.paper.architectures import (
    ARCHITECTURES,
    ConvFCRegressor,
    compare_architectures,
    make_pose_network,
)
from gps_trainer.pose_pretraining import PosePretrainConfig

SMALL_NET = {"conv_filters": [4, 4, 4], "conv_kernels": [3, 3, 3], "conv_strides": [2, 1, 1]}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _dot_images(n: int, rng: np.random.Generator, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A bright square on a dark background; its pixel position encodes the target's x, y (z fixed)."""
    pos = np.column_stack([rng.uniform(0.5, 0.65, n), rng.uniform(-0.3, -0.1, n), np.full(n, 0.475)])
    imgs = np.full((n, size, size, 3), 20, np.uint8)
    for i, (x, y, _) in enumerate(pos):
        r = int((x - 0.5) / 0.15 * (size - 3))
        c = int((y + 0.3) / 0.2 * (size - 3))
        imgs[i, r:r + 3, c:c + 3] = (230, 40, 30)
    return imgs, pos


def test_all_four_architectures_train_on_the_same_data():
    rng = np.random.default_rng(0)
    tr_img, tr_pos = _dot_images(40, rng)
    te_img, te_pos = _dot_images(12, rng)
    cfg = PosePretrainConfig(image_size=16, iterations=30, batch_size=10, learning_rate=3e-3, device="cpu",
                             output="", net=SMALL_NET)
    res = compare_architectures(tr_img, tr_pos, te_img, te_pos, cfg)
    rows = res["architectures"]
    assert list(rows) == list(ARCHITECTURES)
    errs = [rows[a]["test_error_cm"] for a in ARCHITECTURES]
    assert all(math.isfinite(e) and e > 0 for e in errs)
    assert math.isfinite(res["baseline_mean_error_cm"])
    # different heads on the same trunk: parameter counts differ, the conv trunk's count is shared
    params = {a: rows[a]["parameters"] for a in ARCHITECTURES}
    assert len(set(params.values())) >= 3
    # same seed, same data -> same numbers (by construction: same process, shapes and thread count)
    again = compare_architectures(tr_img, tr_pos, te_img, te_pos, cfg, architectures=("maxpool_fc",))
    assert again["architectures"]["maxpool_fc"]["test_error_cm"] == pytest.approx(rows["maxpool_fc"]["test_error_cm"])


def test_variants_share_the_conv_trunk_shapes():
    cfg = PosePretrainConfig(image_size=16, net=SMALL_NET).vision_config()
    nets = {a: make_pose_network(a, cfg, seed=1) for a in ARCHITECTURES}
    conv_shapes = {a: [tuple(p.shape) for n, p in m.named_parameters() if "convs" in n] for a, m in nets.items()}
    assert all(s == conv_shapes["spatial_softmax"] for s in conv_shapes.values())
    img = torch.rand(2, 3, 16, 16)
    for m in nets.values():
        xyz, _ = m(img)
        assert xyz.shape == (2, 3)
    assert isinstance(nets["maxpool_fc"], ConvFCRegressor) and nets["maxpool_fc"].map_size == (2, 2)
    with pytest.raises(ValueError):
        make_pose_network("resnet", cfg)
