"""Neural policies: the paper's visuomotor CNN, a state-based MLP, and the Gaussian policy wrapper.

The network definition lives here once: the controller node runs it (``GaussianPolicy.act`` at 20 Hz)
and the trainer imports it (``gps_trainer.policy_opt``). Everything is plain torch, CPU by default;
move a policy with ``policy.to(device)``.

Conventions
- Images enter the policy as uint8 RGB, channel-last ``(..., H, W, 3)`` (what the camera topic and
  the simulator give); they are scaled to [0, 1] and made channel-first inside.
- The robot configuration ``o`` (joint angles, velocities, EE points, EE velocities) is normalized
  per dimension as ``o * obs_scale + obs_bias`` (buffers that travel with the weights).
- The policy is Gaussian: ``u ~ N(mu(o, image), diag(pol_var))``.
- Parameter initialization is seeded: ``GaussianPolicy.from_architecture(arch, seed=s)`` (and the
  ``make_*`` helpers) draw the initial weights inside ``torch.random.fork_rng`` after
  ``torch.manual_seed(s)``, so the same seed gives the same weights and the global torch RNG is
  left untouched.
- Inference precision (``act``/``predict``): ``fp32`` (default), ``bf16`` (autocast: convolutions and
  matrix products in bfloat16, results returned as float64 as always) or ``auto`` = bf16 only where the
  hardware does bf16 natively (x86 AVX512_BF16 / AMX_BF16, ARM BF16; any CUDA device), fp32
  elsewhere. See :func:`resolve_precision` and ``GaussianPolicy.set_inference_precision``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .spatial_softmax import SpatialSoftmax

POLICY_TYPES = ("visuomotor_cnn", "mlp")
PRECISIONS = ("fp32", "bf16", "auto")

LOGGER = logging.getLogger(__name__)

# CPU feature flags that mean bf16 arithmetic in hardware (not emulated through fp32 conversions).
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """Feature flags of the first CPU in /proc/cpuinfo (x86 'flags', ARM 'Features'); empty if unreadable."""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively: x86 AVX512_BF16 or AMX_BF16, ARM BF16 / SVE_BF16.

    Asks torch's cpuinfo (``torch.cpu.get_capabilities``, torch >= 2.8) and falls back to the kernel's
    /proc/cpuinfo flags. AVX-512 alone is not enough: there torch emulates bf16 and it is slower than fp32.
    """
    caps: dict[str, Any] = {}
    get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if get is not None:
        try:
            caps = dict(get())
        except Exception:  # noqa: BLE001 - an old or unusual build: use the kernel's flags instead
            caps = {}
    if caps:
        return any(bool(caps.get(f, False)) for f in _NATIVE_BF16_FLAGS)
    return bool(_cpuinfo_flags() & set(_NATIVE_BF16_FLAGS))


def resolve_precision(name: str, device: torch.device | str = "cpu") -> str:
    """``fp32`` | ``bf16`` | ``auto`` -> the precision inference runs in on ``device``: ``fp32`` or ``bf16``.

    ``auto`` is ``bf16`` on CUDA and on a CPU with native bf16 (:func:`cpu_supports_bf16`), else ``fp32``.
    An explicit ``bf16`` is kept even where it is emulated (slow but valid). On CUDA, ``bf16`` means
    the usual autocast: bfloat16 where the GPU supports it, float16 otherwise.
    """
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    dev = torch.device(device)
    if name != "auto":
        return name
    if dev.type == "cuda":
        return "bf16"
    return "bf16" if dev.type == "cpu" and cpu_supports_bf16() else "fp32"


def autocast_context(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """The autocast region for a resolved precision (``fp32``: no autocast) on ``device``."""
    dev = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"autocast_context takes a resolved precision 'fp32' or 'bf16', got {precision!r}")
    dtype = torch.bfloat16
    if dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    return torch.autocast(dev.type, dtype=dtype)


def _tuple_of_ints(value: Any, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except TypeError as exc:
        raise ValueError(f"{name} must be a list of integers, got {value!r}") from exc
    if any(v <= 0 for v in out) or any(float(v) != int(v) for v in value):
        raise ValueError(f"{name} must be positive integers, got {value!r}")
    return out


@dataclass(frozen=True)
class VisuomotorConfig:
    """Sizes of the visuomotor CNN (paper Fig. 2). Defaults: 64x64 RGB, the paper's widths.

    Convolutions use zero padding of kernel//2 ("same" for stride 1), so a 240x240 image gives
    120x120 response maps and 64x64 gives 32x32. The parameter count does not depend on the image
    size: with a 39-d configuration and 7 torques it is 92,423 weights and biases plus the one
    learned softmax temperature.
    """

    config_dim: int
    action_dim: int
    image_height: int = 64
    image_width: int = 64
    image_channels: int = 3
    conv_filters: tuple[int, ...] = (64, 32, 32)
    conv_kernels: tuple[int, ...] = (7, 5, 5)
    conv_strides: tuple[int, ...] = (2, 1, 1)
    fc_hidden: tuple[int, ...] = (40, 40)
    temperature: float = 1.0
    learn_temperature: bool = True

    def __post_init__(self) -> None:
        for name in ("config_dim", "action_dim", "image_height", "image_width", "image_channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name in ("conv_filters", "conv_kernels", "conv_strides"):
            object.__setattr__(self, name, _tuple_of_ints(getattr(self, name), name))
        object.__setattr__(self, "fc_hidden", tuple(int(v) for v in self.fc_hidden))
        if any(v <= 0 for v in self.fc_hidden):
            raise ValueError(f"fc_hidden must be positive integers, got {self.fc_hidden!r}")
        if not (len(self.conv_filters) == len(self.conv_kernels) == len(self.conv_strides) >= 1):
            raise ValueError("conv_filters, conv_kernels and conv_strides must have the same non-zero length")
        if not float(self.temperature) > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature!r}")
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "learn_temperature", bool(self.learn_temperature))
        h, w = self.feature_map_size()
        if h < 1 or w < 1:
            raise ValueError(f"image {self.image_height}x{self.image_width} is too small for the conv stack")

    def feature_map_size(self) -> tuple[int, int]:
        h, w = self.image_height, self.image_width
        for k, s in zip(self.conv_kernels, self.conv_strides, strict=True):
            p = k // 2
            h = (h + 2 * p - k) // s + 1
            w = (w + 2 * p - k) // s + 1
        return h, w

    @property
    def num_feature_points(self) -> int:
        return self.conv_filters[-1]

    def num_parameters(self, include_temperature: bool = True) -> int:
        """Trainable scalars of the network these sizes describe (computed without building it)."""
        chans = [self.image_channels, *self.conv_filters]
        n = sum(cin * cout * k * k + cout
                for cin, cout, k in zip(chans[:-1], chans[1:], self.conv_kernels, strict=True))
        sizes = [2 * self.num_feature_points + self.config_dim, *self.fc_hidden, self.action_dim]
        n += sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        return n + int(include_temperature and self.learn_temperature)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class MLPConfig:
    """A state-based policy: obs -> hidden ReLU layers -> linear torques."""

    obs_dim: int
    action_dim: int
    hidden: tuple[int, ...] = field(default=(64, 64))

    def __post_init__(self) -> None:
        for name in ("obs_dim", "action_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        object.__setattr__(self, "hidden", tuple(int(v) for v in self.hidden))
        if any(v <= 0 for v in self.hidden):
            raise ValueError(f"hidden must be positive integers, got {self.hidden!r}")

    @property
    def config_dim(self) -> int:
        return self.obs_dim

    def num_parameters(self, include_temperature: bool = True) -> int:
        sizes = [self.obs_dim, *self.hidden, self.action_dim]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _mlp(sizes: list[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def _run_mlp(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for i, layer in enumerate(layers):
        x = layer(x)
        if i < len(layers) - 1:
            x = torch.relu(x)
    return x


class VisuomotorCNN(nn.Module):
    """RGB image + robot configuration -> (torque mean, feature points).

    image (B, C, H, W) float in [0, 1] -> conv 7x7/2 x64 ReLU -> conv 5x5 x32 ReLU -> conv 5x5 x32
    -> spatial softmax -> (B, 32, 2) feature points -> flatten (x0, y0, x1, y1, ...) -> concat with
    the normalized configuration -> FC 40 ReLU -> FC 40 ReLU -> linear action_dim.

    The vision part (``convs`` + ``softmax``) is what pose pretraining trains; ``fc`` is the head.
    """

    def __init__(self, config: VisuomotorConfig):
        super().__init__()
        self.config = config
        chans = [config.image_channels, *config.conv_filters]
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=k // 2)
            for cin, cout, k, s in zip(chans[:-1], chans[1:], config.conv_kernels, config.conv_strides,
                                       strict=True)
        )
        fh, fw = config.feature_map_size()
        self.softmax = SpatialSoftmax(fh, fw, config.temperature, config.learn_temperature)
        self.fc = _mlp([2 * config.num_feature_points + config.config_dim, *config.fc_hidden, config.action_dim])

    def vision_parameters(self) -> list[nn.Parameter]:
        return [*self.convs.parameters(), *self.softmax.parameters()]

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.fc.parameters())

    def feature_points(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float image -> (B, K, 2) expected (x, y) per channel in [-1, 1]."""
        x = image
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:  # the last conv feeds the softmax directly (no ReLU)
                x = torch.relu(x)
        return self.softmax(x)

    def head(self, points: torch.Tensor, config_norm: torch.Tensor) -> torch.Tensor:
        """Feature points (B, K, 2) or (B, 2K) and normalized configuration (B, dO) -> (B, dU)."""
        return _run_mlp(self.fc, torch.cat((points.reshape(points.shape[0], -1), config_norm), dim=-1))

    def forward(self, config_norm: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        points = self.feature_points(image)
        return self.head(points, config_norm), points


class MLPPolicy(nn.Module):
    """State-based mean network: normalized obs -> hidden ReLU layers -> linear torques."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        self.layers = _mlp([config.obs_dim, *config.hidden, config.action_dim])

    def forward(self, obs_norm: torch.Tensor, image: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        return _run_mlp(self.layers, obs_norm), None


def images_to_tensor(images: Any, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 RGB (..., H, W, C) numpy/torch -> float (N, C, H, W) in [0, 1] on ``device``."""
    t = torch.as_tensor(images)
    if t.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (..., H, W, C), got dtype {t.dtype}")
    if t.dim() < 3:
        raise ValueError(f"images must be (..., H, W, C), got shape {tuple(t.shape)}")
    t = t.reshape(-1, *t.shape[-3:]).to(device=device)
    return t.permute(0, 3, 1, 2).to(dtype).div_(255.0)


class GaussianPolicy(nn.Module):
    """pi(u | o) = N(mu_theta(o, image), diag(pol_var)) with observation normalization.

    Buffers saved with the weights: ``obs_scale``, ``obs_bias`` (dO,), ``pol_var`` (dU,), and
    ``norm_initialized`` (0/1: whether the normalization was fitted from data yet).
    """

    def __init__(self, net: VisuomotorCNN | MLPPolicy, init_var: float = 0.1):
        super().__init__()
        if not isinstance(net, (VisuomotorCNN, MLPPolicy)):
            raise TypeError(f"unsupported mean network {type(net).__name__}")
        if not init_var > 0:
            raise ValueError(f"init_var must be positive, got {init_var}")
        self.net = net
        d_o, d_u = net.config.config_dim, net.config.action_dim
        self.register_buffer("obs_scale", torch.ones(d_o))
        self.register_buffer("obs_bias", torch.zeros(d_o))
        self.register_buffer("pol_var", torch.full((d_u,), float(init_var)))
        self.register_buffer("norm_initialized", torch.zeros((), dtype=torch.uint8))
        # A run-time setting, not saved with the weights: the deployment machine decides.
        self._precision_request = "fp32"
        # What the policy's non-image input is, saved with it: "observation" o (robot configuration, what
        # a deployed policy has) or "state" x (instrumented: quick state-based tests and baselines); None:
        # not recorded (fed o). The controller feeds it accordingly.
        self.observes: str | None = None

    # ----- precision ---------------------------------------------------------------------------
    def set_inference_precision(self, precision: str) -> str:
        """Precision of ``act`` and ``predict``: ``fp32``, ``bf16`` or ``auto``; returns what it resolves
        to on the current device (re-resolved if the policy moves). ``auto`` keeps an MLP in fp32: its
        forward pass is microseconds, reduced precision would only cost accuracy."""
        resolve_precision(precision, self.device)  # validates the name
        if precision == "bf16" and self.device.type == "cpu" and not cpu_supports_bf16():
            LOGGER.warning("precision bf16 on a CPU without native bf16: emulated, likely slower than fp32")
        self._precision_request = precision
        return self.inference_precision

    @property
    def inference_precision(self) -> str:
        """The precision ``act``/``predict`` run in now: ``fp32`` or ``bf16``."""
        return self._resolve(None)

    def _resolve(self, precision: str | None) -> str:
        if precision is None:  # the policy's setting (fp32 for an object built without __init__, e.g. unpickled)
            precision = getattr(self, "_precision_request", "fp32")
        if precision == "auto" and not self.uses_images:
            resolve_precision(precision, self.device)  # validates
            return "fp32"
        return resolve_precision(precision, self.device)

    def inference_autocast(self, precision: str | None = None) -> contextlib.AbstractContextManager:
        """Autocast region of the inference precision, or of ``precision`` if given (for callers that run
        ``forward`` themselves, e.g. evaluation losses)."""
        return autocast_context(self._resolve(precision), self.device)

    # ----- description -------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "visuomotor_cnn" if isinstance(self.net, VisuomotorCNN) else "mlp"

    @property
    def uses_images(self) -> bool:
        return isinstance(self.net, VisuomotorCNN)

    @property
    def obs_dim(self) -> int:
        return self.net.config.config_dim

    @property
    def action_dim(self) -> int:
        return self.net.config.action_dim

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        if not self.uses_images:
            return None
        c = self.net.config
        return (c.image_height, c.image_width, c.image_channels)

    @property
    def device(self) -> torch.device:
        return self.obs_scale.device

    def architecture(self) -> dict[str, Any]:
        """JSON-ready description from which ``from_architecture`` rebuilds the same module."""
        return {"type": self.kind, "net": self.net.config.to_dict()}

    @classmethod
    def from_architecture(cls, arch: dict[str, Any], seed: int | None = 0, init_var: float = 0.1) -> GaussianPolicy:
        """Build a policy from ``architecture()``'s dict; initial weights drawn from ``seed``."""
        kind = arch.get("type")
        net_cfg = dict(arch.get("net", {}))
        if kind == "visuomotor_cnn":
            config: VisuomotorConfig | MLPConfig = VisuomotorConfig(**net_cfg)
        elif kind == "mlp":
            config = MLPConfig(**net_cfg)
        else:
            raise ValueError(f"unknown policy type {kind!r}; expected one of {POLICY_TYPES}")
        return cls(_seeded_build(config, seed), init_var=init_var)

    # ----- normalization -----------------------------------------------------------------------
    def set_normalization(self, mean: Any, std: Any, min_std: float = 1e-3) -> None:
        """Normalize as (o - mean) / max(std, min_std), stored as scale = 1/std, bias = -mean/std."""
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float64)).reshape(-1)
        std_t = torch.as_tensor(np.asarray(std, dtype=np.float64)).reshape(-1).clamp_min(min_std)
        if mean_t.numel() != self.obs_dim or std_t.numel() != self.obs_dim:
            raise ValueError(f"normalization must have {self.obs_dim} entries")
        scale = 1.0 / std_t
        self.obs_scale.copy_(scale.to(self.obs_scale))
        self.obs_bias.copy_((-mean_t * scale).to(self.obs_bias))
        self.norm_initialized.fill_(1)

    def fit_normalization(self, obs: Any, min_std: float = 1e-3) -> None:
        o = np.asarray(obs, dtype=np.float64).reshape(-1, self.obs_dim)
        self.set_normalization(o.mean(axis=0), o.std(axis=0), min_std=min_std)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return obs * self.obs_scale + self.obs_bias

    # ----- evaluation --------------------------------------------------------------------------
    def forward(self, obs: torch.Tensor, image: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw obs (B, dO) and float image (B, C, H, W) in [0, 1] -> (mean (B, dU), points or None)."""
        o = self.normalize(obs)
        if self.uses_images:
            if image is None:
                raise ValueError("this policy needs an image")
            return self.net(o, image)
        return self.net(o)

    def variance(self) -> np.ndarray:
        return self.pol_var.detach().cpu().numpy().astype(np.float64)

    def _check_image(self, image: Any, lead: tuple[int, ...]) -> None:
        shape = tuple(np.shape(image))
        if shape != (*lead, *self.image_shape):
            raise ValueError(f"image must have shape {(*lead, *self.image_shape)}, got {shape}")

    def _inference_images(self, images: Any, precision: str) -> torch.Tensor:
        """uint8 images -> the float tensor act and predict feed the CNN (one layout for both, so act is
        predict on a batch of one). images_to_tensor's permute keeps the pixels in (H, W, C) memory order
        (a channels-last tensor); in fp32 a 240x240 tick on (C, H, W)-ordered memory took 18 % less time
        (one thread, AVX2 CPU; docs/benchmarks.md, observation age). bf16 keeps the layout issue 16 measured."""
        t = images_to_tensor(images, self.device)
        return t.contiguous() if precision == "fp32" else t

    @torch.inference_mode()
    def act(self, obs_config: Any, image: Any = None, noise: Any = None, return_features: bool = False
            ) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
        """One control tick: obs (dO,), image (H, W, 3) uint8 -> torques (dU,) float64.

        ``noise`` (dU,) standard-normal draws give u = mu + sqrt(pol_var) * noise; None gives the mean.
        With ``return_features`` also returns the feature points (K, 2) (None for an MLP).
        """
        o = torch.as_tensor(np.asarray(obs_config, dtype=np.float32), device=self.device)
        if o.shape != (self.obs_dim,):
            raise ValueError(f"observation must have shape ({self.obs_dim},), got {tuple(o.shape)}")
        img = None
        if self.uses_images:
            if image is None:
                raise ValueError("this policy needs an image")
            self._check_image(image, ())
            img = self._inference_images(image, self.inference_precision)
        with self.inference_autocast():
            mean, points = self.forward(o.unsqueeze(0), img)
        u = mean[0].to(torch.float64).cpu().numpy()
        if noise is not None:
            n = np.asarray(noise, dtype=np.float64)
            if n.shape != (self.action_dim,):
                raise ValueError(f"noise must have shape ({self.action_dim},), got {n.shape}")
            u = u + np.sqrt(self.variance()) * n
        if return_features:
            return u, (None if points is None else points[0].float().cpu().numpy())
        return u

    @torch.inference_mode()
    def predict(self, obs: Any, images: Any = None, batch_size: int = 256, precision: str | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """Batch means: obs (..., dO), images (..., H, W, 3) uint8 -> (mean (..., dU), points (..., K, 2)).

        ``precision`` (fp32 | bf16 | auto) overrides the policy's inference precision for this call."""
        o = np.asarray(obs, dtype=np.float32)
        if o.ndim < 1 or o.shape[-1] != self.obs_dim:
            raise ValueError(f"observations must be (..., {self.obs_dim}), got {o.shape}")
        lead = o.shape[:-1]
        o = o.reshape(-1, self.obs_dim)
        imgs = None
        if self.uses_images:
            if images is None:
                raise ValueError("this policy needs images")
            self._check_image(images, lead)
            imgs = np.asarray(images).reshape(-1, *self.image_shape)
        means, pts = [], []
        resolved = self._resolve(precision)
        for start in range(0, o.shape[0], batch_size):
            ob = torch.as_tensor(o[start:start + batch_size], device=self.device)
            ib = None if imgs is None else self._inference_images(imgs[start:start + batch_size], resolved)
            with autocast_context(resolved, self.device):
                m, p = self.forward(ob, ib)
            means.append(m.to(torch.float64).cpu().numpy())
            if p is not None:
                pts.append(p.to(torch.float64).cpu().numpy())
        mean = np.concatenate(means, 0) if means else np.zeros((0, self.action_dim))
        mean = mean.reshape(*lead, self.action_dim)
        if not self.uses_images:
            return mean, None
        k = self.net.config.num_feature_points
        points = np.concatenate(pts, 0) if pts else np.zeros((0, k, 2))
        return mean, points.reshape(*lead, k, 2)


def _seeded_build(config: VisuomotorConfig | MLPConfig, seed: int | None) -> VisuomotorCNN | MLPPolicy:
    cls = VisuomotorCNN if isinstance(config, VisuomotorConfig) else MLPPolicy
    if seed is None:
        return cls(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return cls(config)


def make_visuomotor_policy(config: VisuomotorConfig, seed: int | None = 0, init_var: float = 0.1) -> GaussianPolicy:
    return GaussianPolicy(_seeded_build(config, seed), init_var=init_var)


def make_mlp_policy(config: MLPConfig, seed: int | None = 0, init_var: float = 0.1) -> GaussianPolicy:
    return GaussianPolicy(_seeded_build(config, seed), init_var=init_var)


def make_policy(spec: dict[str, Any], obs_dim: int, action_dim: int, seed: int | None = 0) -> GaussianPolicy:
    """Build from a config section ``{type, init_var, net: {...}}`` (config/policy/*.yaml's ``policy``).

    ``obs_dim`` (the robot-configuration size) and ``action_dim`` come from the task.
    """
    kind = spec.get("type", "visuomotor_cnn")
    unknown = sorted(set(spec) - {"type", "init_var", "net"})
    if unknown:
        raise ValueError(f"policy spec: unknown keys {unknown}")
    net = dict(spec.get("net") or {})
    if kind == "visuomotor_cnn":
        net.update(config_dim=obs_dim, action_dim=action_dim)
    elif kind == "mlp":
        net.update(obs_dim=obs_dim, action_dim=action_dim)
    return GaussianPolicy.from_architecture({"type": kind, "net": net}, seed=seed,
                                            init_var=float(spec.get("init_var", 0.1)))


def count_parameters(module: nn.Module, include_temperature: bool = True) -> int:
    """Number of trainable scalars; ``include_temperature=False`` leaves out the softmax temperature."""
    return sum(p.numel() for name, p in module.named_parameters()
               if p.requires_grad and (include_temperature or not name.endswith("log_temperature")))
