"""The S-step: supervised training of the neural policy on the local controllers' actions.

Given sampled observations o_i (robot configuration, and images for a visuomotor policy), the local
controllers' mean actions u_i at the corresponding full states x_i, and their precision matrices
P_i = Sigma_p(x_i)^{-1}, the mean network is fitted by minimizing (slides, "supervised learning
objective"; paper Sec. III)

    L(theta) = 1/M sum_i w_i (mu_theta(o_i) - u_i)^T P_i (mu_theta(o_i) - u_i)

with Adam on minibatches (25 by default) for a set number of iterations; optionally the fully connected
layers are trained first on fixed feature points ("fc_only_iterations", conv layers frozen). The
policy covariance is then set in closed form as in the reference MDGPS/BADMM implementations:

    pol_var = 1 / diag( (sum_i P_i) / sum_i w_i + 2 ent_reg I )

(with unit weights, 1 / mean of the diagonal precisions), clipped to [min_variance, max_variance] where
set. With ``aux_pose_weight`` > 0 (a visuomotor policy whose conv layers were pose-pretrained) the
full-network steps also minimize the pose-pretraining loss on the samples' images, the auxiliary loss of
issue 12 that keeps the feature points locating the target:

    L_aux = aux_pose_weight * 1/M sum_i || W [f(o_i); 1] - (p_i - mean) / std ||^2

with f the feature points, p_i the sample's true target position and W the linear pose head (initialized
from pose pretraining and trained along). Observation normalization is fitted from
the data (by default only the first time, so later S-steps do not move the input scale under trained
weights).

Instrumented training: ``obs`` is o (what the policy sees); the targets came from controllers that
acted on the full state x. Nothing here needs x.

Image augmentation (issue 24; the paper's conclusion, Sec. 8, proposes synthetic data augmentation against
policies that do not generalize to visually different settings): with ``augment_shift`` (pixels) or
``augment_color`` > 0 every minibatch of the full-network steps is shifted and colour-jittered
(gps_trainer.augment.augment_images), meant to be measured on the held-out ``camera`` (shift) and
``lighting`` (colour) families. Only the training steps see it (a step's auxiliary pose loss too, its
targets unchanged: a shift of a few pixels is label noise of a few mm, as in pose pretraining's
augmentation); the loss before and after, and the aux pose loss's, are evaluated on the samples' own
images. The head-only phase (``fc_only_iterations``) is not augmented: it trains on feature points computed
once from the un-augmented images; augmenting there would cost a CNN pass per step (the cache is that
phase's reason to exist), and its conv layers, frozen, could not learn invariance from it anyway.

Reproducibility: minibatch order comes from a ``torch.Generator`` seeded with ``seed`` (or
``config.seed``), the augmentation from a second generator derived from the same seed (so turning it on
keeps the minibatch order, and a comparison with and without it sees the same batches); no global RNG is
used. Runs on ``config.device`` ("auto" = CUDA when available, else CPU).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gps_controller.policies.neural import (
    PRECISIONS,
    GaussianPolicy,
    autocast_context,
    images_to_tensor,
    resolve_precision,
)
from gps_trainer.augment import augment_images
from gps_trainer.config_schema import (
    MAX_BATCH,
    MAX_SEED,
    MAX_STEPS,
    ConfigError,
    load_yaml,
    ranged,
    typed_from_dict,
)

NORMALIZE_MODES = ("first", "always", "never")
#: The augmentation generator's stream: its seed is derived from (the S-step's seed, this), so it never
#: repeats the minibatch generator's numbers.
AUGMENT_STREAM = 24
#: The stream of the samples the loss before and after an S-step is evaluated on (loss_eval_samples).
LOSS_EVAL_STREAM = 25

LOGGER = logging.getLogger(__name__)


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else CPU; anything else is passed to torch.device."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_yaml_section(path: str | Path, section: str | None = None) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError("", f"cannot read the file: {e.strerror or e}", source=str(path)) from None
    data = load_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError("", "expected a mapping at the top level", data, source=str(path))
    if section is not None:
        data = data.get(section, data)
    return data


@dataclass
class PolicyOptConfig:
    """S-step hyperparameters (defaults: config/policy/policy_opt.yaml)."""

    learning_rate: float = 1e-3
    batch_size: int = ranged(25, ge=1, le=MAX_BATCH)
    iterations: int = ranged(1000, ge=0, le=MAX_STEPS)  # minibatch steps of the full network per S-step
    fc_only_iterations: int = ranged(0, ge=0, le=MAX_STEPS)  # extra steps on the FC layers alone first (visuomotor)
    weight_decay: float = 0.005      # L2 on all trained parameters (reference GPS value)
    ent_reg: float = 0.0             # entropy regularizer in the covariance update
    # Bounds on each entry of the policy variance after the closed-form update (0 = no bound): the
    # exploration noise of on-policy samples held within [min_variance, max_variance] (issue 21: a constant
    # ent_reg drove it towards zero, none left it at the controllers' level).
    min_variance: float = ranged(0.0, ge=0.0, le=1e6)
    max_variance: float = ranged(0.0, ge=0.0, le=1e6)
    normalize_obs: str = "first"     # first | always | never
    min_obs_std: float = 1e-3
    max_sample_weight: float = 2.0   # per-sample weights are normalized to median 1 and clipped here
    device: str = "auto"             # auto | cpu | cuda[:n]
    seed: int = ranged(0, ge=0, le=MAX_SEED)
    log_every: int = ranged(50, ge=1, le=MAX_STEPS)  # record the running minibatch loss every this many steps
    eval_batch_size: int = ranged(256, ge=1, le=MAX_BATCH)  # chunk size for the loss passes / feature points
    evaluate_full_loss: bool = True  # compute the loss before and after training (a diagnostic)
    # ... on this many samples drawn without replacement (the same ones before and after; 0 = all of them):
    # a diagnostic, and the pass over every image was 60-70 s of an S-step on 9000 samples
    loss_eval_samples: int = ranged(2048, ge=0, le=MAX_BATCH)
    # Precisions (fp32 | bf16 | auto; auto = bf16 where the CPU has native bf16, or on CUDA): inference =
    # the batched policy means of the C-step's linearization and the S-step's loss passes; train = the S-step's
    # forward/backward under autocast (weights and Adam state stay fp32).
    inference_precision: str = "auto"
    train_precision: str = "fp32"
    # Auxiliary pose-regression loss in the full-network steps (see the module docstring); 0 = off.
    aux_pose_weight: float = 0.0
    # Augmentation of the full-network steps' minibatch images (see the module docstring); 0 = off: random
    # shifts of up to this many pixels each way, and colour jitter (brightness x U(1 - c, 1 + c), per-channel
    # offset U(-c/2, c/2)), as pose pretraining's keys of the same names.
    augment_shift: int = ranged(0, ge=0, le=16)
    augment_color: float = ranged(0.0, ge=0.0, le=0.5)
    # Adam's moment estimates carried from one S-step to the next (the reference keeps its solver across
    # iterations); off: a new Adam every S-step, whose first steps move every weight by about the learning
    # rate whatever its gradient's size (bias-corrected moments of one gradient). Needs the caller's
    # ``optimizer_memory`` (train_policy).
    persistent_optimizer: bool = False

    def __post_init__(self) -> None:
        if self.normalize_obs not in NORMALIZE_MODES:
            raise ValueError(f"normalize_obs must be one of {NORMALIZE_MODES}, got {self.normalize_obs!r}")
        for f in dataclasses.fields(self):  # the bounds typed_from_dict checks, for direct construction too
            bounds = f.metadata.get("bounds")
            value = getattr(self, f.name)
            if bounds and not bounds["ge"] <= value <= bounds["le"]:
                raise ValueError(f"{f.name} must be >= {bounds['ge']} and <= {bounds['le']}, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError("learning_rate must be positive")
        if self.weight_decay < 0 or self.ent_reg < 0 or self.aux_pose_weight < 0:
            raise ValueError("weight_decay, ent_reg and aux_pose_weight must be >= 0")
        if self.max_variance > 0 and self.min_variance > self.max_variance:
            raise ValueError(f"min_variance ({self.min_variance!r}) must be <= max_variance ({self.max_variance!r})")
        for name in ("inference_precision", "train_precision"):
            if getattr(self, name) not in PRECISIONS:
                raise ValueError(f"{name} must be one of {PRECISIONS}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PolicyOptConfig:
        return typed_from_dict(cls, data)

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = "policy_opt") -> PolicyOptConfig:
        return cls.from_dict(load_yaml_section(path, section))


@dataclass
class PolicyOptDiagnostics:
    num_samples: int
    iterations: int
    fc_only_iterations: int
    loss_before: float | None
    loss_after: float | None
    loss_history: list[tuple[int, float]] = field(default_factory=list)  # (step, mean minibatch loss)
    fc_only_loss_history: list[tuple[int, float]] = field(default_factory=list)
    pol_var: list[float] = field(default_factory=list)
    normalization_updated: bool = False
    wall_time_s: float = 0.0
    fc_only_wall_time_s: float = 0.0  # the head phase: feature points of every sample + the head's steps
    full_wall_time_s: float = 0.0     # the steps on every layer
    loss_eval_wall_time_s: float = 0.0  # evaluate_full_loss: the loss before and after (loss_eval_samples)
    samples_per_s: float = 0.0
    device: str = "cpu"
    aux_pose_loss_before: float | None = None  # L_aux / aux_pose_weight on the evaluated samples (normalized units)
    aux_pose_loss_after: float | None = None
    # The loss before and after per group (train_policy's ``groups``, e.g. the condition): the mean over the
    # group's evaluated samples, None for a group none of whose samples was evaluated.
    loss_before_per_group: list[float | None] = field(default_factory=list)
    loss_after_per_group: list[float | None] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class AuxPoseTargets:
    """The auxiliary pose loss's data: ``head`` (3, 2K + 1), the linear map [feature points; 1] -> the
    normalized target position, trained along and updated in place; ``targets`` (..., 3) the samples'
    normalized target positions (leading shape as the S-step's obs)."""

    head: np.ndarray
    targets: np.ndarray


def _flatten(name: str, a: Any, trailing: int, lead: tuple[int, ...] | None) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim < trailing + 1:
        raise ValueError(f"{name} must have at least {trailing + 1} dimensions, got shape {arr.shape}")
    this_lead = arr.shape[: arr.ndim - trailing]
    if lead is not None and this_lead != lead:
        raise ValueError(f"{name} has leading shape {this_lead}, expected {lead} (same samples as obs)")
    return arr.reshape(-1, *arr.shape[arr.ndim - trailing:])


def _precision_matrices(precisions: Any, lead: tuple[int, ...], d_u: int) -> np.ndarray:
    p = np.asarray(precisions, dtype=np.float64)
    if p.shape == (*lead, d_u):  # diagonal precisions
        flat = p.reshape(-1, d_u)
        out = np.zeros((flat.shape[0], d_u, d_u))
        idx = np.arange(d_u)
        out[:, idx, idx] = flat
        return out
    if p.shape == (*lead, d_u, d_u):
        return p.reshape(-1, d_u, d_u)
    raise ValueError(f"precisions must have shape {(*lead, d_u, d_u)} or {(*lead, d_u)}, got {p.shape}")


def normalize_sample_weights(weights: np.ndarray, max_weight: float) -> np.ndarray:
    """Scale weights so the median of the non-negligible ones is 1, then clip at ``max_weight``."""
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("sample weights must be finite and non-negative")
    w = w * (w.size / max(w.sum(), 1e-300))
    big = w[w > 1e-2]
    if big.size == 0:
        raise ValueError("all sample weights are (near) zero")
    return np.clip(w / np.median(big), 0.0, max_weight)


def covariance_update(precisions: np.ndarray, ent_reg: float = 0.0, weights: np.ndarray | None = None,
                      min_variance: float = 0.0, max_variance: float = 0.0) -> np.ndarray:
    """pol_var = 1 / diag(sum_i P_i / sum_i w_i + 2 ent_reg I)  (reference MDGPS/BADMM), then clipped to
    [min_variance, max_variance] (a bound of 0 is no bound)."""
    p = np.asarray(precisions, dtype=np.float64)
    total_w = p.shape[0] if weights is None else float(np.sum(weights))
    a = np.einsum("mii->i", p) / max(total_w, 1e-300) + 2.0 * ent_reg
    if np.any(a <= 0):
        raise ValueError("mean precision has a non-positive diagonal entry")
    var = 1.0 / a
    if min_variance > 0:
        var = np.maximum(var, min_variance)
    if max_variance > 0:
        var = np.minimum(var, max_variance)
    return var


def _sample_losses(mean: torch.Tensor, target: torch.Tensor, prec: torch.Tensor) -> torch.Tensor:
    """(mean - target)^T prec (mean - target) per sample."""
    d = mean - target
    return torch.einsum("bi,bij,bj->b", d, prec, d)


def _weighted_loss(mean: torch.Tensor, target: torch.Tensor, prec: torch.Tensor) -> torch.Tensor:
    return _sample_losses(mean, target, prec).mean()


def _group_means(losses: torch.Tensor, groups: np.ndarray | None) -> list[float | None]:
    """Mean of ``losses`` (one per evaluated sample) per group 0..max(groups); negative groups are left out."""
    if groups is None or groups.size == 0 or groups.max() < 0:
        return []
    kept, n = groups >= 0, int(groups.max()) + 1
    sums = np.bincount(groups[kept], weights=losses.double().cpu().numpy()[kept], minlength=n)
    counts = np.bincount(groups[kept], minlength=n)
    return [float(s / c) if c else None for s, c in zip(sums, counts, strict=True)]


def train_policy(
    policy: GaussianPolicy,
    obs: Any,
    images: Any,
    target_actions: Any,
    precisions: Any,
    config: PolicyOptConfig | None = None,
    seed: int | None = None,
    weights: Any = None,
    aux_pose: AuxPoseTargets | None = None,
    optimizer_memory: dict[str, np.ndarray] | None = None,
    groups: Any = None,
) -> PolicyOptDiagnostics:
    """Fit ``policy`` in place; returns diagnostics.

    obs (..., dO) robot configurations; images (..., H, W, 3) uint8 or None (MLP); target_actions
    (..., dU) the local controllers' mean actions; precisions (..., dU, dU) or diagonal (..., dU);
    weights (...,) optional per-sample weights (e.g. BADMM's rho_t). The leading shape ``...`` is
    typically (N, T) and must agree across arguments. ``seed`` overrides ``config.seed``. ``aux_pose``:
    the auxiliary pose loss's head and targets, used when ``config.aux_pose_weight`` > 0.
    ``optimizer_memory``: with ``config.persistent_optimizer``, Adam's state from the last S-step (read
    when not empty) and, on return, this one's (:func:`adam_state_arrays`); the caller keeps it.
    ``groups`` (...,) optional ints (e.g. the condition; negative: none): the loss before and after is also
    reported per group, so one group's outlying loss shows where the mean's comes from.
    """
    cfg = config or PolicyOptConfig()
    seed = cfg.seed if seed is None else int(seed)
    t_start = time.perf_counter()
    d_o, d_u = policy.obs_dim, policy.action_dim

    o = np.asarray(obs, dtype=np.float64)
    if o.ndim < 2 or o.shape[-1] != d_o:
        raise ValueError(f"obs must be (..., {d_o}), got {o.shape}")
    lead = o.shape[:-1]
    o = o.reshape(-1, d_o)
    u = _flatten("target_actions", np.asarray(target_actions, dtype=np.float64), 1, lead)
    if u.shape[1] != d_u:
        raise ValueError(f"target_actions must be (..., {d_u}), got trailing size {u.shape[1]}")
    prec = _precision_matrices(precisions, lead, d_u)
    m = o.shape[0]
    if m == 0:
        raise ValueError("no samples to train on")
    for name, arr in (("obs", o), ("target_actions", u), ("precisions", prec)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or Inf")
    img = None
    if policy.uses_images:
        if images is None:
            raise ValueError("a visuomotor policy needs images")
        img = np.asarray(images)
        if img.dtype != np.uint8 or img.shape != (*lead, *policy.image_shape):
            raise ValueError(f"images must be uint8 {(*lead, *policy.image_shape)}, got {img.dtype} {img.shape}")
        img = img.reshape(m, *policy.image_shape)
    w = np.ones(m)
    if weights is not None:
        w = normalize_sample_weights(np.asarray(weights).reshape(-1), cfg.max_sample_weight)
        if w.shape[0] != m:
            raise ValueError(f"weights must have {m} entries, got {w.shape[0]}")

    group_of = None
    if groups is not None:
        group_of = np.asarray(groups).reshape(-1)
        if group_of.shape[0] != m or not np.issubdtype(group_of.dtype, np.integer):
            raise ValueError(f"groups must be {m} integers, got {group_of.dtype} {group_of.shape}")

    use_aux = cfg.aux_pose_weight > 0 and cfg.iterations > 0
    if use_aux:
        if not policy.uses_images or aux_pose is None:
            raise ValueError("aux_pose_weight > 0 needs a visuomotor policy and the samples' target positions")
        aux_y = _flatten("aux_pose.targets", np.asarray(aux_pose.targets, dtype=np.float64), 1, lead)
        aux_w = np.asarray(aux_pose.head, dtype=np.float64)
        n_feat = 2 * policy.net.config.num_feature_points
        if aux_y.shape[1] != 3 or aux_w.shape != (3, n_feat + 1):
            raise ValueError(f"aux_pose: targets (..., 3) and head (3, {n_feat + 1}) expected, got "
                             f"{aux_y.shape} and {aux_w.shape}")
        if not (np.all(np.isfinite(aux_y)) and np.all(np.isfinite(aux_w))):
            raise ValueError("aux_pose contains NaN or Inf")

    # Covariance update (closed form) from the unweighted precisions.
    pol_var = covariance_update(prec, cfg.ent_reg, w if weights is not None else None,
                                cfg.min_variance, cfg.max_variance)

    device = resolve_device(cfg.device)
    policy.to(device)
    updated_norm = cfg.normalize_obs == "always" or (
        cfg.normalize_obs == "first" and int(policy.norm_initialized) == 0)
    if updated_norm:
        policy.fit_normalization(o, min_std=cfg.min_obs_std)

    o_t = torch.as_tensor(o, dtype=torch.float32, device=device)
    u_t = torch.as_tensor(u, dtype=torch.float32, device=device)
    p_t = torch.as_tensor(prec * w[:, None, None], dtype=torch.float32, device=device)
    img_t = None if img is None else torch.as_tensor(img, device=device)  # uint8, converted per batch

    gen = torch.Generator().manual_seed(seed)
    bs = min(cfg.batch_size, m)

    def batches(n_steps: int):
        perm = torch.randperm(m, generator=gen)
        pos = 0
        for _ in range(n_steps):
            if pos + bs > m:
                perm = torch.randperm(m, generator=gen)
                pos = 0
            yield perm[pos:pos + bs].to(device)
            pos += bs

    aux_head = None
    if use_aux:
        aux_head = torch.nn.Linear(aux_w.shape[1] - 1, 3).to(device)
        with torch.no_grad():
            aux_head.weight.copy_(torch.as_tensor(aux_w[:, :-1], dtype=torch.float32))
            aux_head.bias.copy_(torch.as_tensor(aux_w[:, -1], dtype=torch.float32))
        aux_t = torch.as_tensor(aux_y, dtype=torch.float32, device=device)

    def aux_loss(points: torch.Tensor, idx: torch.Tensor | slice) -> torch.Tensor:
        pred = aux_head(points.float().reshape(points.shape[0], -1))
        return ((pred - aux_t[idx]) ** 2).sum(dim=-1).mean()

    # The samples the loss before and after is evaluated on: all, or a fixed draw of loss_eval_samples
    # (its own stream: the training's batches are the same either way).
    eval_idx = torch.arange(m, device=device)
    if 0 < cfg.loss_eval_samples < m:
        eval_gen = torch.Generator().manual_seed(loss_eval_seed(seed))
        eval_idx = torch.randperm(m, generator=eval_gen)[:cfg.loss_eval_samples].sort().values.to(device)
    eval_chunks = torch.split(eval_idx, cfg.eval_batch_size)
    eval_groups = None if group_of is None else group_of[eval_idx.cpu().numpy()]

    def full_aux_loss() -> float | None:
        if not use_aux:
            return None
        total = 0.0
        with torch.inference_mode():
            for idx in eval_chunks:
                points = policy.net.feature_points(images_to_tensor(img_t[idx], device))
                total += float(aux_loss(points, idx)) * len(idx)
        return total / len(eval_idx)

    def full_loss() -> tuple[float, list[float | None]]:
        """The mean loss over the evaluated samples, and per group."""
        losses = []
        with torch.inference_mode():
            for idx in eval_chunks:
                im = None if img_t is None else images_to_tensor(img_t[idx], device)
                with policy.inference_autocast(cfg.inference_precision):
                    mean, _ = policy(o_t[idx], im)
                losses.append(_sample_losses(mean.float(), u_t[idx], p_t[idx]))
        per_sample = torch.cat(losses)
        return float(per_sample.sum()) / len(eval_idx), _group_means(per_sample, eval_groups)

    # The S-step's forward passes under autocast; the loss itself is formed in fp32.
    train_precision = ("fp32" if cfg.train_precision == "auto" and not policy.uses_images
                       else resolve_precision(cfg.train_precision, device))

    def train_autocast():
        return autocast_context(train_precision, device)

    params = [p for p in policy.parameters() if p.requires_grad]
    if aux_head is not None:
        params += list(aux_head.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.persistent_optimizer:
        if optimizer_memory is None:
            raise ValueError("persistent_optimizer needs the caller's optimizer_memory (a dict it keeps)")
        if optimizer_memory:
            load_adam_state(optimizer, params, optimizer_memory)
    policy.train()
    head_first = cfg.fc_only_iterations > 0 and policy.uses_images
    t_fc = time.perf_counter()
    loss_eval_s = 0.0
    if head_first:
        # Feature points of every sample with the conv layers fixed: the head trains on them, and the loss
        # before the S-step is the head's loss on them (one CNN pass over all images, not two).
        with torch.no_grad(), train_autocast():
            pts = torch.cat([policy.net.feature_points(images_to_tensor(img_t[s:s + cfg.eval_batch_size], device))
                             for s in range(0, m, cfg.eval_batch_size)]).float()
            o_norm = policy.normalize(o_t)

        def head_losses(idx: torch.Tensor) -> torch.Tensor:
            with train_autocast():
                mean = policy.net.head(pts[idx], o_norm[idx])
            return _sample_losses(mean.float(), u_t[idx], p_t[idx])

        def head_loss(idx: torch.Tensor) -> torch.Tensor:
            return head_losses(idx).mean()

        loss_before, before_per_group = None, []
        if cfg.evaluate_full_loss:
            with torch.no_grad():  # (the head alone: the evaluated samples in one batch)
                per_sample = head_losses(eval_idx).float()
            loss_before, before_per_group = float(per_sample.mean()), _group_means(per_sample, eval_groups)
    else:
        t_loss = time.perf_counter()
        loss_before, before_per_group = full_loss() if cfg.evaluate_full_loss else (None, [])
        loss_eval_s = time.perf_counter() - t_loss
    aux_before = full_aux_loss()

    fc_history: list[tuple[int, float]] = []
    if head_first:
        fc_history = _run_steps(cfg.fc_only_iterations, batches, optimizer, cfg.log_every, head_loss)

    augment_gen = None
    if img_t is not None and (cfg.augment_shift > 0 or cfg.augment_color > 0):
        augment_gen = torch.Generator().manual_seed(augment_seed(seed))

    def step_loss(idx: torch.Tensor) -> torch.Tensor:
        im = None if img_t is None else images_to_tensor(img_t[idx], device)
        if augment_gen is not None:
            im = augment_images(im, cfg.augment_shift, cfg.augment_color, augment_gen)
        with train_autocast():
            mean, points = policy(o_t[idx], im)
        loss = _weighted_loss(mean.float(), u_t[idx], p_t[idx])
        if aux_head is not None:
            loss = loss + cfg.aux_pose_weight * aux_loss(points, idx)
        return loss

    t_full = time.perf_counter()
    history = _run_steps(cfg.iterations, batches, optimizer, cfg.log_every, step_loss)
    t_end = time.perf_counter()
    policy.eval()
    t_loss = time.perf_counter()
    loss_after, after_per_group = full_loss() if cfg.evaluate_full_loss else (None, [])
    loss_eval_s += time.perf_counter() - t_loss
    aux_after = full_aux_loss()
    if aux_head is not None:
        aux_pose.head[...] = np.hstack([aux_head.weight.detach().cpu().double().numpy(),
                                        aux_head.bias.detach().cpu().double().numpy()[:, None]])

    with torch.no_grad():
        policy.pol_var.copy_(torch.as_tensor(pol_var, dtype=policy.pol_var.dtype))
    if cfg.persistent_optimizer:
        optimizer_memory.clear()
        optimizer_memory.update(adam_state_arrays(optimizer))
    wall = time.perf_counter() - t_start
    steps = cfg.iterations + (cfg.fc_only_iterations if policy.uses_images else 0)
    return PolicyOptDiagnostics(
        num_samples=m, iterations=cfg.iterations,
        fc_only_iterations=cfg.fc_only_iterations if policy.uses_images else 0,
        loss_before=loss_before, loss_after=loss_after, loss_history=history,
        fc_only_loss_history=fc_history, pol_var=[float(v) for v in pol_var],
        normalization_updated=updated_norm, wall_time_s=wall, fc_only_wall_time_s=t_full - t_fc,
        full_wall_time_s=t_end - t_full, loss_eval_wall_time_s=loss_eval_s,
        samples_per_s=steps * bs / wall if wall > 0 else math.inf, device=str(device),
        aux_pose_loss_before=aux_before, aux_pose_loss_after=aux_after,
        loss_before_per_group=before_per_group, loss_after_per_group=after_per_group,
    )


_ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")


def adam_state_arrays(optimizer: torch.optim.Adam) -> dict[str, np.ndarray]:
    """Adam's per-parameter state as arrays ``"{i}.step"``, ``"{i}.exp_avg"``, ``"{i}.exp_avg_sq"`` (i: the
    parameter's index in the optimizer; a parameter never stepped has none), exact copies."""
    out = {}
    for i, st in optimizer.state_dict()["state"].items():
        for key in _ADAM_KEYS:
            v = st[key]
            out[f"{i}.{key}"] = (np.array(float(v)) if key == "step" else v.detach().cpu().numpy().copy())
    return out


def load_adam_state(optimizer: torch.optim.Adam, params: list[torch.Tensor], arrays: dict[str, np.ndarray]) -> None:
    """The inverse of :func:`adam_state_arrays` into a new Adam over ``params``; a state that does not fit
    them (another network, or other parameters trained) is an error, not a silent restart."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in arrays.items():
        i_str, _, key = name.partition(".")
        if not i_str.isdigit() or key not in _ADAM_KEYS:
            raise ValueError(f"optimizer state: unexpected entry {name!r}")
        i = int(i_str)
        if i >= len(params):
            raise ValueError(f"optimizer state: parameter {i}, but the S-step trains {len(params)}")
        if key == "step":
            state.setdefault(i, {})[key] = torch.tensor(float(value), dtype=torch.float32)
        else:
            if tuple(value.shape) != tuple(params[i].shape):
                raise ValueError(f"optimizer state: parameter {i}'s {key} is {tuple(value.shape)}, the parameter "
                                 f"{tuple(params[i].shape)}")
            state.setdefault(i, {})[key] = torch.as_tensor(np.asarray(value, dtype=np.float32))
    for i, st in state.items():
        if set(st) != set(_ADAM_KEYS):
            raise ValueError(f"optimizer state: parameter {i} has {sorted(st)}, expected {list(_ADAM_KEYS)}")
    saved = optimizer.state_dict()
    saved["state"] = state
    optimizer.load_state_dict(saved)


def loss_eval_seed(seed: int) -> int:
    """The seed of the draw of samples the S-step's loss is evaluated on: a function of the S-step's seed."""
    return int(np.random.SeedSequence([int(seed), LOSS_EVAL_STREAM]).generate_state(1, np.uint64)[0])


def augment_seed(seed: int) -> int:
    """The seed of the S-step's augmentation generator: a function of the S-step's seed, apart from it."""
    return int(np.random.SeedSequence([int(seed), AUGMENT_STREAM]).generate_state(1, np.uint64)[0])


def _run_steps(n_steps, batches, optimizer, log_every, loss_fn) -> list[tuple[int, float]]:
    history: list[tuple[int, float]] = []
    running, count = 0.0, 0
    t0, report_every = time.perf_counter(), max(1, n_steps // 5)  # progress a person can follow in the log
    for step, idx in enumerate(batches(n_steps), start=1):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(idx)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"policy optimization diverged at step {step} (loss {float(loss)})")
        loss.backward()
        optimizer.step()
        running += float(loss.detach())
        count += 1
        if step % log_every == 0 or step == n_steps:
            history.append((step, running / count))
            running, count = 0.0, 0
        if step % report_every == 0 and n_steps >= 50:
            LOGGER.info("  S-step %d/%d, loss %.4g, %.1f s", step, n_steps, float(loss.detach()),
                        time.perf_counter() - t0)
    return history
