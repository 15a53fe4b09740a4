"""Random requests to every service of a running stack (`gps up`: sim, controller, trainer), over real DDS.

Each of the project's services and each node's parameter services gets requests whose fields are drawn
from values that break naive handlers: NaN and infinities, huge and negative numbers, empty, overlong and
non-ASCII strings, arrays of random length with garbage inside, JSON-like text. The standard asks that
every handler answers every request, that no message crashes a node and that nothing is poisoned; so
every call must be answered, every node must still run, no log may hold a traceback, and afterwards the
stack must still run a training iteration from a clean start. Seeded: a failure names its seed and the
request that preceded it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy

from gps_controller.conversions import status_to_dict
from gps_msgs.srv import GetStatus, StartIteration
from testing_helpers import call_service, gps_cli, pid_alive, stack_pids, stop_stack, trainer_params_file

pytestmark = [pytest.mark.ros, pytest.mark.slow]

#: Requests per service (each service type of each node; the parameter services of the three nodes too).
CALLS_PER_SERVICE = 40
ANSWER_TIMEOUT_S = 60.0

STRINGS = ["", "reach", "neural", "linear_gaussian", "train", "validation", "visual_test", "ood_lighting_3_test",
           "x" * 5000, "\u00e9\u4e2d\U0001f600", "{\"a\": [1e999, NaN]}", "[[[[[[[[[[]]]]]]]]]]", "../../etc/passwd",
           "null", "-1", "nan", "1e308", " ", "\\x00"]
FLOATS = [0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 0.05, 1e9]
#: reach's state (joint angles and velocities, end-effector points and their velocities) and its first
#: training condition's joint angles (as the controller tests' rig).
STATE_DIM = 32
ARM_START = np.array([-0.72, -0.44, -1.32, -1.83, -1.43, -1.54, -1.94])
INTS = [0, 1, -1, 2, 7, 100, 2 ** 31 - 1, -(2 ** 31), 10 ** 6]


def _random_value(kind: str, rng: np.random.Generator):
    """A value for a field of rosidl type ``kind`` (a subset: what the project's interfaces use)."""
    if kind.startswith("sequence<") or kind.endswith("]"):
        inner = kind[len("sequence<"):-1] if kind.startswith("sequence<") else kind[:kind.index("[")]
        inner = inner.split(",")[0]
        n = int(rng.choice([0, 1, 3, 7, 49, 200]))
        if kind.endswith("]") and not kind.endswith("[]"):
            n = int(kind[kind.index("[") + 1:-1])
        if inner in ("uint8", "octet"):
            return rng.integers(0, 256, n).astype(np.uint8).tolist()
        return [_random_value(inner, rng) for _ in range(n)]
    if kind in ("float", "double"):
        return float(rng.choice(FLOATS)) if rng.random() < 0.7 else float(rng.normal(0, 100))
    if kind == "boolean":
        return bool(rng.random() < 0.5)
    if kind.startswith(("int", "uint")):
        bits = int(kind.lstrip("uint") or 32)
        lo, hi = (0, 2 ** bits - 1) if kind.startswith("uint") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        v = int(rng.choice(INTS)) if rng.random() < 0.7 else int(rng.integers(-1000, 1000))
        return min(max(v, lo), hi)
    if kind == "string" or kind.startswith("string<"):
        return str(rng.choice(STRINGS)) if rng.random() < 0.8 else "".join(
            chr(int(c)) for c in rng.integers(32, 0x2FF, int(rng.integers(0, 40))))
    return None  # a nested message: filled by _fill


def _fill(msg, rng: np.random.Generator):
    """``msg`` with every field set to a random value of its type (nested messages recursively)."""
    import importlib

    for name, kind in msg.get_fields_and_field_types().items():
        if "/" in kind and (kind.startswith("sequence<") or kind.endswith("]")):  # a few random messages
            pkg, cls = kind[kind.index("<") + 1 if "<" in kind else 0:].split("/")
            cls = cls.rstrip(">").split("[")[0].split(",")[0]
            element = getattr(importlib.import_module(f"{pkg}.msg"), cls)
            setattr(msg, name, [_fill(element(), rng) for _ in range(int(rng.integers(0, 4)))])
            continue
        value = _random_value(kind, rng)
        if value is None:  # a nested message
            _fill(getattr(msg, name), rng)
            continue
        try:
            setattr(msg, name, value)
        except (AssertionError, TypeError, ValueError):
            pass  # a value the Python type itself refuses never reaches the wire
    return msg


def _parameter_request(srv_type, node_params: list[str], rng: np.random.Generator):
    """A SetParameters request naming real and made-up parameters with values of random types."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue

    req = srv_type.Request()
    for _ in range(int(rng.integers(1, 4))):
        name = str(rng.choice(node_params + ["no_such_parameter", "", "use_sim_time"]))
        value = ParameterValue()
        kind = int(rng.choice([ParameterType.PARAMETER_BOOL, ParameterType.PARAMETER_INTEGER,
                               ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_STRING,
                               ParameterType.PARAMETER_DOUBLE_ARRAY, ParameterType.PARAMETER_STRING_ARRAY,
                               ParameterType.PARAMETER_NOT_SET]))
        value.type = kind
        value.bool_value = bool(rng.random() < 0.5)
        value.integer_value = int(rng.choice(INTS))
        value.double_value = float(rng.choice(FLOATS))
        value.string_value = str(rng.choice(STRINGS))
        value.double_array_value = [float(rng.choice(FLOATS)) for _ in range(int(rng.integers(0, 9)))]
        value.string_array_value = [str(rng.choice(STRINGS)) for _ in range(int(rng.integers(0, 4)))]
        req.parameters.append(Parameter(name=name, value=value))
    return req


def _mutate_array(values: list[float], rng: np.random.Generator) -> list[float]:
    """``values`` with one of: an entry NaN/inf/huge, the whole array scaled by a wild factor, one entry
    dropped or added, or nothing changed (a valid request now and then reaches the deep end of a handler)."""
    values = list(values)
    choice = rng.integers(0, 5)
    if choice == 0 and values:
        values[int(rng.integers(0, len(values)))] = float(rng.choice(FLOATS))
    elif choice == 1:
        factor = float(rng.choice([-1.0, 0.0, 1e6, 1e-300, 1e300]))
        values = [v * factor for v in values]
    elif choice == 2 and values:
        values = values[:-1] if rng.random() < 0.5 else values + [1.0]
    return values


def _linear_gaussian_request(rng: np.random.Generator):
    """A valid PD controller for reach's arm, then maybe one field mutated."""
    from gps_controller import conversions as conv
    from gps_core.linear_gaussian import init_pd
    from gps_msgs.srv import SetLinearGaussian

    x0 = np.zeros(STATE_DIM)
    x0[:7] = ARM_START
    msg = conv.linear_gaussian_to_msg(init_pd(x0, 7, int(rng.choice([1, 5, 20])), pos_gains=10.0, init_var=0.1))
    field = str(rng.choice(["gains", "bias", "covariance", "noise_smoothing_std", "dims", "none"]))
    if field in ("gains", "bias", "covariance"):
        setattr(msg, field, _mutate_array(list(getattr(msg, field)), rng))
    elif field == "noise_smoothing_std":
        msg.noise_smoothing_std = float(rng.choice(FLOATS))
    elif field == "dims":
        name = str(rng.choice(["horizon", "state_dim", "action_dim"]))
        setattr(msg, name, max(0, getattr(msg, name) + int(rng.choice([-1, 1, 1000]))))
    return SetLinearGaussian.Request(condition=int(rng.choice([0, 1, 3, 4, 2 ** 32 - 1])), controller=msg)


def _policy_weights_request(rng: np.random.Generator, policy):
    """The serialized CNN, then maybe: its tensors NaN or huge (the checksum made to match), bytes of the
    safetensors file flipped (checksum matching), a number of the architecture JSON replaced, a wrong checksum."""
    import hashlib
    import json

    import torch

    from gps_controller import conversions as conv
    from gps_controller.policies import serialize_policy
    from gps_msgs.srv import SetPolicyWeights

    kind = str(rng.choice(["valid", "nan_weights", "huge_weights", "flip_bytes", "architecture", "checksum"]))
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    if kind in ("nan_weights", "huge_weights"):
        with torch.no_grad():
            param = list(policy.parameters())[int(rng.integers(0, len(list(policy.parameters()))))]
            param.view(-1)[int(rng.integers(0, param.numel()))] = math.nan if kind == "nan_weights" else 1e38
    arch, weights, sha = serialize_policy(policy)
    policy.load_state_dict(state)
    if kind == "flip_bytes":
        data = bytearray(weights)
        for i in rng.integers(0, len(data), int(rng.integers(1, 8))):
            data[int(i)] = int(rng.integers(0, 256))
        weights = bytes(data)
        sha = hashlib.sha256(weights).hexdigest()
    elif kind == "architecture":
        spec = json.loads(arch)
        numbers = [k for k, v in spec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        lists = [k for k, v in spec.items() if isinstance(v, list)]
        keys = numbers + lists or list(spec)
        key = str(rng.choice(keys))
        spec[key] = (int(rng.choice(INTS)) if rng.random() < 0.5 else float(rng.choice(FLOATS))) \
            if key in numbers else [int(rng.choice(INTS))] * int(rng.integers(0, 4))
        arch = json.dumps(spec)
    elif kind == "checksum":
        sha = sha[::-1]
    return SetPolicyWeights.Request(architecture=arch, weights=conv.to_uint8_array(weights), sha256=sha,
                                    iteration=int(rng.integers(0, 2 ** 32)))


def _run_trial_request(rng: np.random.Generator):
    from gps_msgs.srv import RunTrial

    return RunTrial.Request(condition=int(rng.choice([0, 1, 2, 3, 4, 2 ** 32 - 1])),
                            iteration=int(rng.integers(0, 2 ** 32)), sample_index=int(rng.integers(0, 2 ** 32)),
                            policy_type=str(rng.choice(["linear_gaussian", "neural", "neural", "", "Neural"])),
                            horizon=int(rng.choice([0, 1, 5, 20, 10 ** 6])), use_noise=bool(rng.random() < 0.5),
                            seed=int(rng.integers(0, 2 ** 63)) * 2 + 1, record_images=bool(rng.random() < 0.5))


def _reset_request(rng: np.random.Generator):
    from gps_msgs.srv import ResetCondition

    req = ResetCondition.Request(condition=int(rng.choice([-1, -1, 0, 3, 4, -2])),
                                 condition_set=str(rng.choice(["", "train", "visual_test", "ood_clutter_3_validation",
                                                               "ood_camera_2_test", "nope"])),
                                 seed=int(rng.integers(0, 2 ** 63)))
    req.joint_positions = _mutate_array(ARM_START.tolist(), rng) if rng.random() < 0.8 else []
    req.set_target_pose = bool(rng.random() < 0.5)
    pose = req.target_pose
    pose.position.x, pose.position.y, pose.position.z = (_mutate_array([0.6, 0.0, 0.1], rng) + [0.1] * 3)[:3]
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (
        _mutate_array([0.0, 0.0, 0.0, 1.0], rng) + [1.0] * 4)[:4]
    return req


def _project_services(node) -> dict[str, type]:
    """{service name: type} of the stack's gps_msgs services and the nodes' set_parameters services."""
    import importlib

    found = {}
    for name, types in node.get_service_names_and_types():
        for t in types:
            pkg, _, cls = t.split("/")
            if pkg == "gps_msgs" or (name.endswith("/set_parameters") and name.startswith("/gps_")):
                found[name] = getattr(importlib.import_module(f"{pkg}.srv"), cls)
    return found


STRUCTURED = {"/gps_controller/set_linear_gaussian": _linear_gaussian_request,
              "/gps_controller/set_policy_weights": _policy_weights_request,
              "/gps_controller/run_trial": _run_trial_request,
              "/gps_sim/reset": _reset_request}


@pytest.fixture
def stack(tmp_path, ros_env):
    """The `gps up` stack (reach, 2 samples per condition, horizon 20) and a client node in this process.
    Afterwards the stack is stopped and none of its logs may hold a traceback."""
    out = tmp_path / "out"
    params = trainer_params_file(tmp_path, overrides=["samples_per_condition=2", "horizon=20"], fsync=False)
    up = gps_cli(ros_env, out, "up", "--trainer-params", str(params))
    pids = stack_pids(out)
    rclpy.init()
    node = rclpy.create_node("fuzz_client")
    try:
        assert up.returncode == 0, up.stderr
        yield node, pids
    finally:
        node.destroy_node()
        rclpy.shutdown()
        stop_stack(ros_env, out, pids)
    logs = "\n".join(p.read_text(errors="replace") for p in Path(out).rglob("*.log"))
    assert "Traceback" not in logs, logs[-4000:]


def _train_one_iteration(node, between=lambda status: time.sleep(1.0)) -> dict:
    """Start one iteration and wait until no iteration remains (``between(status)`` at each poll); it must
    end without an error or a lost rollout. Returns the last status."""
    get = node.create_client(GetStatus, "/gps_trainer/get_status")
    start = node.create_client(StartIteration, "/gps_trainer/start_iteration")
    st = status_to_dict(call_service(node, get, GetStatus.Request()).status)
    assert st["phase"] != "error", st
    assert call_service(node, start, StartIteration.Request(iterations=1), timeout=60.0).accepted
    deadline = time.monotonic() + 300.0
    while ((st := status_to_dict(call_service(node, get, GetStatus.Request()).status))["iterations_completed"] < 1
           or st["iterations_remaining"] > 0):
        assert st["phase"] != "error", st["message"]
        assert time.monotonic() < deadline, st
        between(st)
    assert st["phase"] != "error" and st["rollouts_corrupted"] == 0, st
    return st


def test_random_requests_to_every_service_are_answered_and_nothing_breaks(stack):
    from rcl_interfaces.srv import ListParameters
    from std_msgs.msg import UInt64

    from gps_controller.policies import VisuomotorConfig, make_visuomotor_policy
    from gps_sim.sim_node import LATCHED_QOS

    node, pids = stack
    seed = 0
    rng = np.random.default_rng(seed)
    policy = make_visuomotor_policy(VisuomotorConfig(config_dim=32, action_dim=7, image_height=64, image_width=64,
                                                     conv_filters=(8, 8, 8)), seed=seed)
    rejected: list[int] = []
    node.create_subscription(UInt64, "gps_sim/rejected_commands", lambda m: rejected.append(m.data), LATCHED_QOS)
    deadline = time.monotonic() + 30.0
    while len(services := _project_services(node)) < 9 and time.monotonic() < deadline:
        time.sleep(0.5)
    names = sorted(services)
    assert {"/gps_trainer/get_status", "/gps_controller/run_trial", "/gps_sim/reset"} <= set(names), names
    clients = {name: node.create_client(services[name], name) for name in names}
    param_names: dict[str, list[str]] = {}
    for name in names:
        if name.endswith("/set_parameters"):
            lister = node.create_client(ListParameters, name.replace("/set_parameters", "/list_parameters"))
            param_names[name] = list(call_service(node, lister, ListParameters.Request()).result.names)
    for round_ in range(CALLS_PER_SERVICE):
        for name in names:
            srv = services[name]
            if name in param_names:
                req = _parameter_request(srv, param_names[name], rng)
            elif rng.random() < 0.25 or name not in STRUCTURED:
                req = _fill(srv.Request(), rng)  # garbage in every field
            else:  # a valid request with a field or two broken
                req = STRUCTURED[name](rng, policy) if name.endswith("set_policy_weights") else STRUCTURED[name](rng)
            if name.endswith("/start_iteration"):
                req.iterations = 0  # refused (at least 1 is required): a fuzzed request never starts a training run
            context = f"seed {seed}, round {round_}, {name}: {req!r:.600}"
            client = clients[name]
            assert client.wait_for_service(timeout_sec=ANSWER_TIMEOUT_S), context
            future = client.call_async(req)
            rclpy.spin_until_future_complete(node, future, timeout_sec=ANSWER_TIMEOUT_S)
            assert future.done() and future.result() is not None, f"no answer: {context}"
            if name in param_names:  # only a declared parameter may ever be set
                for prm, res in zip(req.parameters, future.result().results, strict=True):
                    assert not res.successful or prm.name in param_names[name], f"{prm.name!r} set: {context}"
            for pid in pids:
                assert pid_alive(pid), f"a node died: {context}"
    # No node gained a parameter.
    for name, names_before in param_names.items():
        lister = node.create_client(ListParameters, name.replace("/set_parameters", "/list_parameters"))
        assert list(call_service(node, lister, ListParameters.Request()).result.names) == names_before, name
    # The controller never sent the arm a command the simulator had to refuse (NaN, wrong length).
    rclpy.spin_once(node, timeout_sec=1.0)
    assert rejected and rejected[-1] == 0, rejected

    # Nothing poisoned: the stack, as the requests left it, still trains from a clean start, while other
    # clients keep asking the busy trainer for iterations and the controller for trials of their own.
    def meddle(status: dict) -> None:
        if rng.random() < 0.5 and status["iterations_completed"] < 1:
            answer = call_service(node, clients["/gps_trainer/start_iteration"],
                                  StartIteration.Request(iterations=1), timeout=ANSWER_TIMEOUT_S)
            # accepted only once the first run has ended (between the status read and this call)
            assert not answer.accepted or answer.first_iteration == 1, answer
        call_service(node, clients["/gps_controller/run_trial"], _run_trial_request(rng), timeout=ANSWER_TIMEOUT_S)

    _train_one_iteration(node, meddle)


def _subscribed_topics(node, names: tuple[str, ...]) -> dict[str, type]:
    """{topic: message class} of every topic that the stack's nodes ``names`` subscribe to."""
    import importlib

    found = {}
    for name in names:
        for topic, types in node.get_subscriber_names_and_types_by_node(name, "/"):
            pkg, _, cls = types[0].split("/")
            found[topic] = getattr(importlib.import_module(f"{pkg}.msg"), cls)
    return found


def test_random_messages_on_every_subscribed_topic_crash_nothing_and_poison_nothing(stack):
    """Garbage on every topic a node of the stack reads (joint states, images, rollouts, commands, the
    clock, ...): afterwards every node still runs, no log holds a traceback, and an iteration completes
    with no rollout lost."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    node, pids = stack
    seed = 0
    rng = np.random.default_rng(seed)
    # reliable and transient-local: offers what any subscription of the stack asks for
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    deadline = time.monotonic() + 30.0
    nodes = ("gps_sim", "gps_controller", "gps_trainer", "gps_tf")
    while not all(n in node.get_node_names() for n in nodes) and time.monotonic() < deadline:
        time.sleep(0.5)
    topics = _subscribed_topics(node, nodes)
    assert {"/gps/rollouts", "/joint_states"} <= set(topics), topics
    publishers = {topic: node.create_publisher(cls, topic, qos) for topic, cls in topics.items()}
    time.sleep(2.0)  # discovery of the new publishers
    if "/clock" in publishers:  # rclpy's own time source raised on this one and took two nodes down
        clock = topics["/clock"]()
        clock.clock.sec = -5
        publishers["/clock"].publish(clock)
    for round_ in range(CALLS_PER_SERVICE):
        for topic in sorted(publishers):
            publishers[topic].publish(_fill(topics[topic](), rng))
        rclpy.spin_once(node, timeout_sec=0.05)
        for pid in pids:
            assert pid_alive(pid), f"a node died: seed {seed}, round {round_}"
    time.sleep(2.0)
    for pid in pids:
        assert pid_alive(pid), f"a node died after the messages: seed {seed}"
    _train_one_iteration(node)
