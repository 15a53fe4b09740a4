"""Task definitions: YAML files in <repo>/config/tasks/ parsed into a TaskConfig."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from gps_core import safe_yaml
from gps_core.layout import ee_points, mean_ee_distance, quat_wxyz_to_matrix
from gps_core.ood import OOD_KINDS, OOD_SETS, TRAIN_APPEARANCE_KEYS, ood_spec, parse_ood_set_name

# train: the GPS training positions (the trainer's resets, never perturbed). The evaluation sets
# (gps_trainer.paper.evaluation): train_perturbed (the training positions, perturbed starts), spatial_test
# (positions drawn over the training region), visual_test (training positions, random distractor scenes),
# and their validation twins for development decisions: validation (drawn positions), visual_validation,
# train_validation (the training positions with other start perturbations: train_perturbed's twin).
# Then the out-of-distribution families (gps_core.ood, issue 24): ood_<kind>_<strength>_<validation|test>.
CONDITION_SETS = ("train", "spatial_test", "visual_test", "train_perturbed", "validation", "visual_validation",
                  "train_validation") + OOD_SETS
#: The condition sets in words (parameter descriptions, error messages): 36 OOD names spelled out read badly.
CONDITION_SETS_HELP = (" | ".join(CONDITION_SETS[:-len(OOD_SETS)]) + " | ood_<family>_<1-3>_<validation|test> "
                       f"(family: {', '.join(OOD_KINDS)})")
NUM_JOINTS = 7


# The package whose share/ directory holds config/, launch/ and rviz/ once installed (setup.py data_files).
SHARE_PACKAGE = "gps_trainer"


def repo_root() -> Path:
    """The folder holding config/, launch/ and rviz/.

    GPS_ROOT when set; in a source checkout the repository root (found by layout, so it works from any
    working directory); installed (colcon without --symlink-install), the ament index's
    share/gps_trainer. Raises FileNotFoundError naming every place it looked.
    """
    env = os.environ.get("GPS_ROOT")
    if env:
        return Path(env)
    source = Path(__file__).resolve().parents[3]
    if (source / "config" / "tasks").is_dir():
        return source
    looked = [str(source)]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            share = Path(get_package_share_directory(SHARE_PACKAGE))
            if (share / "config" / "tasks").is_dir():
                return share
            looked.append(str(share))
        except PackageNotFoundError:
            looked.append(f"ament index (AMENT_PREFIX_PATH) has no package {SHARE_PACKAGE!r}")
    except ImportError:
        looked.append("ament_index_python not importable")
    raise FileNotFoundError(f"gps-ros2 config/ not found (looked in: {'; '.join(looked)}); "
                            "set GPS_ROOT to the repository or source the workspace's install/setup.bash")


def tasks_dir() -> Path:
    return Path(os.environ.get("GPS_TASKS_DIR", repo_root() / "config" / "tasks"))


def yaw_quaternion(yaw: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation by `yaw` about the base z axis."""
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


@dataclasses.dataclass
class Condition:
    """One task condition: where the arm starts and where the target object is."""

    joint_angles: np.ndarray  # (7,)
    target_pose: np.ndarray  # (7,) position xyz + quaternion wxyz, base frame
    distractors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    colors: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # geom name -> rgba
    # Drawn at reset from (condition set, condition, seed): each start joint angle moves by U(-p, p) rad,
    # and a random distractor scene + table colour (gps_sim.scenes.draw_distractor_scene) replaces
    # `distractors`/`colors` when `random_scene` is a spec.
    perturbation: float = 0.0
    random_scene: dict[str, Any] | None = None
    # The held object's grasp where a task varies it (toy_hammer): [offset along the handle (m), pitch about
    # the tool y axis (rad)]; the EE points on the held object follow it (condition_ee_points).
    grasp: np.ndarray | None = None
    # An out-of-distribution family's draw at reset (gps_core.ood.ood_spec: kind, strength, split, scene):
    # only in the sets named after it (ood_<kind>_<strength>_<split>).
    ood: dict[str, Any] | None = None


@dataclasses.dataclass
class TaskConfig:
    name: str
    scene: str  # scene builder in gps_sim.scenes
    horizon: int  # T, control steps per episode
    control_dt: float
    physics_dt: float
    ee_points: np.ndarray  # (3, 3) in the tool frame (r_gripper_tool_frame)
    target_points: np.ndarray  # (3, 3) in the target object's frame
    success_type: str  # "mean_distance" or "inside_hole"
    success_tolerance: float  # metres
    conditions: dict[str, list[Condition]]
    scene_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    cost: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: str | None = None
    set_trials: dict[str, int] = dataclasses.field(default_factory=dict)  # default evaluation trials per set

    def num_conditions(self, condition_set: str = "train") -> int:
        return len(self.condition_list(condition_set))

    def condition_list(self, condition_set: str = "train") -> list[Condition]:
        if condition_set not in CONDITION_SETS:
            raise KeyError(f"unknown condition set {condition_set!r}; expected one of {CONDITION_SETS}")
        return self.conditions.get(condition_set, [])


def _vec(value: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: expected {n} finite numbers, got {value!r}")
    return arr


def _target_pose(entry: dict[str, Any], default_yaw_origin: np.ndarray | None) -> np.ndarray:
    pos = _vec(entry["target_position"], 3, "target_position")
    if "target_quaternion" in entry:
        quat = _vec(entry["target_quaternion"], 4, "target_quaternion")
        quat = quat / np.linalg.norm(quat)
    elif "target_yaw" in entry:
        quat = yaw_quaternion(float(entry["target_yaw"]))
    elif default_yaw_origin is not None:
        # Face the target object towards the shoulder (its frame's x axis points away from it).
        d = pos[:2] - default_yaw_origin[:2]
        quat = yaw_quaternion(math.atan2(d[1], d[0]))
    else:
        quat = np.array([1.0, 0.0, 0.0, 0.0])
    return np.concatenate([pos, quat])


def _parse(data: dict[str, Any], path: str | None) -> TaskConfig:
    default_q = data.get("initial_joint_angles")
    yaw_origin = data.get("face_targets_towards")
    yaw_origin = None if yaw_origin is None else _vec(yaw_origin, 3, "face_targets_towards")
    conditions: dict[str, list[Condition]] = {}
    trials: dict[str, int] = {}
    for cset in CONDITION_SETS:
        conds = []
        entries, set_trials = _set_entries(data, cset, conditions, path)
        if cset == "train" and data.get("sample_scenes") is not None:
            # Domain randomization of the GPS samples' images: each training reset draws a random scene
            # (from set 'train', the condition and the sample's seed: never an evaluation scene); the
            # state, the cost and the local controllers do not see it.
            if not isinstance(data["sample_scenes"], dict):
                raise ValueError(f"{path or '<task dict>'}: sample_scenes: expected a random_scene mapping, "
                                 f"got {data['sample_scenes']!r}")
            entries = [{**e, "random_scene": dict(data["sample_scenes"])} for e in entries]
        if set_trials:
            trials[cset] = set_trials
        named_ood = parse_ood_set_name(cset)
        for i, entry in enumerate(entries):
            q = entry.get("joint_angles", default_q)
            if q is None:
                raise ValueError(f"{cset}[{i}]: no joint_angles and no initial_joint_angles")
            ood = _condition_ood(entry, cset, i, named_ood, path)
            _training_appearance_only_in_train(entry.get("random_scene"), cset, f"{cset}[{i}].random_scene", path)
            if ood is not None:
                _training_appearance_only_in_train(ood["scene"], "", f"{cset}[{i}].ood.scene", path)
            conds.append(
                Condition(
                    joint_angles=_vec(q, NUM_JOINTS, f"{cset}[{i}].joint_angles"),
                    target_pose=_target_pose(entry, yaw_origin),
                    distractors=list(entry.get("distractors", []) or []),
                    colors={k: list(map(float, v)) for k, v in (entry.get("colors", {}) or {}).items()},
                    perturbation=float(entry.get("perturbation", 0.0)),
                    random_scene=entry.get("random_scene"),
                    grasp=None if entry.get("grasp") is None else _vec(entry["grasp"], 2, f"{cset}[{i}].grasp"),
                    ood=ood,
                )
            )
        conditions[cset] = conds
    success = data.get("success", {})
    ee = np.asarray(data["ee_points"], dtype=float)
    tp = np.asarray(data["target_points"], dtype=float)
    if ee.shape != (3, 3) or tp.shape != (3, 3):
        raise ValueError("ee_points and target_points must be 3 points of 3 coordinates each")
    return TaskConfig(
        name=str(data["name"]),
        scene=str(data.get("scene", data["name"])),
        horizon=int(data.get("horizon", 100)),
        control_dt=float(data.get("control_dt", 0.05)),
        physics_dt=float(data.get("physics_dt", 0.002)),
        ee_points=ee,
        target_points=tp,
        success_type=str(success.get("type", "mean_distance")),
        success_tolerance=float(success.get("tolerance", 0.05)),
        conditions=conditions,
        scene_params=dict(data.get("scene_params", {}) or {}),
        cost=dict(data.get("cost", {}) or {}),
        path=path,
        set_trials=trials,
    )


def _training_appearance_only_in_train(scene: Any, cset: str, where: str, path: str | None) -> None:
    """Training-time appearance randomization (random_scene keys lighting / camera / texture, gps_core.ood)
    belongs to the training draws only: in an evaluation set it would turn a visual set into an unnamed,
    unsplit cousin of the held-out families (which have sets of their own). ``cset`` "" : never allowed."""
    if cset == "train" or not isinstance(scene, dict):
        return
    on = {k: scene[k] for k in TRAIN_APPEARANCE_KEYS if scene.get(k) not in (None, 0)}
    if on:
        raise ValueError(f"{path or '<task dict>'}: conditions.{where}: {on!r} is training-time appearance "
                         "randomization, allowed only in the train set (sample_scenes or a train condition's "
                         "random_scene); the held-out lighting / camera / texture families are the ood_* sets")


def _condition_ood(entry: dict[str, Any], cset: str, i: int, named: tuple[str, int, str] | None,
                   path: str | None) -> dict[str, Any] | None:
    """A condition's validated OOD spec. A set named ood_<kind>_<strength>_<split> has that family in every
    condition and no other set has one, so a set's name says what it draws (and a test family's name
    ends in _test, which the rule "no test set steers a choice" refuses)."""
    where = f"{path or '<task dict>'}: conditions.{cset}[{i}].ood"
    if entry.get("ood") is None:
        if named is not None:
            raise ValueError(f"{where}: set {cset!r} needs an ood spec {{kind: {named[0]}, strength: {named[1]}, "
                             f"split: {named[2]}}}")
        return None
    spec = ood_spec(entry["ood"], where)
    if named != (spec["kind"], spec["strength"], spec["split"]):
        raise ValueError(f"{where}: {entry['ood']!r} does not match the set's name {cset!r} (an ood spec belongs "
                         "in the set ood_<kind>_<strength>_<split> it names)")
    if entry.get("random_scene") is not None:
        raise ValueError(f"{where}: an OOD set draws no random_scene of the visual sets (give the placement rules "
                         "as ood.scene)")
    return spec


_SET_KEYS = {"positions", "draw", "entries", "perturbation", "random_scene", "trials", "ood"}
_DRAW_KEYS = {"count", "seed", "from", "min_separation", "avoid"}


def _set_entries(data: dict[str, Any], cset: str, parsed: dict[str, list[Condition]], path: str | None
                 ) -> tuple[list[dict[str, Any]], int]:
    """A condition set's entries and default trial count. A set is a list of entries, or a spec:

    ``entries: [...]`` lists them (as the list form, with a ``trials`` count: the paper's trial count over
    fewer situations than trials, each trial its own seeded start perturbation);
    ``positions: <earlier set>`` copies that set's target positions (and start joint angles);
    ``draw: {count, seed, from, min_separation, avoid}`` draws ``count`` target positions uniformly (seeded)
    over the x-y bounding box of set ``from``'s positions at their height, each at least ``min_separation``
    (m) from every position of ``from``, of every earlier drawn set, of the listed ``avoid`` positions (a
    variant's extra training positions) and of each other (so training, validation and test positions never
    coincide). Where every condition of ``from`` has a grasp (toy_hammer), each drawn position gets one
    drawn uniformly over their grasps' box; where they share one orientation, the drawn positions take it.
    ``perturbation`` (rad), ``random_scene`` (a distractor-scene spec) and ``trials`` (default evaluation
    trials) apply to every entry.
    """
    where = f"{path or '<task dict>'}: conditions.{cset}"
    spec = (data.get("conditions", {}) or {}).get(cset, []) or []
    if isinstance(spec, list):
        return spec, 0
    if not isinstance(spec, dict) or not spec.keys() <= _SET_KEYS or \
            sum(k in spec for k in ("positions", "draw", "entries")) != 1:
        raise ValueError(f"{where}: expected a list of conditions or a spec with one of 'positions'/'draw'/'entries' "
                         f"and optional {sorted(_SET_KEYS - {'positions', 'draw', 'entries'})}, got {spec!r}")
    common: dict[str, Any] = {}
    p = float(spec.get("perturbation", 0.0))
    if not 0.0 <= p <= 0.2:
        raise ValueError(f"{where}.perturbation: expected 0 <= rad <= 0.2, got {spec['perturbation']!r}")
    common["perturbation"] = p
    if spec.get("random_scene") is not None:
        if not isinstance(spec["random_scene"], dict):
            raise ValueError(f"{where}.random_scene: expected a mapping, got {spec['random_scene']!r}")
        common["random_scene"] = dict(spec["random_scene"])
    if spec.get("ood") is not None:
        common["ood"] = spec["ood"]
    trials = int(spec.get("trials", 0))
    if trials < 0:
        raise ValueError(f"{where}.trials: expected >= 0, got {spec['trials']!r}")
    if "entries" in spec:
        listed = spec["entries"]
        if not isinstance(listed, list) or not listed or not all(isinstance(e, dict) for e in listed):
            raise ValueError(f"{where}.entries: expected a non-empty list of conditions, got {listed!r}")
        # an entry's own perturbation / scene wins over the set's
        return [{**{k: v for k, v in common.items() if k in spec}, **e} for e in listed], trials
    if "positions" in spec:
        src = parsed.get(str(spec["positions"]))
        if not src:
            raise ValueError(f"{where}.positions: {spec['positions']!r} is not an earlier set with conditions")
        entries = [{"target_position": c.target_pose[:3].tolist(), "target_quaternion": c.target_pose[3:].tolist(),
                    "joint_angles": c.joint_angles.tolist(),
                    **({} if c.grasp is None else {"grasp": c.grasp.tolist()}), **common} for c in src]
        return entries, trials
    draw = spec["draw"]
    if not isinstance(draw, dict) or not draw.keys() <= _DRAW_KEYS or "count" not in draw:
        raise ValueError(f"{where}.draw: expected {{count, seed, from, min_separation, avoid}}, got {draw!r}")
    count, sep = int(draw["count"]), float(draw.get("min_separation", 0.01))
    src = parsed.get(str(draw.get("from", "train")))
    if count < 1 or not 0.0 <= sep < 0.1 or not src:
        raise ValueError(f"{where}.draw: need count >= 1, 0 <= min_separation < 0.1 and 'from' an earlier set "
                         f"with conditions, got {draw!r}")
    src_pos = np.array([c.target_pose[:3] for c in src])
    if np.ptp(src_pos[:, 2]) > 1e-9:
        raise ValueError(f"{where}.draw: the positions of {draw.get('from', 'train')!r} are not at one height")
    avoid = draw.get("avoid", []) or []
    if not isinstance(avoid, list):
        raise ValueError(f"{where}.draw.avoid: expected a list of [x, y, z] positions, got {avoid!r}")
    taken = [q[:3] for s, conds in parsed.items() if s == draw.get("from", "train") or s in _drawn_sets(data)
             for q in (c.target_pose for c in conds)]
    taken += [_vec(q, 3, f"{where}.draw.avoid[{i}]") for i, q in enumerate(avoid)]
    lo, hi = src_pos[:, :2].min(axis=0), src_pos[:, :2].max(axis=0)
    rng = np.random.default_rng(int(draw.get("seed", 0)))
    out: list[np.ndarray] = []
    for _ in range(1000 * count):
        if len(out) == count:
            break
        xy = rng.uniform(lo, hi)
        pos = np.array([xy[0], xy[1], src_pos[0, 2]])
        if all(np.linalg.norm(pos - q) >= sep for q in taken + out):
            out.append(pos)
    if len(out) < count:
        raise ValueError(f"{where}.draw: only {len(out)} of {count} positions fit at min_separation {sep}")
    entries: list[dict[str, Any]] = [{"target_position": q.tolist(), **common} for q in out]
    quats = np.array([c.target_pose[3:] for c in src])
    if np.ptp(quats, axis=0).max() < 1e-12:   # (else each drawn position follows the task's orientation rule)
        for e in entries:
            e["target_quaternion"] = quats[0].tolist()
    if all(c.grasp is not None for c in src):   # after the positions: a task without grasps draws as before
        grasps = np.array([c.grasp for c in src])
        for e in entries:
            e["grasp"] = rng.uniform(grasps.min(axis=0), grasps.max(axis=0)).tolist()
    return entries, trials or count


def _drawn_sets(data: dict[str, Any]) -> set[str]:
    conds = data.get("conditions", {}) or {}
    return {k for k, v in conds.items() if isinstance(v, dict) and "draw" in v}


def load_task(name_or_path: str | os.PathLike) -> TaskConfig:
    """Load a task by name (config/tasks/<name>.yaml) or by path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml") or not p.exists():
        p = tasks_dir() / f"{name_or_path}.yaml"
    if not p.exists():
        raise FileNotFoundError(f"task {name_or_path!r} not found (looked for {p})")
    data = safe_yaml.load(p.read_text(), str(p))
    return _parse(resolve_extends(data, str(p)), str(p))


def task_from_dict(data: dict[str, Any]) -> TaskConfig:
    """Build a TaskConfig from an in-memory dict with the YAML layout."""
    return _parse(resolve_extends(data, None), None)


_MERGED_KEYS = ("conditions", "scene_params", "cost")  # merged key by key; every other key is replaced
_MAX_EXTENDS_DEPTH = 4


def resolve_extends(data: Any, path: str | None, _depth: int = 0) -> dict[str, Any]:
    """A task mapping with ``extends: <task name>`` resolved: the named task's mapping (itself resolved)
    with this one's keys on top; ``conditions``, ``scene_params`` and ``cost`` are merged key by key (a
    condition set named here replaces the base's set of that name). The base's ``scene`` (default: its
    name) is kept unless given here, so a variant of a task keeps its scene."""
    where = path or "<task dict>"
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    base_name = data.get("extends")
    if base_name is None:
        return data
    if not isinstance(base_name, str) or not base_name:
        raise ValueError(f"{where}: extends: expected a task name, got {base_name!r}")
    if _depth >= _MAX_EXTENDS_DEPTH:
        raise ValueError(f"{where}: extends: more than {_MAX_EXTENDS_DEPTH} levels (a cycle?) at {base_name!r}")
    base_path = tasks_dir() / f"{base_name}.yaml"
    if not base_path.exists():
        raise ValueError(f"{where}: extends: task {base_name!r} not found (looked for {base_path})")
    base = resolve_extends(safe_yaml.load(base_path.read_text(), str(base_path)), str(base_path), _depth + 1)
    merged = {**base, "scene": base.get("scene", base.get("name"))}
    for key, value in data.items():
        if key == "extends":
            continue
        if key in _MERGED_KEYS and isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def task_success(task: TaskConfig, x: np.ndarray, target_pose: np.ndarray) -> bool:
    """The task's success rule on a state x at the end of a trial, given the target's pose (xyz +
    quaternion wxyz): the one rule the simulator, the trainer and the evaluation use.

    ``mean_distance``: the mean EE-point distance to the target points < ``success_tolerance``.
    ``inside_hole``: EE point 0 (the block's tip) in the target's frame passes :func:`tip_inside_hole`
    (EE point 0 = x's first relative EE point + target point 0).
    """
    if task.success_type == "inside_hole":
        pose = np.asarray(target_pose, dtype=np.float64)
        rot = quat_wxyz_to_matrix(pose[3:])
        tp0 = pose[:3] + rot @ np.asarray(task.target_points, dtype=np.float64)[0]
        tip = ee_points(x)[0] + tp0
        return tip_inside_hole((tip - pose[:3]) @ rot, task.scene_params)
    if task.success_type in GEOMETRIC_SUCCESS:
        return GEOMETRIC_SUCCESS[task.success_type](ee_points_in_target_frame(task, x, target_pose),
                                                    task.scene_params)
    return mean_ee_distance(x) < task.success_tolerance


def tip_inside_hole(tip: np.ndarray, scene_params: dict[str, Any]) -> bool:
    """shape_sorting's success test on the block's tip in the cube's frame (cube centre, z up).

    Inside the hole's footprint and at least ``insert_depth`` below the top face: a block wedged on the
    rim, its tip a millimetre or two below the face, is not an insertion.
    """
    half = float(scene_params.get("cube_half_size", 0.06))
    hole = float(scene_params.get("hole_half_width", 0.028))
    depth = float(scene_params.get("insert_depth", 0.02))
    return bool(tip[2] < half - depth and abs(tip[0]) < hole and abs(tip[1]) < hole)


def ee_points_in_target_frame(task: TaskConfig, x: np.ndarray, target_pose: np.ndarray) -> np.ndarray:
    """(3, 3): the EE points of state x in the target object's frame (x holds EE points minus targets)."""
    pose = np.asarray(target_pose, dtype=np.float64)
    rot = quat_wxyz_to_matrix(pose[3:])
    rel = ee_points(np.asarray(x, dtype=np.float64)) + np.asarray(task.target_points, dtype=np.float64) @ rot.T
    return rel @ rot


def hook_on_rail(pts: np.ndarray, scene_params: dict[str, Any]) -> bool:
    """coat_hanger's success test on the EE points [hook top, hook tip, shank] in the rack frame (rail along
    x through the origin, z up): the hook hangs on the rail. Its top is above the rail's axis and at most
    ``hang_gap`` above resting on it, over the rail (within the rail's length, within the hook's radius of
    its axis), and the rail lies between the shank and the tip, which hangs below the rail's axis: a hook
    beside the rail or on top of it fails."""
    top, tip, shank = np.asarray(pts, dtype=np.float64)
    rail_r = float(scene_params.get("rail_radius", 0.008))
    wire = float(scene_params.get("wire_radius", 0.0025))
    gap = float(scene_params.get("hang_gap", 0.01))
    x0, x1 = (float(v) for v in scene_params.get("rail_extent", [-0.05, 0.25]))
    hook_r = float(scene_params.get("hook_radius", 0.018))
    return bool(0.0 < top[2] < rail_r + wire + gap and x0 < top[0] < x1 and abs(top[1]) < hook_r
                and shank[1] < 0.0 < tip[1] and tip[2] < 0.0)


def cap_seated(pts: np.ndarray, scene_params: dict[str, Any]) -> bool:
    """bottle_cap's success test on the EE points [cap inner-top centre, a point on the cap's axis above it,
    ...] in the bottle frame (origin at the neck's top centre, z up): the cap is screwed down, its inner top
    at most ``seat_tolerance`` above the neck's lip, its axis within ``axis_tolerance`` of the neck's axis
    and tilted at most ``max_tilt`` (rad). The thread (gps_sim.scenes.bottle_thread_helix) lets the cap down
    to the lip only along the helix, i.e. turned through up to ``thread_turns`` turns: a cap resting on the
    thread unturned stays at least ``thread_pitch`` x (turns - 1) above the lip, a cross-threaded one tilted."""
    top, up = np.asarray(pts[0], dtype=np.float64), np.asarray(pts[1], dtype=np.float64)
    axis = up - top
    cos_tilt = axis[2] / max(float(np.linalg.norm(axis)), 1e-12)
    return bool(top[2] < float(scene_params.get("seat_tolerance", 0.0015))
                and math.hypot(top[0], top[1]) < float(scene_params.get("axis_tolerance", 0.003))
                and cos_tilt > math.cos(float(scene_params.get("max_tilt", math.radians(6.0)))))


def grasp_transform(grasp: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(R, t): the held object's frame in the tool frame for a grasp [offset along the handle (tool z, m),
    pitch about the tool y axis (rad)]; None is the nominal grasp (identity)."""
    if grasp is None:
        return np.eye(3), np.zeros(3)
    offset, pitch = (float(v) for v in np.asarray(grasp, dtype=float).reshape(2))
    c, s = math.cos(pitch), math.sin(pitch)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]), np.array([0.0, 0.0, offset])


def condition_ee_points(task: TaskConfig, grasp: np.ndarray | None) -> np.ndarray:
    """(3, 3) EE points in the tool frame under a grasp: the task's ee_points are given in the held object's
    frame (= the tool frame at the nominal grasp) and move with it."""
    rot, shift = grasp_transform(grasp)
    return np.asarray(task.ee_points, dtype=np.float64) @ rot.T + shift


def claw_under_head(pts: np.ndarray, scene_params: dict[str, Any]) -> bool:
    """toy_hammer's success test on the EE points [slot root, slot mouth, head top] in the nail frame (the
    shaft's axis = z, the origin at the head's underside): the nail's shaft is in the claw's slot, at least
    ``min_insertion`` in from the mouth and not behind the root, within the slot's width, and the prongs are
    under the nail's head (their top face below its underside, by at most ``max_under``) and level to within
    ``max_claw_tilt`` (rad). A claw above the head, beside the shaft or short of it fails."""
    root, mouth = np.asarray(pts[0], dtype=np.float64), np.asarray(pts[1], dtype=np.float64)
    slot = float(scene_params.get("claw", [0.006, 0.008, 0.004, 0.04])[0])
    half_t = float(scene_params.get("claw", [0.006, 0.008, 0.004, 0.04])[2]) / 2
    length = float(np.linalg.norm(mouth - root))
    f = (mouth - root) / max(length, 1e-12)
    fh = f[:2] / max(float(np.linalg.norm(f[:2])), 1e-12)
    d = -root[:2]  # root -> shaft axis, horizontal
    along = float(d @ fh)
    lateral = abs(float(d[0] * fh[1] - d[1] * fh[0]))
    return bool(0.0 <= along <= length - float(scene_params.get("min_insertion", 0.01))
                and lateral < slot / 2
                and -float(scene_params.get("max_under", 0.015)) < root[2] + half_t < 0.001
                and abs(f[2]) < math.sin(float(scene_params.get("max_claw_tilt", math.radians(20.0)))))


#: Success rules beyond mean_distance / inside_hole: success type -> test on the EE points in the target frame.
GEOMETRIC_SUCCESS = {"hook_on_rail": hook_on_rail, "cap_seated": cap_seated, "claw_under_head": claw_under_head}
