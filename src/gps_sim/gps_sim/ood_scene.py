"""The out-of-distribution families (gps_core.ood) applied to a task's MuJoCo scene.

The texture family's textures are in every task model (gps_sim.ood_textures; no geom uses them unless a
reset of the texture family assigns them). :class:`OodScene` remembers the
model's nominal lights, camera and materials, restores them at every reset and applies one draw of a
family: lights, camera pose and materials are edited in the compiled model, distractors go to the
scene's mocap bodies (visual only: they collide with nothing), image noise and blur are applied by
``ArmSim.render``. None of it touches the state, the cost or the physics.

:meth:`OodScene.apply_training` applies the training-time appearance randomization of a random scene (the
random_scene keys lighting / camera / texture; gps_core.ood, "Training-time appearance randomization") with
the same edits, from the training draws and the training texture pool.
"""

from __future__ import annotations

import math
from typing import Any

import mujoco
import numpy as np

from gps_core.ood import (
    OCCLUDER_DISTANCE,
    OCCLUDER_SIZE,
    TEXTURE_VARIANTS,
    band,
    draw_camera,
    draw_image_noise,
    draw_lighting,
    draw_training_camera,
    draw_training_lighting,
    interleaved_angle,
    interleaved_uniform,
    rotation_matrix,
)
from gps_sim.ood_textures import TEXTURED_GEOMS, TRAIN_SPLIT, material_name
from gps_sim.scenes import DISTRACTOR_SHAPES, NUM_DISTRACTORS, _footprint, appearance_strengths, scene_spec

#: The key light of the arm model (pr2_arm.xml) that the lighting family turns.
KEY_LIGHT = "key"
CAMERA = "head_camera"
OCCLUDER_SHAPES = ("sphere", "box", "cylinder")


def _far_colour(rng: np.random.Generator, avoid: np.ndarray, dist: np.ndarray) -> np.ndarray:
    for _ in range(1000):
        c = rng.uniform(0.05, 0.95, 3)
        if np.all(np.linalg.norm(avoid - c, axis=1) >= dist):
            return c
    raise RuntimeError("ood scene: no colour far enough from the target's")


class OodScene:
    """Nominal visuals of one compiled model, restored at every reset, and the families' edits."""

    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self._light = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_LIGHT, KEY_LIGHT)
        self._cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA)
        self._geoms = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, g) for g in TEXTURED_GEOMS]
        hl = model.vis.headlight
        self._nominal = {
            "light_diffuse": model.light_diffuse.copy(), "light_ambient": model.light_ambient.copy(),
            "light_specular": model.light_specular.copy(), "light_pos": model.light_pos.copy(),
            "light_dir": model.light_dir.copy(), "head": (np.array(hl.ambient), np.array(hl.diffuse),
                                                          np.array(hl.specular)),
            "cam_pos": model.cam_pos.copy(), "cam_quat": model.cam_quat.copy(),
            "geom_matid": model.geom_matid.copy(), "mat_texrepeat": model.mat_texrepeat.copy(),
        }
        # The point the key light aims at (its nominal ray meets the table top): a turned light still aims
        # there, so the lighting family changes the light's direction, not what it lights.
        pos, d = self._nominal["light_pos"][self._light], self._nominal["light_dir"][self._light]
        d = d / np.linalg.norm(d)
        self._light_aim = pos + d * (0.45 - pos[2]) / d[2]
        self._light_distance = float(np.linalg.norm(self._light_aim - pos))
        self.image_noise: dict[str, Any] | None = None

    def restore(self) -> None:
        m, n = self.model, self._nominal
        m.light_diffuse[:], m.light_ambient[:], m.light_specular[:] = (n["light_diffuse"], n["light_ambient"],
                                                                       n["light_specular"])
        m.light_pos[:], m.light_dir[:] = n["light_pos"], n["light_dir"]
        m.vis.headlight.ambient[:], m.vis.headlight.diffuse[:], m.vis.headlight.specular[:] = n["head"]
        m.cam_pos[:], m.cam_quat[:] = n["cam_pos"], n["cam_quat"]
        m.geom_matid[:], m.mat_texrepeat[:] = n["geom_matid"], n["mat_texrepeat"]
        self.image_noise = None

    def camera_position(self) -> np.ndarray:
        return self._nominal["cam_pos"][self._cam].copy()

    # ------------------------------------------------------------------ families
    def apply(self, spec: dict, rng: np.random.Generator, target_pose: np.ndarray, target_colors: np.ndarray,
              table_rgba: np.ndarray, table_bounds: np.ndarray) -> tuple[list[dict], dict[str, list[float]], dict]:
        """Apply one draw of the family ``spec`` (gps_core.ood.ood_spec; the model's nominal visuals restored
        before). Returns (distractors for the scene's mocap bodies, geom colours, what was drawn)."""
        kind = spec["kind"]
        if kind == "lighting":
            return [], {}, self._lighting(draw_lighting(spec, rng))
        if kind == "camera":
            return [], {}, self._camera(draw_camera(spec, rng))
        if kind == "texture":
            return [], {g: [1.0, 1.0, 1.0, 1.0] for g in TEXTURED_GEOMS}, self._texture(spec, rng)
        if kind == "image_noise":
            self.image_noise = draw_image_noise(spec, rng)
            return [], {}, dict(self.image_noise)
        if kind == "clutter":
            placed, drawn = draw_clutter(spec, rng, target_pose, target_colors, table_rgba, table_bounds,
                                         self.camera_position())
            return placed, {}, drawn
        placed, drawn = draw_same_colour(spec, rng, target_pose, target_colors, table_bounds)
        return placed, {}, drawn

    def apply_training(self, scene: dict | None, rng: np.random.Generator
                       ) -> tuple[dict[str, list[float]], dict | None]:
        """Apply a random scene's training-time appearance randomization (its keys lighting, camera, texture:
        the largest strength each draws, 0 = off) from ``rng``, in that order; a key that is off draws
        nothing, so with every key off ``rng`` is left as it was and the scene is drawn bit for bit as before
        the keys existed. Returns (geom colours: white for textured geoms, so the texture shows its own
        colours; what was drawn, None when nothing was). Call it on the nominal visuals (:meth:`restore`)."""
        on = appearance_strengths(scene)
        if not on:
            return {}, None
        drawn: dict[str, Any] = {}
        colours: dict[str, list[float]] = {}
        if "lighting" in on:
            drawn["lighting"] = self._lighting(draw_training_lighting(on["lighting"], rng))
        if "camera" in on:
            drawn["camera"] = self._camera(draw_training_camera(on["camera"], rng))
        if "texture" in on:
            drawn["texture"] = self._training_texture(on["texture"], rng)
            colours = {g: [1.0, 1.0, 1.0, 1.0] for g in TEXTURED_GEOMS}
        return colours, drawn

    def _training_texture(self, max_strength: int, rng: np.random.Generator) -> dict:
        """Per textured geom a texture of the training pool: a strength uniform in 1..max_strength, a variant,
        and a texture repeat uniform from the lowest strength's band's bottom to the top of max_strength's."""
        lo, hi = band("texture", "repeat", 1)[0], band("texture", "repeat", max_strength)[1]
        drawn: dict[str, Any] = {}
        for geom, gid in zip(TEXTURED_GEOMS, self._geoms, strict=True):
            k = int(rng.integers(1, max_strength + 1))
            v = int(rng.integers(TEXTURE_VARIANTS))
            mid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_MATERIAL, material_name(geom, TRAIN_SPLIT, k, v))
            repeat = float(rng.uniform(lo, hi))
            self.model.geom_matid[gid] = mid
            self.model.mat_texrepeat[mid] = (repeat, repeat)
            drawn[geom] = {"strength": k, "variant": v, "repeat": repeat}
        return drawn

    def _lighting(self, d: dict) -> dict:
        m, n, i = self.model, self._nominal, self._light
        factor = d["intensity"] * np.asarray(d["tint"])
        m.light_diffuse[i] = n["light_diffuse"][i] * factor
        m.light_ambient[i] = n["light_ambient"][i] * factor
        m.light_specular[i] = n["light_specular"][i] * factor
        amb, dif, spe = n["head"]
        m.vis.headlight.ambient[:], m.vis.headlight.diffuse[:], m.vis.headlight.specular[:] = (
            amb * factor, dif * factor, spe * factor)
        d0 = n["light_dir"][i] / np.linalg.norm(n["light_dir"][i])
        a = np.cross(d0, [0.0, 0.0, 1.0])
        a /= np.linalg.norm(a)
        b = np.cross(d0, a)
        new = math.cos(d["tilt"]) * d0 + math.sin(d["tilt"]) * (math.cos(d["tilt_azimuth"]) * a
                                                                + math.sin(d["tilt_azimuth"]) * b)
        m.light_dir[i] = new
        m.light_pos[i] = self._light_aim - self._light_distance * new
        return {**d, "direction": new.tolist()}

    def _camera(self, d: dict) -> dict:
        m, n, c = self.model, self._nominal, self._cam
        m.cam_pos[c] = n["cam_pos"][c] + np.asarray(d["shift"])
        rot = np.zeros(4)
        mujoco.mju_mat2Quat(rot, rotation_matrix(np.asarray(d["rotation_axis"]), d["rotation"]).ravel())
        q = np.zeros(4)
        mujoco.mju_mulQuat(q, rot, n["cam_quat"][c])  # turned about world axes through the camera
        m.cam_quat[c] = q
        return d

    def _texture(self, spec: dict, rng: np.random.Generator) -> dict:
        split, k = spec["split"], spec["strength"]
        drawn: dict[str, Any] = {}
        for geom, gid in zip(TEXTURED_GEOMS, self._geoms, strict=True):
            v = int(rng.integers(TEXTURE_VARIANTS))
            mid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_MATERIAL, material_name(geom, split, k, v))
            repeat = interleaved_uniform(rng, *band("texture", "repeat", k), split)
            self.model.geom_matid[gid] = mid
            self.model.mat_texrepeat[mid] = (repeat, repeat)
            drawn[geom] = {"variant": v, "repeat": repeat}
        return drawn


def _place_on_table(rng: np.random.Generator, n: int, target_xy: np.ndarray, table_bounds: np.ndarray,
                    table_top: float, target_radius: float, size_of, gap_of, max_distance_of, colour_of
                    ) -> list[dict]:
    """``n`` distractors standing on the table around the target, footprints apart by 1 cm: each a random
    shape with size_of(shape) half sizes at a distance drawn from [target_radius + gap_of() + its radius,
    max_distance_of(its radius)] from the target (x-y). The visual sets' placement (scenes.draw_distractor_scene)
    with the sizes, gaps and colours a family chooses."""
    placed: list[dict] = []
    for _ in range(300 * n):
        if len(placed) == n:
            break
        shape = DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]
        size = size_of(shape)
        radius, half_h = _footprint(shape, size)
        gap = gap_of()
        r_min = target_radius + gap + radius
        r = rng.uniform(r_min, max(r_min, max_distance_of(radius)))
        a = rng.uniform(0.0, 2 * math.pi)
        xy = target_xy + r * np.array([math.cos(a), math.sin(a)])
        if np.any(xy - radius < table_bounds[0]) or np.any(xy + radius > table_bounds[1]):
            continue
        if any(np.linalg.norm(xy - d["position"][:2]) < radius + d["radius"] + 0.01 for d in placed):
            continue
        placed.append({"shape": shape, "size": size.tolist(), "radius": radius, "gap": gap,
                       "position": np.array([xy[0], xy[1], table_top + half_h]),
                       "yaw": float(rng.uniform(0.0, math.pi)), "rgba": [*colour_of().tolist(), 1.0]})
    if len(placed) < n:
        raise RuntimeError(f"ood scene: only {len(placed)} of {n} distractors fit around {target_xy}")
    for d in placed:
        d["position"] = d["position"].tolist()
    return placed


def draw_clutter(spec: dict, rng: np.random.Generator, target_pose: np.ndarray, target_colors: np.ndarray,
                 table_rgba: np.ndarray, table_bounds: np.ndarray, camera_pos: np.ndarray
                 ) -> tuple[list[dict], dict]:
    """The clutter family: as many distractors as the scene's ``count`` allows (the last mocap body kept for
    the occluder), every half size from the strength's size band, each footprint at a gap from its band
    (the visual sets' colours: never near a target's); from strength 2 one occluder (a sphere, box or
    cylinder of half size OCCLUDER_SIZE) floating OCCLUDER_DISTANCE in front of the target on its line of
    sight, offset sideways so that its image disc overlaps the target's by the strength's overlap fraction
    of the sum of their radii (scene ``target_radius`` = the target's radius)."""
    s, k, scene = spec["split"], spec["strength"], scene_spec(spec["scene"])
    target_xy = np.asarray(target_pose, float)[:2]
    targets = np.atleast_2d(np.asarray(target_colors, float))[:, :3]
    avoid = np.vstack([targets, np.asarray(table_rgba, float)[:3]])
    dist = np.array([float(scene["min_color_distance"])] * len(targets) + [0.15])
    overlap_band = band("clutter", "overlap", k)
    occluded = overlap_band[1] > 0.0
    n = min(int(scene["count"][1]), NUM_DISTRACTORS - (1 if occluded else 0))
    size_band, gap_band = band("clutter", "size", k), band("clutter", "gap", k)
    tr = float(scene["target_radius"])

    def size_of(shape: str) -> np.ndarray:
        return np.array([interleaved_uniform(rng, *size_band, s) for _ in range(3)])

    placed = _place_on_table(rng, n, target_xy, table_bounds, float(scene["table_top"]), tr, size_of,
                             lambda: interleaved_uniform(rng, *gap_band, s),
                             lambda radius: tr + gap_band[1] + radius + 0.12, lambda: _far_colour(rng, avoid, dist))
    drawn: dict[str, Any] = {"count": n, "sizes": [d["size"] for d in placed], "gaps": [d["gap"] for d in placed]}
    if occluded:
        target = np.asarray(target_pose, float)[:3]
        ray = np.asarray(camera_pos, float) - target
        D = float(np.linalg.norm(ray))
        v = ray / D
        a = np.cross(v, [0.0, 0.0, 1.0])
        a /= np.linalg.norm(a)
        b = np.cross(v, a)
        shape = OCCLUDER_SHAPES[int(rng.integers(len(OCCLUDER_SHAPES)))]
        r_o = interleaved_uniform(rng, *OCCLUDER_SIZE, s)
        d = interleaved_uniform(rng, *OCCLUDER_DISTANCE, s)
        overlap = interleaved_uniform(rng, *overlap_band, s)
        side = interleaved_angle(rng, s)
        offset = (1.0 - overlap) * (r_o + tr * (D - d) / D)
        centre = target + d * v + offset * (math.cos(side) * a + math.sin(side) * b)
        size = [r_o, r_o, r_o]
        placed.append({"shape": shape, "size": size, "radius": r_o, "position": centre.tolist(),
                       "yaw": float(rng.uniform(0.0, math.pi)), "rgba": [*_far_colour(rng, avoid, dist).tolist(), 1.0],
                       "occluder": True})
        drawn.update(occluder={"shape": shape, "size": r_o, "distance": d, "overlap": overlap, "side": side,
                               "offset": offset})
    return placed, drawn


def draw_same_colour(spec: dict, rng: np.random.Generator, target_pose: np.ndarray, target_colors: np.ndarray,
                     table_bounds: np.ndarray) -> tuple[list[dict], dict]:
    """The same_colour family: distractors placed by the scene's rules (count, size, min_gap, max_distance,
    as the visual sets), each coloured at an RGB distance from the strength's band from one of the target's
    colours (in a direction whose azimuth about that colour is from the split's sectors); the table keeps
    its colour."""
    s, k, scene = spec["split"], spec["strength"], scene_spec(spec["scene"])
    targets = np.unique(np.atleast_2d(np.asarray(target_colors, float))[:, :3], axis=0)
    lo, hi = band("same_colour", "color_distance", k)
    distances: list[float] = []

    def colour_of() -> np.ndarray:
        for _ in range(1000):
            base = targets[int(rng.integers(len(targets)))]
            want = interleaved_uniform(rng, lo, hi, s)
            z = float(rng.uniform(-1.0, 1.0))
            az = interleaved_angle(rng, s)
            r = math.sqrt(1.0 - z * z)
            c = base + want * np.array([r * math.cos(az), r * math.sin(az), z])
            if np.all((c >= 0.0) & (c <= 1.0)):
                distances.append(want)
                return c
        raise RuntimeError("same_colour: no colour near the target's fits in RGB")

    n = int(rng.integers(int(scene["count"][0]), int(scene["count"][1]) + 1))
    lo_s, hi_s = (float(v) for v in scene["size"])
    placed = _place_on_table(rng, n, np.asarray(target_pose, float)[:2], table_bounds, float(scene["table_top"]),
                             float(scene["target_radius"]), lambda shape: rng.uniform(lo_s, hi_s, 3),
                             lambda: float(scene["min_gap"]), lambda radius: float(scene["max_distance"]), colour_of)
    return placed, {"count": n, "color_distances": distances}
