"""Phase 1 of the paper's training procedure: pretrain the vision layers by pose regression.

The convolutional layers and the spatial softmax of the visuomotor CNN (the same modules, and the
same tensor names, as ``VisuomotorCNN``) plus a small head (feature points -> linear -> 3D position)
are trained to predict the target object's position from camera images collected in the simulator
with the target placed at random positions (and the arm at perturbed configurations, so the features
learn to ignore it). The held-out error is reported in cm against the baseline of always predicting
the training mean. The weights are saved as safetensors; ``load_pretrained_vision`` copies the
vision tensors into a policy before end-to-end GPS.

Reproducibility: image collection draws from ``numpy.random.default_rng(seed)`` (never the global
numpy RNG); network initialization and minibatch order from ``seed`` via ``torch.random.fork_rng`` /
``torch.Generator``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from gps_controller.policies.neural import GaussianPolicy, VisuomotorCNN, VisuomotorConfig, images_to_tensor
from gps_controller.policies.serialization import PolicyFormatError, read_safetensors_metadata, sha256_hex
from gps_core.ood import TRAIN_MAX_STRENGTH
from gps_core.progress import Progress
from gps_trainer.augment import augment_images
from gps_trainer.config_schema import (
    MAX_BATCH,
    MAX_SEED,
    MAX_STEPS,
    Checked,
    ConfigError,
    invalid,
    ranged,
    typed_from_dict,
)
from gps_trainer.policy_opt import load_yaml_section, resolve_device

VISION_PREFIX = "net."  # vision tensors are stored under the policy's names: net.convs.*, net.softmax.*


@dataclass
class PosePretrainConfig(Checked):
    """Pose pretraining settings (defaults: config/policy/pose_pretrain.yaml); typed and range-checked."""

    task: str = "reach"
    image_size: int = ranged(64, ge=8, le=1024)
    num_train: int = ranged(400, ge=1, le=1_000_000)
    num_test: int = ranged(100, ge=0, le=1_000_000)          # 0: no held-out evaluation
    condition_set: Literal["train", "spatial_test", "visual_test"] = "train"  # arm poses / target heights
    target_margin: float = ranged(0.05, ge=0.0)  # m added around the conditions' targets (x, y)
    target_box: list[list[float]] | None = None  # explicit [[x,y,z]_low, [x,y,z]_high] instead
    joint_noise: float = ranged(0.15, ge=0.0)    # rad, std of the arm-pose perturbation
    # Domain randomization / augmentation (issue 12, section 2; the paper's future work): the fraction of
    # images with a random distractor scene + table colour (the task's visual-set rules, drawn from this
    # run's seed), and per-minibatch image shifts (pixels, up to) and colour jitter (brightness/contrast
    # scale and per-channel offset, up to).
    scene_randomization: float = ranged(0.0, ge=0.0, le=1.0)
    # Training-time appearance randomization of those random scenes (issue 24; the paper's "training in a
    # variety of environments"): the largest strength (0-3, 0 = off) of the lights, the head camera's pose
    # and the table/floor textures each random scene also draws (the random_scene keys lighting / camera /
    # texture, gps_core.ood); measured on the held-out ood_lighting / ood_camera / ood_texture families.
    scene_lighting: int = ranged(0, ge=0, le=TRAIN_MAX_STRENGTH)
    scene_camera: int = ranged(0, ge=0, le=TRAIN_MAX_STRENGTH)
    scene_texture: int = ranged(0, ge=0, le=TRAIN_MAX_STRENGTH)
    augment_shift: int = ranged(0, ge=0, le=16)
    augment_color: float = ranged(0.0, ge=0.0, le=0.5)
    iterations: int = ranged(2000, ge=0, le=MAX_STEPS)
    batch_size: int = ranged(25, ge=1, le=MAX_BATCH)
    learning_rate: float = ranged(1e-3, gt=0.0)
    # constant, or cosine: decayed to zero over the run (Loshchilov & Hutter 2017, without restarts); at a
    # fixed budget the constant rate leaves the end of training noisy (train error above held-out error)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = ranged(0, ge=0, le=10_000_000)  # linear learning-rate ramp from 0 (see lr_at)
    # every this many steps, hidden conv channels whose ReLU is zero on the whole minibatch start again
    # (recycle_dead_channels); 0: never
    recycle_every: int = ranged(0, ge=0, le=MAX_STEPS)
    weight_decay: float = ranged(0.0, ge=0.0)
    seed: int = ranged(0, ge=0, le=MAX_SEED)
    device: str = "auto"                        # auto | cpu | cuda[:n]
    log_every: int = ranged(100, ge=1, le=MAX_STEPS)
    output: str = "runs/pose_pretrain/vision.safetensors"
    net: dict[str, Any] = field(default_factory=dict)  # VisuomotorConfig overrides (conv sizes, ...)

    def _check(self) -> None:
        for key in ("scene_lighting", "scene_camera", "scene_texture"):
            if getattr(self, key) > 0 and self.scene_randomization == 0:
                raise invalid(key, getattr(self, key),
                              "perturbs the random scenes only: needs scene_randomization > 0")
        if self.target_box is not None:
            box = self.target_box
            if len(box) != 2 or any(len(row) != 3 for row in box):
                raise invalid("target_box", box, "expected [[x, y, z]_low, [x, y, z]_high]")
            if any(lo > hi for lo, hi in zip(box[0], box[1], strict=True)):
                raise invalid("target_box", box, "low corner above the high corner")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise invalid("device", self.device, "expected auto, cpu or cuda[:n]") from None
        for key in ("config_dim", "action_dim"):
            if key in self.net:
                raise invalid(f"net.{key}", self.net[key], "set by the task, not here")
        for key in ("image_height", "image_width"):
            if key in self.net and self.net[key] != self.image_size:
                raise invalid(f"net.{key}", self.net[key], f"must equal image_size ({self.image_size})")
        try:
            self.vision_config()
        except ConfigError as e:
            raise e.within(prefix="net") from None
        except (ValueError, TypeError) as e:
            raise invalid("net", self.net, str(e)) from None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str | None = None, where: str = "") -> PosePretrainConfig:
        return typed_from_dict(cls, data, source=source, where=where)

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = "pose_pretrain") -> PosePretrainConfig:
        data = load_yaml_section(path, section)
        return cls.from_dict(data, source=str(path), where=section if section and data is not None else "")

    def vision_config(self) -> VisuomotorConfig:
        # config_dim / action_dim do not affect the vision layers; the head is not used here.
        net = {"config_dim": 1, "action_dim": 1, **self.net,
               "image_height": self.image_size, "image_width": self.image_size}
        return typed_from_dict(VisuomotorConfig, net)


class PoseRegressor(nn.Module):
    """Vision layers of the visuomotor CNN + linear head: image -> (feature points, 3D position)."""

    def __init__(self, vision_config: VisuomotorConfig):
        super().__init__()
        self.net = VisuomotorCNN(vision_config)
        del self.net.fc  # only the vision part is trained here
        self.head = nn.Linear(2 * vision_config.num_feature_points, 3)
        self.register_buffer("pose_mean", torch.zeros(3))
        self.register_buffer("pose_std", torch.ones(3))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        points = self.net.feature_points(image)
        return self.head(points.reshape(points.shape[0], -1)) * self.pose_std + self.pose_mean, points

    def head_matrix(self) -> np.ndarray:
        """The linear head as one (3, 2K + 1) array W: normalized position = W [feature points; 1]
        (what the S-step's auxiliary pose loss starts from, policy_opt.AuxPoseTargets)."""
        with torch.no_grad():
            return torch.cat([self.head.weight, self.head.bias[:, None]], dim=1).double().cpu().numpy()


def target_box_for(task: Any, condition_set: str, margin: float) -> np.ndarray:
    """[[low], [high]] around the condition set's target positions, widened by ``margin`` in x and y."""
    pos = np.array([c.target_pose[:3] for c in task.condition_list(condition_set)])
    if pos.size == 0:
        raise ValueError(f"task {task.name!r} has no {condition_set!r} conditions")
    low, high = pos.min(0), pos.max(0)
    pad = np.array([margin, margin, 0.0])
    return np.stack([low - pad, high + pad])


def collect_pose_images(sim: Any, num: int, rng: np.random.Generator, target_box: np.ndarray,
                        condition_set: str = "train", joint_noise: float = 0.15, scene_fraction: float = 0.0,
                        progress: Progress | None = None, appearance: dict[str, int] | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Render ``num`` images with the target at uniform positions in ``target_box``.

    Each image starts from a random condition of ``condition_set`` (its arm pose, colours and target
    orientation), perturbs the arm by N(0, joint_noise^2) per joint (clipped to the joint limits) and
    moves the target. A ``scene_fraction`` of the images get a random distractor scene and table colour
    around the moved target (``ArmSim.randomize_scene`` with the task's visual-set spec); ``appearance``
    ({lighting, camera, texture}: largest strengths, 0 = off) adds training-time appearance randomization
    to those scenes (the spec's keys of the same names). Returns images (num, H, W, 3) uint8 and target
    positions (num, 3). ``progress``: told each image.
    """
    scene_spec = next((c.random_scene for c in sim.task.condition_list("visual_validation") if c.random_scene),
                      None) if scene_fraction > 0 else None
    on = {k: int(v) for k, v in (appearance or {}).items() if v}
    if on and scene_fraction > 0:  # (all off: the visual set's spec as it is, so the draws are as before)
        scene_spec = {**(scene_spec or {}), **on}
    box = np.asarray(target_box, dtype=float)
    n_cond = sim.num_conditions(condition_set)
    if n_cond == 0:
        raise ValueError(f"no {condition_set!r} conditions to collect from")
    images, positions = [], []
    if progress is not None:
        progress.restart(num, f"rendering images 0/{num}")
    for i in range(num):
        cond = int(rng.integers(n_cond))
        sim.reset(cond, seed=int(rng.integers(2**31)), condition_set=condition_set)
        q = sim.joint_positions() + rng.normal(0.0, joint_noise, size=7)
        limited = np.asarray(sim.joint_limited, bool)
        lim = np.asarray(sim.joint_limits)[:7]
        q[limited[:7]] = np.clip(q[limited[:7]], lim[limited[:7], 0], lim[limited[:7], 1])
        sim.set_joint_state(q)
        pose = sim.target_pose()
        pose[:3] = rng.uniform(box[0], box[1])
        sim.set_target_pose(pose)
        if scene_fraction > 0 and rng.random() < scene_fraction:
            sim.randomize_scene(rng, scene_spec)
        img = sim.render()
        images.append(np.asarray(img, dtype=np.uint8))
        positions.append(np.asarray(sim.target_pose()[:3], dtype=float))
        if progress is not None:
            progress.update(i + 1, f"rendering images {i + 1}/{num}")
    return np.stack(images), np.stack(positions)


def _hidden_layers(net: VisuomotorCNN, images: torch.Tensor):
    """(conv, the conv after it, whether each of its channels' ReLU output is zero on all of ``images``) for
    every hidden conv layer, first to last (call under no_grad)."""
    convs, x = list(net.convs), images
    for conv, nxt in zip(convs[:-1], convs[1:], strict=True):
        x = torch.relu(conv(x))
        yield conv, nxt, x.amax(dim=(0, 2, 3)) <= 0


def active_channels(net: VisuomotorCNN, images: torch.Tensor) -> list[int]:
    """Hidden conv channels (per layer) whose ReLU output is positive somewhere on ``images``."""
    with torch.no_grad():
        return [int((~dead).sum()) for _, _, dead in _hidden_layers(net, images)]


def recycle_dead_channels(net: VisuomotorCNN, images: torch.Tensor, optimizer: torch.optim.Optimizer | None,
                          gen: torch.Generator) -> list[int]:
    """Re-initialize every hidden conv channel whose ReLU output is zero on all of ``images`` (N, C, H, W).

    Dormant-neuron recycling (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep RL"): the channel's
    incoming weights and bias are drawn again as at initialization (PyTorch's Conv2d default), the next
    layer's weights from it are set to zero, so the network computes the same function right after; the
    optimizer's first moment of those entries is cleared and its second set to the parameter's mean. A dead
    ReLU gets no gradient, so without this a channel that dies stays dead; when every channel of a layer dies
    the feature points no longer depend on the image. Returns the number of channels re-initialized in each
    hidden layer."""
    counts: list[int] = []
    with torch.no_grad():
        # (a recycled channel's next-layer weights are zero, so the layers after it see the same input)
        for conv, nxt, is_dead in _hidden_layers(net, images):
            dead = is_dead.nonzero().flatten()
            counts.append(int(dead.numel()))
            if dead.numel() == 0:
                continue
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            w = torch.empty_like(conv.weight[dead])
            nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
            bound = 1.0 / math.sqrt(fan_in)
            conv.weight[dead] = w
            conv.bias[dead] = (torch.rand(dead.numel(), generator=gen) * 2 - 1).to(conv.bias) * bound
            nxt.weight[:, dead] = 0.0
            if optimizer is not None:
                for param, rows in ((conv.weight, (dead,)), (conv.bias, (dead,)), (nxt.weight, (slice(None), dead))):
                    state = optimizer.state.get(param, {})
                    if "exp_avg" in state:
                        state["exp_avg"][rows] = 0.0
                    if "exp_avg_sq" in state:
                        # the parameter's mean second moment, not zero: with zero, Adam's next steps move
                        # these entries by the full rate (as its first steps did, which killed them)
                        sq = state["exp_avg_sq"]
                        sq[rows] = sq.mean()
    return counts


def _mean_error_cm(model: PoseRegressor, images: torch.Tensor, positions: np.ndarray, device) -> float:
    preds = []
    with torch.no_grad():
        for s in range(0, images.shape[0], 128):
            preds.append(model(images_to_tensor(images[s:s + 128], device))[0].double().cpu().numpy())
    return float(np.mean(np.linalg.norm(np.concatenate(preds) - positions, axis=1)) * 100.0)


def lr_at(step: int, n_steps: int, base: float, schedule: str, warmup_steps: int = 0) -> float:
    """The learning rate of (1-based) ``step`` of ``n_steps``: constant, or cosine from ``base`` at step 1
    towards 0 after the last step; times step / warmup_steps for the first ``warmup_steps`` steps. Adam's
    first steps move every weight by about the full rate whatever its gradient, and at 3e-3 that pushed
    all of a small trunk's ReLUs below zero for some seeds (dead features: the loss stays at the mean
    guess for good); the ramp lets the moment estimates settle first."""
    ramp = min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant":
        return base * ramp
    return ramp * 0.5 * base * (1.0 + math.cos(math.pi * (step - 1) / n_steps))


def train_pose_regressor(model: PoseRegressor, images: np.ndarray, positions: np.ndarray,
                         cfg: PosePretrainConfig, test_images: np.ndarray | None = None,
                         test_positions: np.ndarray | None = None, progress: Progress | None = None
                         ) -> dict[str, Any]:
    """Adam on the mean squared error of normalized positions; returns a history in cm. ``progress``: told
    each step (step, mean loss since the last history entry, the last held-out error)."""
    device = resolve_device(cfg.device)
    model.to(device)
    pos = np.asarray(positions, dtype=float)
    with torch.no_grad():
        model.pose_mean.copy_(torch.as_tensor(pos.mean(0), dtype=torch.float32))
        model.pose_std.copy_(torch.as_tensor(np.maximum(pos.std(0), 1e-2), dtype=torch.float32))
    img_t = torch.as_tensor(images, device=device)
    pos_t = torch.as_tensor(pos, dtype=torch.float32, device=device)
    gen = torch.Generator().manual_seed(cfg.seed)
    m = img_t.shape[0]
    bs = min(cfg.batch_size, m)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    history: list[dict[str, float]] = []
    history_recycled: list[dict[str, Any]] = []
    n_steps = max(cfg.iterations, 1)
    perm, pos_i, running = torch.randperm(m, generator=gen), 0, 0.0
    if progress is not None:
        progress.restart(cfg.iterations, f"step 0/{cfg.iterations}")
    model.train()
    for step in range(1, cfg.iterations + 1):
        if pos_i + bs > m:
            perm, pos_i = torch.randperm(m, generator=gen), 0
        idx = perm[pos_i:pos_i + bs].to(device)
        pos_i += bs
        batch = images_to_tensor(img_t[idx], device)
        if cfg.augment_shift or cfg.augment_color:
            batch = augment_images(batch, cfg.augment_shift, cfg.augment_color, gen)
        pred, _ = model(batch)
        loss = (((pred - pos_t[idx]) / model.pose_std) ** 2).sum(-1).mean()
        if cfg.lr_schedule == "cosine" or step <= cfg.warmup_steps:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, n_steps, cfg.learning_rate, cfg.lr_schedule, cfg.warmup_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += float(loss.detach())
        if cfg.recycle_every and step % cfg.recycle_every == 0 and step < cfg.iterations:
            recycled = recycle_dead_channels(model.net, batch, opt, gen)
            if any(recycled):
                history_recycled.append({"step": step, "channels": recycled})
        logged = step % cfg.log_every == 0 or step == cfg.iterations
        if logged:
            entry = {"step": step, "train_loss": running / (cfg.log_every if step % cfg.log_every == 0
                                                            else step % cfg.log_every)}
            if test_images is not None:
                model.eval()
                entry["test_error_cm"] = _mean_error_cm(model, torch.as_tensor(test_images, device=device),
                                                        np.asarray(test_positions), device)
                model.train()
            history.append(entry)
            running = 0.0
        if progress is not None:  # the loss: mean over the steps since the last history entry (or that entry's)
            loss_now = history[-1]["train_loss"] if logged else running / (step % cfg.log_every)
            held_out = history[-1].get("test_error_cm") if history else None
            progress.update(step, f"step {step}/{cfg.iterations} loss {loss_now:.4g}"
                            + ("" if held_out is None else f", held-out error {held_out:.2f} cm"))
    model.eval()
    return {"history": history, "recycled_channels": history_recycled}


def save_pose_weights(model: PoseRegressor, path: str | Path, extra: dict[str, Any] | None = None) -> str:
    """safetensors file: vision tensors under the policy's names + head + pose normalization."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"kind": "gps-ros2-pose-pretrain", "vision_config": json.dumps(model.net.config.to_dict()),
            "extra": json.dumps(extra or {})}
    data = st_save(tensors, metadata=meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    sha = sha256_hex(data)
    Path(str(path) + ".sha256").write_text(sha + "\n")
    return sha


def load_pose_regressor(path: str | Path, device: str | torch.device = "cpu") -> PoseRegressor:
    data = Path(path).read_bytes()
    side = Path(str(path) + ".sha256")
    if side.exists() and side.read_text().strip() != sha256_hex(data):
        raise PolicyFormatError(f"SHA-256 mismatch for {path}")
    meta = read_safetensors_metadata(data)
    if meta.get("kind") != "gps-ros2-pose-pretrain":
        raise PolicyFormatError(f"{path} is not a pose-pretraining weights file")
    try:
        model = PoseRegressor(VisuomotorConfig(**json.loads(meta["vision_config"])))
        model.load_state_dict(st_load(data), strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise PolicyFormatError(f"{path}: cannot rebuild the pose regressor: {exc}") from exc
    return model.to(device).eval()


def load_pretrained_vision(policy: GaussianPolicy, path: str | Path) -> list[str]:
    """Copy the conv + spatial-softmax tensors of a pose-pretraining file into ``policy``.

    Checks that every vision tensor exists with the same shape; returns the copied tensor names.
    """
    if not policy.uses_images:
        raise ValueError("only a visuomotor policy has vision layers")
    src = load_pose_regressor(path).state_dict()
    dst = policy.state_dict()
    names = [k for k in dst if k.startswith("net.convs.") or k.startswith("net.softmax.")]
    for k in names:
        if k not in src:
            raise PolicyFormatError(f"pretrained file lacks {k!r}")
        if tuple(src[k].shape) != tuple(dst[k].shape):
            raise PolicyFormatError(f"shape mismatch for {k!r}: file {list(src[k].shape)}, "
                                    f"policy {list(dst[k].shape)}")
    with torch.no_grad():
        for k in names:
            dst[k].copy_(src[k])
    return names


def pose_target_box(cfg: PosePretrainConfig, task: Any) -> np.ndarray:
    """The box the target is placed in: cfg.target_box, else the task's condition range plus a margin."""
    if cfg.target_box is not None:
        return np.asarray(cfg.target_box, dtype=float)
    return target_box_for(task, cfg.condition_set, cfg.target_margin)


def collect_pose_dataset(cfg: PosePretrainConfig, sim: Any = None, progress: Progress | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cfg.num_train + cfg.num_test images with target positions (seeded by cfg.seed), split into
    (train images, train positions, test images, test positions). ``sim`` defaults to an ArmSim of
    cfg.task that renders at cfg.image_size (closed afterwards)."""
    own_sim = sim is None
    if own_sim:
        from gps_sim import ArmSim

        sim = ArmSim(cfg.task, image_size=cfg.image_size, render_images=True)
    try:
        images, positions = collect_pose_images(sim, cfg.num_train + cfg.num_test, np.random.default_rng(cfg.seed),
                                                pose_target_box(cfg, sim.task), cfg.condition_set, cfg.joint_noise,
                                                cfg.scene_randomization, progress,
                                                {"lighting": cfg.scene_lighting, "camera": cfg.scene_camera,
                                                 "texture": cfg.scene_texture})
    finally:
        if own_sim:
            sim.close()
    n = cfg.num_train
    return images[:n], positions[:n], images[n:], positions[n:]


def pretrain_pose(config: PosePretrainConfig | dict[str, Any], sim: Any = None,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Collect images, train, evaluate on held-out images, save weights + metrics; return the metrics.

    Progress (rendering, then step, loss and ETA) goes to ``progress``, by default a
    :class:`gps_core.progress.Progress` on stdout (a live line on a terminal, a plain line every
    ``GPS_PROGRESS_INTERVAL`` s elsewhere).

    ``sim`` defaults to ``gps_sim.ArmSim(config.task, image_size, render_images=True)``; any object
    with the same methods (reset, num_conditions, joint_positions, joint_limits, joint_limited,
    set_joint_state, target_pose, set_target_pose, render, task) works.
    """
    cfg = config if isinstance(config, PosePretrainConfig) else PosePretrainConfig.from_dict(config)
    progress = progress or Progress("pose pretraining")
    t0 = time.perf_counter()
    tr_img, tr_pos, te_img, te_pos = collect_pose_dataset(cfg, sim, progress)
    t_collect = time.perf_counter() - t0

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = PoseRegressor(cfg.vision_config())
    result = train_pose_regressor(model, tr_img, tr_pos, cfg,
                                  te_img if cfg.num_test else None, te_pos if cfg.num_test else None, progress)
    device = resolve_device(cfg.device)
    train_err = _mean_error_cm(model, torch.as_tensor(tr_img, device=device), tr_pos, device)
    test_err = (_mean_error_cm(model, torch.as_tensor(te_img, device=device), te_pos, device)
                if cfg.num_test else math.nan)
    baseline = float(np.mean(np.linalg.norm(te_pos - tr_pos.mean(0), axis=1)) * 100.0) if cfg.num_test else math.nan
    if sim is not None:
        task = sim.task
    else:
        from gps_sim import load_task

        task = load_task(cfg.task)
    metrics = {
        "task": cfg.task, "image_size": cfg.image_size, "num_train": cfg.num_train, "num_test": cfg.num_test,
        "iterations": cfg.iterations, "seed": cfg.seed,
        "train_error_cm": train_err, "test_error_cm": test_err, "baseline_mean_error_cm": baseline,
        "target_box": pose_target_box(cfg, task).tolist(),
        "history": result["history"], "recycled_channels": result["recycled_channels"],
        "active_channels": active_channels(model.net, images_to_tensor(torch.as_tensor(tr_img[:100]), device)),
        "collect_time_s": t_collect, "wall_time_s": time.perf_counter() - t0,
        "config": dataclasses.asdict(cfg),
    }
    if cfg.output:
        metrics["weights"] = str(cfg.output)
        metrics["sha256"] = save_pose_weights(model.cpu(), cfg.output,
                                              {k: metrics[k] for k in ("test_error_cm", "baseline_mean_error_cm")})
        Path(cfg.output).with_suffix(".metrics.json").write_text(json.dumps(metrics, indent=2))
    progress.finish(f"{cfg.iterations} steps, held-out error {test_err:.2f} cm (mean-guess baseline "
                    f"{baseline:.2f} cm)" if cfg.num_test else f"{cfg.iterations} steps, train error {train_err:.2f} cm")
    return metrics


def main(argv: list[str] | None = None) -> int:
    """``python -m gps_trainer.pose_pretraining --config config/policy/pose_pretrain.yaml [key=value ...]``."""
    import argparse

    from gps_trainer.config import parse_overrides

    ap = argparse.ArgumentParser(description="Pose pretraining of the visuomotor CNN's vision layers")
    ap.add_argument("--config", default=None, help="YAML file with a pose_pretrain section")
    ap.add_argument("overrides", nargs="*", help="key=value overrides (values parsed as YAML)")
    args = ap.parse_args(argv)
    data = load_yaml_section(args.config, "pose_pretrain") if args.config else {}
    try:
        data.update(parse_overrides(args.overrides))
        cfg = PosePretrainConfig.from_dict(data, source=args.config)
    except ValueError as e:
        ap.error(str(e))
    metrics = pretrain_pose(cfg)
    summary = {k: metrics[k] for k in ("test_error_cm", "baseline_mean_error_cm", "train_error_cm",
                                       "num_train", "num_test", "wall_time_s")}
    summary["weights"] = metrics.get("weights")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
