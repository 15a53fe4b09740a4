"""The texture family's pool (issue 24, gps_core.ood): textures and materials built into every task model.

Per split, strength and variant one seamless texture (two colours at the strength's contrast mixed by a
periodic pattern; validation and test use other pattern kinds) and, per textured geom, a material whose
texture repeat a reset of the texture family sets (gps_sim.ood_scene).

A third split, ``train`` (:data:`TRAIN_SPLIT`), is the pool of training-time texture randomization (the
random_scene key ``texture``, gps_core.ood.TRAIN_APPEARANCE_KEYS): its own pattern kinds, which neither
held-out split uses, and colours at a contrast uniform over the strength's whole band (the held-out splits
draw from their pieces of it), so a texture the training sees is never a held-out one.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from gps_core.ood import OOD_SPLITS, OOD_STRENGTHS, TEXTURE_SIDE, TEXTURE_VARIANTS, band, interleaved_uniform

__all__ = ["TEXTURED_GEOMS", "PATTERNS", "TRAIN_SPLIT", "TEXTURE_SPLITS", "texture_image", "add_ood_assets",
           "material_name"]

#: The training pool's split name: not an OOD split (no condition set is named after it).
TRAIN_SPLIT = "train"
#: Every split with textures in the model; the training pool last, so the held-out splits' textures and
#: materials keep the ids they had before it existed.
TEXTURE_SPLITS = (*OOD_SPLITS, TRAIN_SPLIT)

#: The geoms the texture family textures: the table and the floor (the camera's background).
TEXTURED_GEOMS = ("table", "floor")


def _texture_name(split: str, strength: int, variant: int) -> str:
    return f"ood_tex_{split}_{strength}_{variant}"


def material_name(geom: str, split: str, strength: int, variant: int) -> str:
    return f"ood_{geom}_{split}_{strength}_{variant}"


def _periodic_pattern(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, n) values in [0, 1] that tile seamlessly: integer periods across the texture."""
    y, x = np.mgrid[0:n, 0:n] / n
    if kind == "stripes":
        fx, fy = (int(v) for v in rng.integers(1, 5, 2))
        return (np.sin(2 * math.pi * (fx * x + fy * y)) > 0).astype(float)
    if kind == "checker":
        cells = int(rng.choice([2, 4, 8]))
        return ((np.floor(x * cells) + np.floor(y * cells)) % 2).astype(float)
    if kind == "blotches":  # low-pass periodic noise, thresholded softly
        spectrum = np.fft.fft2(rng.normal(size=(n, n)))
        f = np.fft.fftfreq(n) * n
        spectrum *= np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * 3.0 ** 2))
        field = np.real(np.fft.ifft2(spectrum))
        return 1.0 / (1.0 + np.exp(-field / (field.std() * 0.3 + 1e-12)))
    if kind == "waves":  # two smooth plane waves, not thresholded (stripes are)
        fx, fy, gx, gy = (int(v) for v in rng.integers(1, 4, 4))
        phase = rng.uniform(0.0, 2 * math.pi, 2)
        return 0.5 + 0.25 * (np.sin(2 * math.pi * (fx * x + fy * y) + phase[0])
                             + np.sin(2 * math.pi * (gx * x - gy * y) + phase[1]))
    if kind == "rings":  # concentric rings about each cell's centre (|u|, |v| are periodic, so it tiles)
        cells = int(rng.choice([1, 2]))
        u, v = (x * cells) % 1.0 - 0.5, (y * cells) % 1.0 - 0.5
        rings = int(rng.integers(2, 5))
        return (np.sin(2 * math.pi * rings * np.hypot(u, v)) > 0).astype(float)
    # dots: a grid of discs
    cells = int(rng.choice([2, 4]))
    u, v = (x * cells) % 1.0 - 0.5, (y * cells) % 1.0 - 0.5
    return (np.hypot(u, v) < float(rng.uniform(0.2, 0.4))).astype(float)


#: Pattern kinds per split: validation and test textures differ in kind as well as in colours, and the
#: training pool's kinds are neither's.
PATTERNS = {"validation": ("stripes", "checker"), "test": ("blotches", "dots"), TRAIN_SPLIT: ("waves", "rings")}


def texture_image(split: str, strength: int, variant: int) -> np.ndarray:
    """(TEXTURE_SIDE, TEXTURE_SIDE, 3) uint8: texture ``variant`` of a split's strength. Two colours at an
    RGB distance from the strength's contrast band (the split's pieces of it) mixed by a periodic pattern
    of the split's kinds; a fixed function of (split, strength, variant). The ``train`` split's contrast is
    uniform over the whole band."""
    rng = np.random.default_rng([24, TEXTURE_SPLITS.index(split), int(strength), int(variant)])
    lo, hi = band("texture", "contrast", strength)
    contrast = float(rng.uniform(lo, hi)) if split == TRAIN_SPLIT else interleaved_uniform(rng, lo, hi, split)
    for _ in range(1000):
        c0 = rng.uniform(0.1, 0.9, 3)
        d = rng.normal(size=3)
        c1 = c0 + contrast * d / np.linalg.norm(d)
        if np.all((c1 >= 0.0) & (c1 <= 1.0)):
            break
    else:  # pragma: no cover - a 0.75 step fits inside the cube from most points
        raise RuntimeError("texture colours: none fit")
    pattern = _periodic_pattern(PATTERNS[split][variant % 2], rng, TEXTURE_SIDE)[..., None]
    return np.clip(np.rint(255 * (c0 + (c1 - c0) * pattern)), 0, 255).astype(np.uint8)


def add_ood_assets(spec: mujoco.MjSpec) -> None:
    """The texture family's pool: per split (the held-out ones and the training pool), strength and variant a
    texture and, for each textured geom, a material (each with its own texture repeat, set at reset)."""
    role = int(mujoco.mjtTextureRole.mjTEXROLE_RGB)
    for split in TEXTURE_SPLITS:
        for k in OOD_STRENGTHS:
            for v in range(TEXTURE_VARIANTS):
                tex = spec.add_texture()
                tex.name, tex.type = _texture_name(split, k, v), mujoco.mjtTexture.mjTEXTURE_2D
                tex.width = tex.height = TEXTURE_SIDE
                tex.nchannel = 3
                tex.data = texture_image(split, k, v).tobytes()
                for geom in TEXTURED_GEOMS:
                    mat = spec.add_material()
                    mat.name = material_name(geom, split, k, v)
                    names = list(mat.textures)
                    names[role] = tex.name
                    mat.textures = names
                    mat.texuniform = True


