"""Rollouts of one condition stacked into arrays: the unit every learning step consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SampleBatch", "POLICY_OBS", "policy_inputs"]


@dataclass
class SampleBatch:
    """N rollouts of length T from one condition.

    X (N, T, dX) states, U (N, T, dU) applied actions, obs (N, T, dO) low-dimensional observations,
    images (N, T, H, W, 3) uint8, noise (N, T, dU) the exploration noise that produced U,
    ee_jacobians (N, T, 9, 7) d(EE points)/d(joint angles), condition the condition index.
    Shapes are checked on construction; a mismatch raises ``ValueError`` naming the field.
    """

    X: np.ndarray
    U: np.ndarray
    obs: np.ndarray | None = None
    images: np.ndarray | None = None
    noise: np.ndarray | None = None
    ee_jacobians: np.ndarray | None = None
    condition: int = 0

    def __post_init__(self) -> None:
        self.X = np.asarray(self.X, dtype=np.float64)
        self.U = np.asarray(self.U, dtype=np.float64)
        if self.X.ndim != 3:
            raise ValueError(f"SampleBatch.X must be (N, T, dX), got shape {self.X.shape}")
        N, T, _ = self.X.shape
        if self.U.ndim != 3 or self.U.shape[:2] != (N, T):
            raise ValueError(f"SampleBatch.U must be (N={N}, T={T}, dU), got shape {self.U.shape}")
        for name, a in (("X", self.X), ("U", self.U)):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"SampleBatch.{name} contains NaN or Inf")
        checks = {
            "obs": (3, None),
            "images": (5, None),
            "noise": (3, self.U.shape[2]),
            "ee_jacobians": (4, None),
        }
        for name, (ndim, last) in checks.items():
            a = getattr(self, name)
            if a is None:
                continue
            a = np.asarray(a)
            if a.ndim != ndim or a.shape[:2] != (N, T) or (last is not None and a.shape[-1] != last):
                raise ValueError(f"SampleBatch.{name} has shape {a.shape}, inconsistent with X {self.X.shape}")
            setattr(self, name, a)
        if self.images is not None and (self.images.dtype != np.uint8 or self.images.shape[-1] != 3):
            raise ValueError(f"SampleBatch.images must be uint8 (N, T, H, W, 3), got {self.images.dtype} "
                             f"{self.images.shape}")
        if self.ee_jacobians is not None:
            self.ee_jacobians = np.asarray(self.ee_jacobians, dtype=np.float64)
        self.condition = int(self.condition)

    @property
    def N(self) -> int:
        return self.X.shape[0]

    @property
    def T(self) -> int:
        return self.X.shape[1]

    @property
    def dX(self) -> int:
        return self.X.shape[2]

    @property
    def dU(self) -> int:
        return self.U.shape[2]

    def __len__(self) -> int:
        return self.N

    def take(self, idx: np.ndarray | slice | list[int]) -> SampleBatch:
        """A batch of the selected rollouts (same condition)."""
        def pick(a):
            return (None if a is None else a[idx])
        return SampleBatch(self.X[idx], self.U[idx], pick(self.obs), pick(self.images), pick(self.noise),
                           pick(self.ee_jacobians), self.condition)

    @staticmethod
    def concatenate(batches: list[SampleBatch]) -> SampleBatch:
        """Stack batches of one condition along the sample axis (optional fields kept if all have them)."""
        if not batches:
            raise ValueError("SampleBatch.concatenate: no batches given")
        conds = {b.condition for b in batches}
        if len(conds) != 1:
            raise ValueError(f"SampleBatch.concatenate: batches come from different conditions {sorted(conds)}")

        def cat(name: str) -> np.ndarray | None:
            parts = [getattr(b, name) for b in batches]
            return None if any(p is None for p in parts) else np.concatenate(parts, axis=0)

        return SampleBatch(cat("X"), cat("U"), cat("obs"), cat("images"), cat("noise"), cat("ee_jacobians"),
                           batches[0].condition)


#: What the global policy observes: "state" = x (tasks without vision / quick tests: an MLP on the
#: full state), "observation" = o (robot configuration; plus the image for a visuomotor CNN).
POLICY_OBS = ("state", "observation")


def policy_inputs(batch: SampleBatch, policy_obs: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(obs (N, T, dO), images (N, T, H, W, 3) or None) the global policy sees for this batch."""
    if policy_obs == "state":
        return batch.X, None
    if policy_obs == "observation":
        if batch.obs is None:
            raise ValueError("policy_obs='observation' needs batches recorded with their observations")
        return batch.obs, batch.images
    raise ValueError(f"policy_obs {policy_obs!r} unknown; expected one of {POLICY_OBS}")
