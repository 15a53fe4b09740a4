"""Task scenes: the PR2 arm model plus the task's target object, distractors and held object."""

from __future__ import annotations

import math
from collections.abc import Callable

import mujoco
import numpy as np

from gps_core.kinematics import ARM_MODEL
from gps_core.ood import TRAIN_APPEARANCE_KEYS, TRAIN_MAX_STRENGTH
from gps_core.tasks import TaskConfig, condition_ee_points, grasp_transform
from gps_sim.ood_textures import add_ood_assets

NUM_DISTRACTORS = 4
DISTRACTOR_PARK = np.array([0.0, 0.0, -5.0])
DISTRACTOR_SHAPES = ("box", "sphere", "cylinder", "capsule", "ellipsoid")
#: Geom group of contact detail the head camera does not draw (ArmSim.render): geometry far below a pixel
#: at the camera's resolutions, or hidden from it, that would cost most of the frame's rendering on a CPU.
#: The bottle's thread (1.5 mm wire, 38 capsules) changed 4 of 4096 pixels of a 64x64 frame and took 70 %
#: of its render time (22.9 -> 6.6 ms; docs/benchmarks.md).
CAMERA_HIDDEN_GROUP = 3

_GEOM_TYPES = {
    "box": mujoco.mjtGeom.mjGEOM_BOX,
    "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
    "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
    "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
    "ellipsoid": mujoco.mjtGeom.mjGEOM_ELLIPSOID,
}


def _add_geom(body, name: str, gtype: str, size, pos=(0, 0, 0), quat=(1, 0, 0, 0), rgba=(1, 1, 1, 1),
              collide: str = "none", camera_hidden: bool = False) -> None:
    g = body.add_geom()
    g.name = name
    g.type = _GEOM_TYPES[gtype]
    s = np.zeros(3)
    s[: len(size)] = size
    g.size = s
    g.pos = np.asarray(pos, float)
    g.quat = np.asarray(quat, float)
    g.rgba = np.asarray(rgba, float)
    # contype/conaffinity as in pr2_arm.xml: "world" collides with the arm, "arm" with the world.
    g.contype, g.conaffinity = {"none": (0, 0), "world": (0, 1), "arm": (1, 0)}[collide]
    if camera_hidden:
        g.group = CAMERA_HIDDEN_GROUP


def _reach(spec: mujoco.MjSpec, task: TaskConfig) -> None:
    p = task.scene_params
    half = float(p.get("block_half_size", 0.025))
    rgba = p.get("block_rgba", [0.85, 0.12, 0.1, 1.0])
    # Visual only: the tool points hover above the block, so the block never blocks the arm.
    _add_geom(spec.body("target"), "target_geom", "box", [half] * 3, rgba=rgba, collide="none")


def _shape_sorting(spec: mujoco.MjSpec, task: TaskConfig) -> None:
    p = task.scene_params
    c = float(p.get("cube_half_size", 0.06))
    h = float(p.get("hole_half_width", 0.028))
    depth = float(p.get("hole_depth", 0.09))
    rgba = p.get("cube_rgba", [0.15, 0.35, 0.85, 1.0])
    body = spec.body("target")
    # A cube centred on the target frame with a square hole from the top face, built from walls
    # around the hole and a floor under it. Walls collide with the held block.
    wall = (c - h) / 2
    for i, (dx, dy, sx, sy) in enumerate([
        (h + wall, 0, wall, c), (-(h + wall), 0, wall, c), (0, h + wall, h, wall), (0, -(h + wall), h, wall)
    ]):
        _add_geom(body, f"target_geom_wall{i}", "box", [sx, sy, c], pos=(dx, dy, 0), rgba=rgba, collide="world")
    floor_half = (2 * c - depth) / 2
    _add_geom(body, "target_geom", "box", [h, h, floor_half], pos=(0, 0, -c + floor_half), rgba=rgba,
              collide="world")
    # MuJoCo takes the larger of two geoms' friction coefficients, so the cube and the block both get the
    # toy's plastic-on-plastic value.
    friction = float(p.get("friction", 0.8))
    for g in spec.geoms:
        if g.name.startswith("target_geom"):
            g.friction = np.array([friction, 0.02, 0.01])
    # The held block, rigidly in the gripper at an angle such that it is vertical when the tool is
    # pitched down by `grasp_pitch` (rad), the posture the target points ask for.
    bh = p.get("block_half_size", [0.022, 0.022, 0.05])
    phi = float(p.get("grasp_pitch", 1.2))
    beta = math.pi - phi  # rotation about tool y taking the block's z axis to (sin phi, 0, -cos phi)
    quat = (math.cos(beta / 2), 0.0, math.sin(beta / 2), 0.0)
    block_rgba = p.get("block_rgba", [0.95, 0.75, 0.1, 1.0])
    bevel = float(p.get("block_bevel", 0.0))
    palm = spec.body("r_gripper_palm_link")
    if bevel <= 0.0:
        _add_geom(palm, "held_block", "box", bh, pos=(0.18, 0, 0), quat=quat, rgba=block_rgba, collide="arm")
        spec.geom("held_block").friction = np.array([friction, 0.02, 0.01])
        return
    # Toy blocks have bevelled edges: a 45-degree bevel on the leading (bottom) face's edges turns a
    # landing a few mm off-centre into a slide into the hole instead of a jam on the rim.
    mesh = spec.add_mesh()
    mesh.name = "held_block_mesh"
    mesh.uservert = bevelled_block_vertices(bh, bevel).ravel().tolist()
    g = palm.add_geom()
    g.name = "held_block"
    g.type = mujoco.mjtGeom.mjGEOM_MESH
    g.meshname = mesh.name
    g.pos = np.array([0.18, 0.0, 0.0])
    g.quat = np.asarray(quat, float)
    g.rgba = np.asarray(block_rgba, float)
    g.contype, g.conaffinity = 1, 0
    g.friction = np.array([friction, 0.02, 0.01])


def bevelled_block_vertices(half_size, bevel: float) -> np.ndarray:
    """(12, 3) vertices of a box (half sizes hx, hy, hz) whose +z face's four edges are cut at 45 degrees
    by `bevel` (m): the +z face shrinks to (hx - bevel, hy - bevel)."""
    hx, hy, hz = (float(v) for v in half_size)
    if not 0.0 < bevel < min(hx, hy, 2 * hz):
        raise ValueError(f"block_bevel {bevel} must be in (0, {min(hx, hy, 2 * hz)})")
    corners = [(sx, sy) for sx in (-1, 1) for sy in (-1, 1)]
    verts = [(sx * hx, sy * hy, -hz) for sx, sy in corners]
    verts += [(sx * hx, sy * hy, hz - bevel) for sx, sy in corners]
    verts += [(sx * (hx - bevel), sy * (hy - bevel), hz) for sx, sy in corners]
    return np.array(verts)


SCENES: dict[str, Callable[[mujoco.MjSpec, TaskConfig], None]] = {
    "reach": _reach,
    "shape_sorting": _shape_sorting,
}


def _distractor_geoms(spec: mujoco.MjSpec, task: TaskConfig) -> None:
    """One geom of each shape per distractor body; unused ones are made invisible at reset."""
    for i in range(NUM_DISTRACTORS):
        body = spec.body(f"distractor_{i}")
        if body is None:  # the arm model declares fewer distractor bodies than we use
            body = spec.worldbody.add_body()
            body.name, body.mocap, body.pos = f"distractor_{i}", True, DISTRACTOR_PARK
        for shape in DISTRACTOR_SHAPES:
            _add_geom(body, f"distractor_{i}_{shape}", shape, [0.03, 0.03, 0.03], rgba=(0, 0, 0, 0))


# Distractor-scene spec (task YAML `random_scene`) keys and defaults; sizes are MuJoCo half sizes (m).
SCENE_DEFAULTS: dict[str, object] = {
    "count": [2, 4],            # objects per scene (inclusive)
    "min_gap": 0.06,            # m between a distractor's footprint and the target's
    "target_radius": 0.05,      # m, the target's footprint radius (x-y)
    "max_distance": 0.24,       # m, distractor centres at most this far from the target's (x-y)
    "size": [0.015, 0.035],     # half sizes / radii drawn from this range
    "min_color_distance": 0.45,  # RGB distance from every target colour (and the table's)
    "table_color_distance": 0.25,  # the new table colour at least this far from the default
    "table_top": 0.45,          # z of the table's top face
    # chance that a reset draws a random scene, else the condition's own (domain randomization that keeps
    # the nominal scene in the training distribution: a random table is never near the default colour)
    "probability": 1.0,
    # Training-time appearance randomization (gps_core.ood, "Training-time appearance randomization"): the
    # largest strength (0-3; 0 = off) of the lights, the head camera's pose and the table and floor textures
    # a random scene also draws, from the training ranges, never a held-out family's draw. Only training
    # draws may set them (gps_core.tasks refuses them in an evaluation set).
    "lighting": 0,
    "camera": 0,
    "texture": 0,
}


def _footprint(shape: str, size: np.ndarray) -> tuple[float, float]:
    """(x-y bounding radius, half height) of a distractor geom standing upright."""
    if shape == "box":
        return float(np.hypot(size[0], size[1])), float(size[2])
    if shape == "sphere":
        return float(size[0]), float(size[0])
    if shape == "cylinder":
        return float(size[0]), float(size[1])
    if shape == "capsule":
        return float(size[0]), float(size[0] + size[1])
    return float(max(size[0], size[1])), float(size[2])  # ellipsoid


def scene_spec(spec: dict | None) -> dict:
    """The spec with defaults filled in; a clear error for an unknown key or a value out of range."""
    spec = dict(spec or {})
    unknown = set(spec) - set(SCENE_DEFAULTS)
    if unknown:
        raise ValueError(f"random_scene: unknown keys {sorted(unknown)}; known: {sorted(SCENE_DEFAULTS)}")
    out = {**SCENE_DEFAULTS, **spec}
    lo_n, hi_n = (int(v) for v in out["count"])
    lo_s, hi_s = (float(v) for v in out["size"])
    if not 1 <= lo_n <= hi_n <= NUM_DISTRACTORS:
        raise ValueError(f"random_scene.count: expected [lo, hi] within 1..{NUM_DISTRACTORS}, got {out['count']!r}")
    if not 0.005 <= lo_s <= hi_s <= 0.08:
        raise ValueError(f"random_scene.size: expected 0.005 <= lo <= hi <= 0.08, got {out['size']!r}")
    for k in ("min_gap", "target_radius", "max_distance", "min_color_distance", "table_color_distance",
              "probability"):
        if not 0.0 <= float(out[k]) <= 1.0:
            raise ValueError(f"random_scene.{k}: expected a number in [0, 1], got {out[k]!r}")
    for k in TRAIN_APPEARANCE_KEYS:
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= TRAIN_MAX_STRENGTH:
            raise ValueError(f"random_scene.{k}: expected an integer strength 0..{TRAIN_MAX_STRENGTH} "
                             f"(0: off), got {v!r}")
        out[k] = int(v)
    return out


def appearance_strengths(spec: dict | None) -> dict[str, int]:
    """The spec's training-time appearance keys that are on: {key: largest strength} (empty: all off)."""
    s = scene_spec(spec)
    return {k: s[k] for k in TRAIN_APPEARANCE_KEYS if s[k] > 0}


def draws_random_scene(spec: dict | None, rng: np.random.Generator) -> bool:
    """Whether a reset with this spec gets a random scene (spec `probability`). At probability 1 nothing
    is drawn from ``rng``, so scenes drawn before the key existed are drawn again bit for bit."""
    p = float(scene_spec(spec)["probability"])
    return p >= 1.0 or bool(rng.uniform() < p)


def draw_distractor_scene(spec: dict | None, rng: np.random.Generator, target_xy: np.ndarray,
                          target_colors: np.ndarray, table_rgba: np.ndarray, table_bounds: np.ndarray
                          ) -> tuple[list[dict], list[float]]:
    """A random visual-test scene: (distractors, table rgba). 2-4 objects (spec `count`) of random
    shape, size, yaw and colour standing on the table inside ``table_bounds`` ([[xlo, ylo], [xhi, yhi]]),
    each footprint at least `min_gap` from the target's and 1 cm from the others, no colour within
    `min_color_distance` (RGB) of a target colour; the table gets a new colour. Each distractor:
    {shape, size (3), position (3, base frame), yaw, rgba}. Deterministic in ``rng``."""
    s = scene_spec(spec)
    target_xy = np.asarray(target_xy, float)[:2]
    targets = np.atleast_2d(np.asarray(target_colors, float))[:, :3]
    table_rgb = np.asarray(table_rgba, float)[:3]

    def colour(avoid: np.ndarray, dist: np.ndarray) -> np.ndarray:
        for _ in range(1000):
            c = rng.uniform(0.05, 0.95, 3)
            if np.all(np.linalg.norm(avoid - c, axis=1) >= dist):
                return c
        raise RuntimeError("random_scene: no colour far enough from the target's")

    dc, dt = float(s["min_color_distance"]), float(s["table_color_distance"])
    # The table: a new colour, still unlike the target's (the target stays visible against it).
    table_new = colour(np.vstack([targets, table_rgb]), np.array([dc] * len(targets) + [dt]))
    avoid_obj, dist_obj = np.vstack([targets, table_new]), np.array([dc] * len(targets) + [0.15])
    n = int(rng.integers(int(s["count"][0]), int(s["count"][1]) + 1))
    lo_s, hi_s = (float(v) for v in s["size"])
    placed: list[dict] = []
    for _ in range(200 * n):
        if len(placed) == n:
            break
        shape = DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]
        size = rng.uniform(lo_s, hi_s, 3)
        if shape == "capsule":
            size[1] = rng.uniform(0.5 * lo_s, hi_s)  # half length of the cylinder part
        radius, half_h = _footprint(shape, size)
        r_min = float(s["target_radius"]) + float(s["min_gap"]) + radius
        if r_min > float(s["max_distance"]):
            continue
        r = rng.uniform(r_min, float(s["max_distance"]))
        a = rng.uniform(0.0, 2 * math.pi)
        xy = target_xy + r * np.array([math.cos(a), math.sin(a)])
        if np.any(xy - radius < table_bounds[0]) or np.any(xy + radius > table_bounds[1]):
            continue
        if any(np.linalg.norm(xy - d["position"][:2]) < radius + d["radius"] + 0.01 for d in placed):
            continue
        rgb = colour(avoid_obj, dist_obj)
        placed.append({"shape": shape, "size": size.tolist(), "radius": radius,
                       "position": np.array([xy[0], xy[1], float(s["table_top"]) + half_h]),
                       "yaw": float(rng.uniform(0.0, math.pi)), "rgba": [*rgb.tolist(), 1.0]})
    if len(placed) < n:
        raise RuntimeError(f"random_scene: only {len(placed)} of {n} distractors fit around {target_xy}")
    for d in placed:
        d["position"] = d["position"].tolist()
    return placed, [*table_new.tolist(), 1.0]


def build_model(task: TaskConfig | None, gravity: bool = False) -> mujoco.MjModel:
    """Compile the arm model with the task's scene. task=None gives the bare arm."""
    spec = mujoco.MjSpec.from_file(str(ARM_MODEL))
    if task is not None:
        if task.scene not in SCENES:
            raise KeyError(f"unknown scene {task.scene!r}; known: {sorted(SCENES)}")
        SCENES[task.scene](spec, task)
        _distractor_geoms(spec, task)
        add_ood_assets(spec)
        spec.option.timestep = task.physics_dt
    if not gravity:
        spec.option.gravity = np.zeros(3)
    return spec.compile()


# ----------------------------------------------------------------------------------------------------
# The paper's other three tasks (coat hanger, toy claw hammer, bottle cap). Each builder adds the target
# object to the mocap body "target" (collides with held objects: "world") and the held object to the palm
# ("arm": rigid in the gripper). Geometry is given in the tool frame (r_gripper_tool_frame, 0.18 m along
# the palm's x axis) for held objects and in the target's frame for targets.
TOOL_OFFSET = np.array([0.18, 0.0, 0.0])  # tool frame origin in the palm frame (pr2_arm.xml)


def _add_capsule(body, name: str, a, b, radius: float, rgba, collide: str, friction: float | None = None,
                 camera_hidden: bool = False) -> None:
    g = body.add_geom()
    g.name = name
    g.type = mujoco.mjtGeom.mjGEOM_CAPSULE
    g.fromto = np.concatenate([np.asarray(a, float), np.asarray(b, float)])
    g.size = np.array([radius, 0.0, 0.0])
    g.rgba = np.asarray(rgba, float)
    g.contype, g.conaffinity = {"none": (0, 0), "world": (0, 1), "arm": (1, 0)}[collide]
    if friction is not None:
        g.friction = np.array([friction, 0.02, 0.01])
    if camera_hidden:
        g.group = CAMERA_HIDDEN_GROUP


def hanger_hook_points(p: dict) -> dict[str, np.ndarray]:
    """The coat hanger in the tool frame (gripper horizontal, tool z up). The hanger lies in the tool y-z
    plane; the gripper holds one shoulder, so the shank stands ``hook_offset_y`` to the side of the tool
    frame (the fingers clear the rail when the hook hangs on it). The shank rises to ``shank_top`` and
    curls over towards +y into a hook of centre-line radius ``hook_radius`` ending ``hook_tip_angle`` (rad)
    below the horizontal. Returns the hook's centre, top and tip, the shank EE point and the neck (where
    the shoulders meet)."""
    oy = float(p.get("hook_offset_y", -0.07))
    top = float(p.get("shank_top", 0.09))
    r = float(p.get("hook_radius", 0.018))
    tip = float(p.get("hook_tip_angle", math.radians(30)))
    centre = np.array([0.0, oy + r, top])
    return {"centre": centre, "top": centre + [0, 0, r],
            "tip": centre + r * np.array([0.0, math.cos(tip), -math.sin(tip)]),
            "shank": np.array([0.0, oy, float(p.get("shank_ee_height", 0.065))]),
            "neck": np.array([0.0, oy, float(p.get("neck_height", 0.045))])}


def _coat_hanger(spec: mujoco.MjSpec, task: TaskConfig) -> None:
    """A clothes rack (a rail along the target frame's x axis, cantilevered from one post at its far end, its
    free end towards the robot) and a wire coat hanger in the gripper whose hook must go onto the rail."""
    p = task.scene_params
    rail_r = float(p.get("rail_radius", 0.008))
    x0, x1 = (float(v) for v in p.get("rail_extent", [-0.05, 0.25]))
    height = float(p.get("rail_height", 0.25))  # rail axis above the table top
    rack_rgba = p.get("rack_rgba", [0.25, 0.25, 0.3, 1.0])
    body = spec.body("target")
    _add_capsule(body, "target_geom_rail", (x0, 0, 0), (x1, 0, 0), rail_r, rack_rgba, "world")
    _add_geom(body, "target_geom_post", "cylinder", [0.012, height / 2], pos=(x1, 0, -height / 2), rgba=rack_rgba,
              collide="world")
    _add_geom(body, "target_geom_foot", "box", [0.06, 0.08, 0.01], pos=(x1, 0, -height + 0.01), rgba=rack_rgba,
              collide="world")
    w = float(p.get("wire_radius", 0.0025))
    rgba = p.get("hanger_rgba", [0.95, 0.6, 0.1, 1.0])
    hk = hanger_hook_points(p)
    r = float(np.linalg.norm(hk["top"] - hk["centre"]))
    tip = float(p.get("hook_tip_angle", math.radians(30)))
    palm = spec.body("r_gripper_palm_link")
    pts = [TOOL_OFFSET + hk["centre"] + r * np.array([0.0, math.cos(a), math.sin(a)])
           for a in np.linspace(math.pi, -tip, 12)]
    for i in range(len(pts) - 1):
        _add_capsule(palm, f"held_hanger_hook{i}", pts[i], pts[i + 1], w, rgba, "arm")
    half_width, drop = (float(v) for v in p.get("hanger_body", [0.10, 0.06]))
    neck = TOOL_OFFSET + hk["neck"]
    left, right = neck + [0, -half_width, -drop], neck + [0, half_width, -drop]
    _add_capsule(palm, "held_hanger_shank", neck, pts[0], w, rgba, "arm")
    _add_capsule(palm, "held_hanger_shoulder0", neck, left, w, rgba, "arm")
    _add_capsule(palm, "held_hanger_shoulder1", neck, right, w, rgba, "arm")
    _add_capsule(palm, "held_hanger_bar", left, right, w, rgba, "arm")


def bottle_thread_helix(p: dict, n_per_turn: int = 24) -> np.ndarray:
    """(starts, n, 3) centre lines of the bottle neck's thread in the bottle frame (origin at the neck's top
    centre, z up): ``thread_starts`` right-hand helices (a multi-start thread, as on bottles), each of lead
    ``thread_lead`` (descent per turn) and ``thread_turns`` turns at radius ``thread_radius``, starting
    ``thread_start`` below the lip at evenly spaced angles from 0 and descending clockwise seen from above
    (the direction a cap is tightened)."""
    lead = float(p.get("thread_lead", 0.018))
    turns = float(p.get("thread_turns", 0.75))
    radius = float(p.get("thread_radius", 0.0175))
    starts = int(p.get("thread_starts", 2))
    z0 = -float(p.get("thread_start", 0.004))
    s = np.linspace(0.0, turns * 2 * math.pi, int(math.ceil(turns * n_per_turn)) + 1)
    out = []
    for k in range(starts):
        ang = -s + 2 * math.pi * k / starts
        out.append(np.stack([radius * np.cos(ang), radius * np.sin(ang), z0 - lead * s / (2 * math.pi)], axis=1))
    return np.array(out)


def _bottle_cap(spec: mujoco.MjSpec, task: TaskConfig) -> None:
    """A bottle whose neck carries a helical thread (ridges of short capsules), and a cap in the gripper
    (pointing down, the cap's axis along the tool x axis = the wrist roll axis) with one inner lug per thread
    start. The lugs land on the thread; only turning the cap clockwise (seen from above) while pressing lets
    it descend along the helix until the cap's inner top face seats on the neck's lip."""
    p = task.scene_params
    neck_r = float(p.get("neck_radius", 0.014))
    neck_h = float(p.get("neck_height", 0.045))
    body_r, body_h = (float(v) for v in p.get("bottle_body", [0.035, 0.11]))
    rgba = p.get("bottle_rgba", [0.2, 0.65, 0.35, 1.0])
    fr = float(p.get("thread_friction", 0.2))
    body = spec.body("target")
    _add_geom(body, "target_geom_neck", "cylinder", [neck_r, neck_h / 2], pos=(0, 0, -neck_h / 2), rgba=rgba,
              collide="world")
    _add_geom(body, "target_geom_shoulder", "cylinder", [0.6 * body_r + 0.4 * neck_r, 0.005],
              pos=(0, 0, -neck_h - 0.005), rgba=rgba, collide="world")
    _add_geom(body, "target_geom_body", "cylinder", [body_r, body_h / 2], pos=(0, 0, -neck_h - 0.01 - body_h / 2),
              rgba=rgba, collide="world")
    helices = bottle_thread_helix(p)
    tr = float(p.get("thread_wire_radius", 0.0015))
    rt = float(p.get("thread_radius", 0.0175))
    for k, helix in enumerate(helices):
        for i in range(len(helix) - 1):
            _add_capsule(body, f"target_geom_thread{k}_{i}", helix[i], helix[i + 1], tr, rgba, "world", fr,
                         camera_hidden=True)
        # The stop: a flat-faced block 25 degrees past the thread's end, below it: a seated cap is tight
        # (turning on stalls) instead of riding around into the next thread.
        end = math.atan2(helix[-1, 1], helix[-1, 0]) - math.radians(25.0)
        stop = np.array([rt * math.cos(end), rt * math.sin(end), helix[-1, 2] + 0.002])
        _add_geom(body, f"target_geom_thread{k}_stop", "box", [0.0025, 0.0015, 0.005], pos=stop,
                  quat=(math.cos(end / 2), 0.0, 0.0, math.sin(end / 2)), rgba=rgba, collide="world",
                  camera_hidden=True)
    for g in spec.geoms:
        if g.name.startswith("target_geom"):
            g.friction = np.array([fr, 0.02, 0.01])
    # The cap in the tool frame: axis along tool x (pointing down when the gripper points down); a = distance
    # along the axis from the cap's inner top face, which sits at tool x = cap_offset.
    c0 = float(p.get("cap_offset", -0.03))
    cap_r = float(p.get("cap_radius", 0.024))
    skirt_in = float(p.get("cap_inner_radius", 0.021))
    skirt_len = float(p.get("cap_skirt", 0.02))
    top_t = 0.005
    cap_rgba = p.get("cap_rgba", [0.85, 0.15, 0.1, 1.0])
    palm = spec.body("r_gripper_palm_link")
    axis_quat = (math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0)  # cylinder z axis -> tool x axis

    def at(a: float, y: float = 0.0, z: float = 0.0) -> np.ndarray:
        return TOOL_OFFSET + np.array([c0 + a, y, z])

    _add_geom(palm, "held_cap_top", "cylinder", [cap_r, top_t / 2], pos=at(-top_t / 2), quat=axis_quat,
              rgba=cap_rgba, collide="arm")
    n_seg = 12
    thick = cap_r - skirt_in
    half_w = (skirt_in + thick) * math.tan(math.pi / n_seg) + 0.0005
    for k in range(n_seg):
        ang = 2 * math.pi * k / n_seg
        rc = skirt_in + thick / 2
        # box half sizes along (tool x = cap axis, radial, tangential); rotation about tool x by ang
        quat = (math.cos(ang / 2), math.sin(ang / 2), 0.0, 0.0)
        _add_geom(palm, f"held_cap_skirt{k}", "box", [skirt_len / 2, thick / 2, half_w],
                  pos=at(skirt_len / 2, rc * math.cos(ang), rc * math.sin(ang)), quat=quat, rgba=cap_rgba,
                  collide="arm")
    # One lug per thread start, evenly around the skirt's inside on the thread's radius, so the thread's
    # reaction to the wrist's torque is a pure couple.
    lug_a = float(p.get("lug_depth", 0.0145))
    lug_r = float(p.get("lug_radius", 0.002))
    starts = int(p.get("thread_starts", 2))
    for k in range(starts):
        ang = 2 * math.pi * k / starts
        _add_geom(palm, f"held_cap_lug{k}", "sphere", [lug_r],
                  pos=at(lug_a, rt * math.cos(ang), rt * math.sin(ang)), rgba=cap_rgba, collide="arm",
                  camera_hidden=True)  # (inside the skirt)
    for g in spec.geoms:
        if g.name.startswith("held_cap"):
            g.friction = np.array([fr, 0.02, 0.01])


def hammer_geoms(p: dict) -> list[tuple[str, str, list[float], np.ndarray, np.ndarray]]:
    """The toy claw hammer's geoms (name, type, size, position, quaternion) in the hammer's frame: the handle
    along z through the origin (the nominal grasp point, at the tool frame), the head on top, the claw's two
    prongs reaching forward (+x) from the head's front face with a slot of ``claw_slot`` (m) between them."""
    r_handle, z0, z1 = (float(v) for v in p.get("handle", [0.012, -0.05, 0.10]))
    slot, prong_w, prong_t, prong_l = (float(v) for v in p.get("claw", [0.006, 0.008, 0.004, 0.04]))
    face, z_claw = float(p.get("head_front", 0.055)), float(p.get("claw_height", 0.10))
    one = np.array([1.0, 0.0, 0.0, 0.0])
    out = [("held_hammer_handle", "capsule", [r_handle, (z1 - z0) / 2], np.array([0.0, 0.0, (z0 + z1) / 2]), one),
           ("held_hammer_head", "box", [0.045, 0.012, 0.012], np.array([face - 0.045, 0.0, z_claw + 0.01]), one)]
    flare_l, flare_a = (float(v) for v in p.get("claw_flare", [0.015, math.radians(30.0)]))
    for k, side in enumerate((-1.0, 1.0)):
        out.append((f"held_hammer_prong{k}", "box", [prong_l / 2, prong_w / 2, prong_t / 2],
                    np.array([face + prong_l / 2, side * (slot + prong_w) / 2, z_claw]), one))
        # The claw's V: the prongs' tips flare outwards, funnelling a shaft a few mm off the slot into it.
        a = side * flare_a
        centre = np.array([face + prong_l, side * slot / 2, z_claw]) + flare_l / 2 * np.array([
            math.cos(a), math.sin(a), 0.0]) + prong_w / 4 * np.array([-math.sin(a), math.cos(a), 0.0]) * side
        out.append((f"held_hammer_flare{k}", "box", [flare_l / 2, prong_w / 4, prong_t / 2], centre,
                    np.array([math.cos(a / 2), 0.0, 0.0, math.sin(a / 2)])))
    return out


def _toy_hammer(spec: mujoco.MjSpec, task: TaskConfig) -> None:
    """A nail standing in a board on a pedestal (the nail head's underside at the target frame's origin) and
    a toy claw hammer held by its handle (gripper horizontal), its claw pointing forward. The hammer's grasp
    (offset along the handle, pitch) is set per condition at reset (apply_grasp)."""
    p = task.scene_params
    shaft_r, shaft_l = (float(v) for v in p.get("nail_shaft", [0.002, 0.03]))
    head_r = float(p.get("nail_head_radius", 0.006))
    pedestal = float(p.get("pedestal_height", 0.124))
    body = spec.body("target")
    nail = p.get("nail_rgba", [0.75, 0.75, 0.78, 1.0])
    wood = p.get("board_rgba", [0.55, 0.35, 0.2, 1.0])
    _add_geom(body, "target_geom_nail_head", "cylinder", [head_r, 0.001], pos=(0, 0, 0.001), rgba=nail, collide="world")
    _add_geom(body, "target_geom_nail_shaft", "cylinder", [shaft_r, shaft_l / 2], pos=(0, 0, -shaft_l / 2), rgba=nail,
              collide="world")
    _add_geom(body, "target_geom_board", "box", [0.035, 0.05, 0.008], pos=(0, 0, -shaft_l - 0.008), rgba=wood,
              collide="world")
    _add_geom(body, "target_geom_pedestal", "box", [0.025, 0.025, pedestal / 2],
              pos=(0, 0, -shaft_l - 0.016 - pedestal / 2), rgba=wood, collide="world")
    # The hammer is a child body of the palm (welded: no joint, negligible mass, like the other tasks' held
    # objects): a grasp moves the body, whose collision bounding volumes move with it (moving the geoms of a
    # compiled model would leave the palm's bounding-volume hierarchy stale and miss contacts).
    hammer = spec.body("r_gripper_palm_link").add_body()
    hammer.name = "held_hammer"
    hammer.pos = TOOL_OFFSET
    hammer.explicitinertial = True
    hammer.mass = 1e-6
    hammer.inertia = np.full(3, 1e-10)
    rgba = p.get("hammer_rgba", [0.9, 0.2, 0.6, 1.0])
    for name, gtype, size, pos, quat in hammer_geoms(p):
        _add_geom(hammer, name, gtype, size, pos=pos, quat=quat, rgba=rgba, collide="arm")


def apply_grasp(model: mujoco.MjModel, task: TaskConfig, grasp: np.ndarray | None) -> np.ndarray:
    """Put the held object at a condition's grasp (toy_hammer: offset along the handle, pitch about the tool
    y axis; gps_core.tasks.grasp_transform) by moving its body in the compiled model, and return the
    condition's EE points in the tool frame. Tasks without grasps get their EE points unchanged."""
    if task.scene != "toy_hammer":
        if grasp is not None:
            raise ValueError(f"task {task.name!r}: conditions with a grasp need the toy_hammer scene")
        return np.asarray(task.ee_points, dtype=float)
    rot, shift = grasp_transform(grasp)
    bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "held_hammer")
    model.body_pos[bid] = TOOL_OFFSET + shift
    mujoco.mju_mat2Quat(model.body_quat[bid], rot.ravel())
    return condition_ee_points(task, grasp)


SCENES.update({"coat_hanger": _coat_hanger, "bottle_cap": _bottle_cap, "toy_hammer": _toy_hammer})
