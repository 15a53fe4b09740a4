"""Spatial softmax with expected 2D position ("feature points"), paper Sec. IV-A.

Each channel c of a response map a[c, i, j] is turned into a distribution over pixel locations,
s[c, i, j] = exp(a[c, i, j] / T) / sum_{i', j'} exp(a[c, i', j'] / T), with a learned temperature T,
and then into the expected image position of that channel:

    x_c = sum_ij s[c, i, j] * px[j],   y_c = sum_ij s[c, i, j] * py[i]

where px, py place pixel centres linearly on [-1, 1] (left/top = -1, right/bottom = +1). Because the
points are convex combinations of the pixel positions they always lie in [-1, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn


def pixel_grid(height: int, width: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates on [-1, 1]: (px of shape (width,), py of shape (height,))."""
    px = torch.linspace(-1.0, 1.0, width, dtype=dtype) if width > 1 else torch.zeros(1, dtype=dtype)
    py = torch.linspace(-1.0, 1.0, height, dtype=dtype) if height > 1 else torch.zeros(1, dtype=dtype)
    return px, py


class SpatialSoftmax(nn.Module):
    """(B, C, H, W) response maps -> (B, C, 2) expected (x, y) positions in [-1, 1].

    The temperature is learned through its logarithm (``log_temperature``) so it stays positive.
    ``learn_temperature=False`` keeps it as a fixed buffer instead.
    """

    def __init__(self, height: int, width: int, temperature: float = 1.0, learn_temperature: bool = True):
        super().__init__()
        if height < 1 or width < 1:
            raise ValueError(f"spatial softmax needs a non-empty map, got {height}x{width}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.height = int(height)
        self.width = int(width)
        log_t = torch.tensor(math.log(temperature), dtype=torch.float32)
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)
        px, py = pixel_grid(self.height, self.width)
        # Not persistent: they are a function of the sizes, which the architecture description carries.
        self.register_buffer("pos_x", px, persistent=False)
        self.register_buffer("pos_y", py, persistent=False)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 4 or features.shape[-2:] != (self.height, self.width):
            raise ValueError(
                f"SpatialSoftmax expects (B, C, {self.height}, {self.width}), got {tuple(features.shape)}"
            )
        b, c, h, w = features.shape
        logits = features.reshape(b, c, h * w) / self.log_temperature.exp().to(features.dtype)
        probs = torch.softmax(logits, dim=-1).reshape(b, c, h, w)
        px = self.pos_x.to(features.dtype)
        py = self.pos_y.to(features.dtype)
        x = (probs.sum(dim=2) * px).sum(dim=-1)  # marginal over rows, then E[x]
        y = (probs.sum(dim=3) * py).sum(dim=-1)  # marginal over columns, then E[y]
        return torch.stack((x, y), dim=-1)

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}"
