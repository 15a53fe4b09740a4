"""Out-of-distribution families (issue 24): perturbations the training never draws, in strength levels.

A family is a kind of change to what the camera sees, never to the state, the cost or the physics:

- ``lighting``: the scene's lights brighter or darker, tinted, and the key light from another direction;
- ``camera``: the head camera moved by a few cm and turned by a few degrees from its calibrated pose;
- ``clutter``: distractors larger than the visual sets' and closer to the target, from strength 2 on one
  more object floating between the camera and the target, partly covering it;
- ``same_colour``: the visual sets' distractors, but coloured close to the target's colour (the visual sets
  keep every distractor at least ``min_color_distance`` from it);
- ``texture``: the table and the floor (the background) textured instead of plain;
- ``image_noise``: Gaussian pixel noise and Gaussian blur on the rendered image.

Each family has strengths 1-3 and two splits, ``validation`` (for choices) and ``test`` (final numbers
only), as condition sets named ``ood_<kind>_<strength>_<split>`` (:func:`ood_set_name`). The two splits
draw every continuous value from the same strength band but from disjoint parts of it: the band is cut
into equal pieces, validation draws from the even ones and test from the odd ones
(:func:`interleaved_uniform`), so no validation draw equals a test draw while both measure one strength.
The draws are functions of a numpy Generator (``ArmSim.reset`` seeds it from the set, the condition and
the reset seed).

This module is numpy only (the controller applies :func:`perturb_image` to its camera images);
``gps_sim.ood_scene`` applies the scene draws to the MuJoCo model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

OOD_KINDS = ("lighting", "camera", "clutter", "same_colour", "texture", "image_noise")
OOD_STRENGTHS = (1, 2, 3)
OOD_SPLITS = ("validation", "test")
#: The pieces a band is cut into for the two splits (even pieces: validation, odd: test).
BAND_PIECES = 4
ANGLE_PIECES = 12  # 30-degree sectors of a direction's azimuth or a tint's hue


def ood_set_name(kind: str, strength: int, split: str) -> str:
    return f"ood_{kind}_{int(strength)}_{split}"


OOD_SETS = tuple(ood_set_name(k, s, p) for k in OOD_KINDS for s in OOD_STRENGTHS for p in OOD_SPLITS)


def parse_ood_set_name(name: str) -> tuple[str, int, str] | None:
    """(kind, strength, split) of an OOD condition-set name; None for any other name."""
    for kind in OOD_KINDS:
        for strength in OOD_STRENGTHS:
            for split in OOD_SPLITS:
                if name == ood_set_name(kind, strength, split):
                    return kind, strength, split
    return None


def _deg(lo: float, hi: float) -> tuple[float, float]:
    return math.radians(lo), math.radians(hi)


#: kind -> parameter -> (lo, hi) band per strength 1, 2, 3. Units in the comments.
BANDS: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {
    "lighting": {
        # u: the lights' brightness times e^-u (darker) or e^(u/2) (brighter: the nominal image is bright, and
        # a factor of e^u saturates it long before its inverse darkens it as much)
        "log_intensity": ((0.2, 0.4), (0.4, 0.7), (0.7, 1.0)),
        "tilt": (_deg(10, 25), _deg(25, 45), _deg(45, 65)),  # rad between the key light's new and nominal direction
        "tint": ((0.08, 0.16), (0.16, 0.28), (0.28, 0.40)),  # chroma of the lights' colour factor (0 = white)
    },
    "camera": {
        "shift": ((0.01, 0.02), (0.02, 0.04), (0.04, 0.06)),  # m, the camera's position
        "rotation": (_deg(1, 2), _deg(2, 4), _deg(4, 6)),  # rad, about an axis through the camera
    },
    "clutter": {
        # half sizes / radii (m); the visual sets draw 0.015-0.04 (scenes.SCENE_DEFAULTS, the task files)
        "size": ((0.042, 0.05), (0.05, 0.065), (0.065, 0.08)),
        # m between a distractor's footprint and the target's; the visual sets keep >= 0.05
        "gap": ((0.03, 0.045), (0.01, 0.03), (0.0, 0.01)),
        # the occluder's image disc overlaps the target's by this fraction of the sum of their radii
        # (strength 1: no occluder)
        "overlap": ((0.0, 0.0), (0.25, 0.45), (0.45, 0.7)),
    },
    "same_colour": {
        # RGB distance of each distractor's colour from a target colour; the visual sets keep >= 0.45
        "color_distance": ((0.26, 0.38), (0.15, 0.26), (0.05, 0.15)),
    },
    "texture": {
        "contrast": ((0.15, 0.3), (0.3, 0.5), (0.5, 0.75)),  # RGB distance between a texture's two colours
        "repeat": ((2.0, 4.0), (3.0, 6.0), (4.0, 8.0)),  # pattern periods per metre
    },
    "image_noise": {
        "noise_std": ((3.0, 6.0), (6.0, 12.0), (12.0, 24.0)),  # pixel noise std, of 255
        "blur": ((0.3, 0.6), (0.6, 1.0), (1.0, 1.6)),  # Gaussian blur sigma, px of a 64-px image
    },
}
#: The blur sigma's unit: pixels of an image this wide (a larger image gets a proportionally wider blur).
BLUR_REFERENCE_SIDE = 64
#: The occluder of the clutter family: its half size / radius (m) and how far in front of the target
#: (towards the camera, m) it floats.
OCCLUDER_SIZE = (0.025, 0.04)
OCCLUDER_DISTANCE = (0.10, 0.18)
#: Texture pool per (split, strength): textures built into the model (gps_sim.ood_scene).
TEXTURE_VARIANTS = 4
TEXTURE_SIDE = 64

_SPEC_KEYS = {"kind", "strength", "split", "scene"}


def ood_spec(spec: Any, where: str = "ood") -> dict[str, Any]:
    """A validated OOD spec {kind, strength, split, scene}; ``scene`` (the placement rules of the clutter
    and same_colour families: a random_scene mapping, gps_sim.scenes.scene_spec) defaults to {}. A clear
    error names the key and the value."""
    if not isinstance(spec, dict) or not spec.keys() <= _SPEC_KEYS or not {"kind", "strength", "split"} <= spec.keys():
        raise ValueError(f"{where}: expected {{kind, strength, split[, scene]}}, got {spec!r}")
    if spec["kind"] not in OOD_KINDS:
        raise ValueError(f"{where}.kind: expected one of {OOD_KINDS}, got {spec['kind']!r}")
    if spec["strength"] not in OOD_STRENGTHS or isinstance(spec["strength"], bool):
        raise ValueError(f"{where}.strength: expected one of {OOD_STRENGTHS}, got {spec['strength']!r}")
    if spec["split"] not in OOD_SPLITS:
        raise ValueError(f"{where}.split: expected one of {OOD_SPLITS}, got {spec['split']!r}")
    scene = spec.get("scene", {}) or {}
    if not isinstance(scene, dict):
        raise ValueError(f"{where}.scene: expected a random_scene mapping, got {scene!r}")
    return {"kind": str(spec["kind"]), "strength": int(spec["strength"]), "split": str(spec["split"]),
            "scene": dict(scene)}


def band(kind: str, name: str, strength: int) -> tuple[float, float]:
    return BANDS[kind][name][int(strength) - 1]


def interleaved_uniform(rng: np.random.Generator, lo: float, hi: float, split: str,
                        pieces: int = BAND_PIECES) -> float:
    """Uniform over the split's pieces of [lo, hi]: the interval cut into ``pieces`` equal pieces,
    validation draws from the even-numbered ones (0, 2, ...), test from the odd-numbered ones."""
    if split not in OOD_SPLITS or pieces < 2 or pieces % 2:
        raise ValueError(f"split {split!r} / pieces {pieces}: expected one of {OOD_SPLITS} and an even count >= 2")
    if hi <= lo:
        return float(lo)
    piece = 2 * int(rng.integers(pieces // 2)) + OOD_SPLITS.index(split)
    return float(lo + (hi - lo) * (piece + rng.uniform()) / pieces)


def piece_of(value: float, lo: float, hi: float, pieces: int = BAND_PIECES) -> int:
    """Which piece of [lo, hi] a value lies in (the inverse of :func:`interleaved_uniform`'s choice)."""
    return min(int((value - lo) / (hi - lo) * pieces), pieces - 1)


def interleaved_angle(rng: np.random.Generator, split: str) -> float:
    """An angle in [0, 2 pi) from the split's 30-degree sectors (validation: even, test: odd)."""
    return interleaved_uniform(rng, 0.0, 2 * math.pi, split, ANGLE_PIECES)


def _unit_vector(rng: np.random.Generator, split: str) -> np.ndarray:
    """A direction uniform on the sphere, its azimuth from the split's sectors."""
    z = float(rng.uniform(-1.0, 1.0))
    a = interleaved_angle(rng, split)
    r = math.sqrt(max(0.0, 1.0 - z * z))
    return np.array([r * math.cos(a), r * math.sin(a), z])


def _chroma_basis() -> tuple[np.ndarray, np.ndarray]:
    """Two orthonormal RGB directions perpendicular to grey (1, 1, 1)."""
    e1 = np.array([1.0, -1.0, 0.0]) / math.sqrt(2.0)
    e2 = np.array([1.0, 1.0, -2.0]) / math.sqrt(6.0)
    return e1, e2


def tint_factor(chroma: float, hue: float) -> np.ndarray:
    """RGB factor 1 + chroma * (a unit direction perpendicular to grey at angle ``hue``)."""
    e1, e2 = _chroma_basis()
    return 1.0 + chroma * (math.cos(hue) * e1 + math.sin(hue) * e2)


def draw_lighting(spec: dict, rng: np.random.Generator) -> dict[str, Any]:
    """{intensity (factor), tint (RGB factor), tint_chroma, tint_hue, tilt (rad), tilt_azimuth (rad)}."""
    s, k = spec["split"], spec["strength"]
    log_i = interleaved_uniform(rng, *band("lighting", "log_intensity", k), s)
    exponent = 0.5 * log_i if rng.uniform() < 0.5 else -log_i  # brighter or darker
    chroma = interleaved_uniform(rng, *band("lighting", "tint", k), s)
    hue = interleaved_angle(rng, s)
    tilt = interleaved_uniform(rng, *band("lighting", "tilt", k), s)
    azimuth = interleaved_angle(rng, s)
    return {"intensity": math.exp(exponent), "log_intensity": log_i, "tint": tint_factor(chroma, hue).tolist(),
            "tint_chroma": chroma,
            "tint_hue": hue, "tilt": tilt, "tilt_azimuth": azimuth}


def draw_camera(spec: dict, rng: np.random.Generator) -> dict[str, Any]:
    """{shift (3, m, world frame), rotation_axis (3, unit, world frame), rotation (rad)}."""
    s, k = spec["split"], spec["strength"]
    shift = interleaved_uniform(rng, *band("camera", "shift", k), s) * _unit_vector(rng, s)
    angle = interleaved_uniform(rng, *band("camera", "rotation", k), s)
    return {"shift": shift.tolist(), "rotation_axis": _unit_vector(rng, s).tolist(), "rotation": angle}


def draw_image_noise(spec: dict, rng: np.random.Generator) -> dict[str, Any]:
    """{noise_std (of 255), blur (sigma, px of a BLUR_REFERENCE_SIDE-px image), noise_seed}."""
    s, k = spec["split"], spec["strength"]
    return {"noise_std": interleaved_uniform(rng, *band("image_noise", "noise_std", k), s),
            "blur": interleaved_uniform(rng, *band("image_noise", "blur", k), s),
            "noise_seed": int(rng.integers(2**31))}


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues: the rotation by ``angle`` about the unit ``axis``."""
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    kx = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + math.sin(angle) * kx + (1.0 - math.cos(angle)) * kx @ kx


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalized 1-D Gaussian taps out to 3 sigma (a single tap of 1 for sigma <= 0)."""
    if sigma <= 0.0:
        return np.ones(1)
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def perturb_image(image: np.ndarray, noise_std: float, blur: float, rng: np.random.Generator | None
                  ) -> np.ndarray:
    """An (H, W, 3) uint8 image blurred (separable Gaussian, sigma = ``blur`` px of a 64-px image, scaled
    to the image's width; edges replicated) and then given Gaussian pixel noise of std ``noise_std`` (of
    255) from ``rng``; rounded and clipped to uint8. Zero noise and blur return the image unchanged."""
    img = np.asarray(image)
    if img.ndim != 3 or img.dtype != np.uint8:
        raise ValueError(f"perturb_image: expected an (H, W, C) uint8 image, got {img.dtype} {img.shape}")
    if not (np.isfinite(noise_std) and noise_std >= 0.0 and np.isfinite(blur) and blur >= 0.0):
        raise ValueError(f"perturb_image: noise_std and blur must be finite and >= 0, got {noise_std}, {blur}")
    if noise_std == 0.0 and blur == 0.0:
        return img
    out = img.astype(np.float64)
    k = gaussian_kernel(blur * img.shape[1] / BLUR_REFERENCE_SIDE)
    if k.size > 1:
        r = k.size // 2
        for axis in (0, 1):
            pad = [(0, 0)] * 3
            pad[axis] = (r, r)
            padded = np.pad(out, pad, mode="edge")
            n = out.shape[axis]
            out = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    if noise_std > 0.0:
        if rng is None:
            raise ValueError("perturb_image: noise needs a random generator")
        out = out + rng.normal(0.0, noise_std, out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def frame_rng(noise_seed: int, frame: int) -> np.random.Generator:
    """The pixel noise of one frame: a function of the trial's noise seed and the frame's control step, so
    rendering a state twice gives the same image however often it is rendered."""
    return np.random.default_rng([int(noise_seed), int(frame)])


# ---------------------------------------------------------------------------------------------------------
# Training-time appearance randomization (issue 24's levers), OFF by default.
#
# The paper's conclusion (Levine et al. 2016, Sec. 8) names the limit of its policies, that they "do not
# generalize to dramatically different settings", and proposes training in a variety of environments. The
# random_scene spec's keys ``lighting``, ``camera`` and ``texture`` (gps_sim.scenes.scene_spec: each the
# largest strength a training scene draws, 0-3, 0 = off) add that variety to every random scene of the
# training draws (the *_dr tasks' sample_scenes, pose pretraining's random scenes). They are meant to be
# measured on the held-out families of the same name: ``lighting`` on ood_lighting_*, ``camera`` on
# ood_camera_*, ``texture`` on ood_texture_*.
#
# What keeps the held-out families held out: a family's draw is one strength's band, cut into pieces of
# which validation draws the even and test the odd ones, from the evaluation set's own seeded stream. A
# training draw comes from the training reset's generator (set 'train', or pose pretraining's seed), and
# every continuous value is uniform over the whole range from nominal (0) up to the top of the largest
# strength's band, not from any split's pieces of one band; the textures are other pattern kinds than
# either split's (gps_sim.ood_textures, split "train"). So a training scene may look like a held-out one in
# degree (that is the point of the lever), but no training draw is a held-out draw, and a training maximum
# below 3 leaves the stronger held-out strengths as a test of extrapolation.
#: The random_scene keys of training-time appearance randomization, in the order a reset draws them.
TRAIN_APPEARANCE_KEYS = ("lighting", "camera", "texture")
#: The largest strength a training key accepts (the families' strongest band).
TRAIN_MAX_STRENGTH = max(OOD_STRENGTHS)


def training_range(kind: str, name: str, max_strength: int) -> tuple[float, float]:
    """(0, the top of the band of ``max_strength``): the training draws' range of one family parameter."""
    return 0.0, float(band(kind, name, max_strength)[1])


def _uniform_direction(rng: np.random.Generator) -> np.ndarray:
    z = float(rng.uniform(-1.0, 1.0))
    a = float(rng.uniform(0.0, 2 * math.pi))
    r = math.sqrt(max(0.0, 1.0 - z * z))
    return np.array([r * math.cos(a), r * math.sin(a), z])


def draw_training_lighting(max_strength: int, rng: np.random.Generator) -> dict[str, Any]:
    """A training draw of the lights, in :func:`draw_lighting`'s format: log intensity, tint chroma and tilt
    each uniform over [0, the top of ``max_strength``'s band], brighter or darker, tint hue and tilt azimuth
    uniform over the full circle (not the families' 30-degree sectors)."""
    log_i = float(rng.uniform(*training_range("lighting", "log_intensity", max_strength)))
    exponent = 0.5 * log_i if rng.uniform() < 0.5 else -log_i  # as draw_lighting: brightening saturates sooner
    chroma = float(rng.uniform(*training_range("lighting", "tint", max_strength)))
    hue = float(rng.uniform(0.0, 2 * math.pi))
    tilt = float(rng.uniform(*training_range("lighting", "tilt", max_strength)))
    azimuth = float(rng.uniform(0.0, 2 * math.pi))
    return {"intensity": math.exp(exponent), "log_intensity": log_i, "tint": tint_factor(chroma, hue).tolist(),
            "tint_chroma": chroma, "tint_hue": hue, "tilt": tilt, "tilt_azimuth": azimuth}


def draw_training_camera(max_strength: int, rng: np.random.Generator) -> dict[str, Any]:
    """A training draw of the head camera's pose, in :func:`draw_camera`'s format: a shift of length and a
    turn of angle uniform over [0, the top of ``max_strength``'s band], in directions / about axes uniform
    on the sphere."""
    shift = float(rng.uniform(*training_range("camera", "shift", max_strength))) * _uniform_direction(rng)
    angle = float(rng.uniform(*training_range("camera", "rotation", max_strength)))
    return {"shift": shift.tolist(), "rotation_axis": _uniform_direction(rng).tolist(), "rotation": angle}
