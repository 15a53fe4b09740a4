"""Synthetic image augmentation of training minibatches: one implementation for pose pretraining and the S-step.

The paper's conclusion (Levine et al. 2016, Sec. 8) proposes synthetic data augmentation, beside training in
a variety of environments, against policies that do not generalize to visually different settings. Here it
is random whole-pixel shifts (what a camera moved by a few mm or turned by a fraction of a degree does to the
image: meant to be measured on the held-out ``camera`` families) and colour jitter (brightness and a
per-channel offset, what other lights do: the held-out ``lighting`` families), drawn from a
``torch.Generator`` the caller seeds, so a run repeats bit for bit.
"""

from __future__ import annotations

import torch

__all__ = ["augment_images"]


def augment_images(images: torch.Tensor, shift: int, color: float, gen: torch.Generator) -> torch.Tensor:
    """Random image shifts (edge-replicated, up to ``shift`` pixels each way) and colour jitter (brightness
    x U(1 - c, 1 + c), per-channel offset U(-c/2, c/2)) of a float (N, C, H, W) batch in [0, 1].

    Each image gets its own shift and jitter; the random numbers come from ``gen`` only (a CPU generator,
    whatever device the images are on). ``shift`` 0 and ``color`` 0 draw nothing and return ``images``."""
    n, _, h, w = images.shape
    out = images
    if shift > 0:
        padded = torch.nn.functional.pad(images, (shift, shift, shift, shift), mode="replicate")
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if color > 0:
        scale = 1.0 + color * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
        offset = 0.5 * color * (2 * torch.rand(n, images.shape[1], 1, 1, generator=gen) - 1)
        out = (out * scale.to(out) + offset.to(out)).clamp(0.0, 1.0)
    return out
