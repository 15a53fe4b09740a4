"""The texture family's pool (issue 24, gps_core.ood): textures and materials built into every task model.

Per split, strength and variant one seamless texture (two colours at the strength's contrast mixed by a
periodic pattern; validation and test use other pattern kinds) and, per textured geom, a material whose
texture repeat a reset of the texture family sets (gps_sim.ood_scene).
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from gps_core.ood import OOD_SPLITS, OOD_STRENGTHS, TEXTURE_SIDE, TEXTURE_VARIANTS, band, interleaved_uniform

__all__ = ["TEXTURED_GEOMS", "PATTERNS", "texture_image", "add_ood_assets", "material_name"]

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
    # dots: a grid of discs
    cells = int(rng.choice([2, 4]))
    u, v = (x * cells) % 1.0 - 0.5, (y * cells) % 1.0 - 0.5
    return (np.hypot(u, v) < float(rng.uniform(0.2, 0.4))).astype(float)


#: Pattern kinds per split: validation and test textures differ in kind as well as in colours.
PATTERNS = {"validation": ("stripes", "checker"), "test": ("blotches", "dots")}


def texture_image(split: str, strength: int, variant: int) -> np.ndarray:
    """(TEXTURE_SIDE, TEXTURE_SIDE, 3) uint8: texture ``variant`` of a split's strength. Two colours at an
    RGB distance from the strength's contrast band (the split's pieces of it) mixed by a periodic pattern
    of the split's kinds; a fixed function of (split, strength, variant)."""
    rng = np.random.default_rng([24, OOD_SPLITS.index(split), int(strength), int(variant)])
    lo, hi = band("texture", "contrast", strength)
    contrast = interleaved_uniform(rng, lo, hi, split)
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
    """The texture family's pool: per split, strength and variant a texture and, for each textured geom,
    a material (each with its own texture repeat, set at reset)."""
    role = int(mujoco.mjtTextureRole.mjTEXROLE_RGB)
    for split in OOD_SPLITS:
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


