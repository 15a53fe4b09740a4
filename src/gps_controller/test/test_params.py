"""The controller's typed parameters and its ROS-free core (no rclpy node)."""

import json

import numpy as np
import pytest
import yaml

from gps_controller import conversions as conv
from gps_controller import params as P
from gps_core.tasks import repo_root

SHIPPED = repo_root() / "config" / "controller.yaml"


def shipped_values() -> dict:
    return yaml.safe_load(SHIPPED.read_text())["/**/gps_controller"]["ros__parameters"]


def test_the_shipped_parameter_file_loads_and_names_every_parameter():
    values = shipped_values()
    assert set(values) == set(P.SPECS)  # every parameter documented in config/controller.yaml
    p = P.load_params(values, {k: str(SHIPPED) for k in values})
    assert p.trigger_mode == "observation" and p.effort_limits == (30.0,) * 5 + (10.0,) * 2


@pytest.mark.parametrize("key, value, words", [
    ("efort_limits", [1.0], "unknown parameter 'efort_limits' (value [1.0])"),
    ("control_rate_hz", -5.0, "control_rate_hz: must be > 0 and <= 1000, got -5.0"),
    ("image_size", -5, "image_size: must be >= 8 and <= 1024, got -5"),
    ("image_size", "ten", "image_size: must be an integer, got 'ten'"),
    ("stale_timeout", float("nan"), "stale_timeout: must be >= 0 and <= 60, got nan"),
    ("effort_limits", [30.0] * 6, "effort_limits: has 6 entries for the 7 joint_names"),
    ("effort_limits", [30.0] * 6 + [-1.0], "effort_limits: every entry must be > 0"),
    ("trigger_mode", "tick", "trigger_mode: must be one of ['timer', 'observation'], got 'tick'"),
    ("strict_joint_names", 1, "strict_joint_names: must be a boolean, got 1"),
    ("horizon", 20000, "horizon: 20000 exceeds max_horizon 10000"),
])
def test_bad_keys_and_values_name_the_file_the_key_and_the_value(key, value, words):
    values = shipped_values()
    values[key] = value
    with pytest.raises(P.ParameterError) as err:
        P.load_params(values, {k: "/cfg/controller.yaml" for k in values})
    assert str(err.value).startswith("/cfg/controller.yaml: ")
    assert words in str(err.value)


def test_integers_are_accepted_for_floats_and_builtins_are_ignored():
    p = P.load_params({"control_rate_hz": 50, "effort_limits": [1, 2, 3, 4, 5, 6, 7], "use_sim_time": True})
    assert p.control_rate_hz == 50.0 and isinstance(p.control_rate_hz, float)
    assert p.effort_limits == (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)


def test_param_sources_attribute_keys_to_files_and_reject_an_empty_file(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text(yaml.safe_dump({"/**/gps_controller": {"ros__parameters": {"task": "reach"}},
                                 "/**/gps_sim": {"ros__parameters": {"mode": "lockstep"}}}))
    b = tmp_path / "b.yaml"
    b.write_text(yaml.safe_dump({"gps_controller": {"ros__parameters": {"image_size": 32}}}))
    argv = ["x", "--ros-args", "--params-file", str(a), "--params-file", str(b), "-p", "horizon:=5"]
    assert P.param_sources(argv) == {"task": str(a), "image_size": str(b), "horizon": "-p horizon:=5"}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(P.ParameterError, match=f"{empty}: parameter file is empty"):
        P.param_sources(["x", "--ros-args", "--params-file", str(empty)])


def test_runtime_updates_are_validated_and_read_only_ones_refused():
    p = P.load_params(shipped_values())
    assert P.check_runtime_update(p, {"condition_set": "spatial_test"}, False) == {"condition_set": "spatial_test"}
    with pytest.raises(P.ParameterError, match="effort_limits: is fixed at start-up"):
        P.check_runtime_update(p, {"effort_limits": [1.0] * 7}, False)
    with pytest.raises(P.ParameterError, match="condition_set: must be one of"):
        P.check_runtime_update(p, {"condition_set": "nope"}, False)
    with pytest.raises(P.ParameterError, match="a trial is running"):
        P.check_runtime_update(p, {"condition_set": "train"}, True)
    assert P.check_runtime_update(p, {"use_sim_time": True}, True) == {}
    # robustness probing (issue 24): image noise and blur change at run time, range-checked
    assert P.check_runtime_update(p, {"image_noise_std": 12.0, "image_blur": 1}, False) == {
        "image_noise_std": 12.0, "image_blur": 1.0}
    assert P.check_runtime_update(p, {"condition_set": "ood_lighting_2_validation"}, False)
    for key, bad in (("image_noise_std", -1.0), ("image_noise_std", float("nan")), ("image_blur", 21.0)):
        with pytest.raises(P.ParameterError, match=key):
            P.check_runtime_update(p, {key: bad}, False)


# --------------------------------------------------------------------------- the core, without ROS


@pytest.fixture(scope="module")
def core():
    from gps_controller.core import ControllerCore

    return ControllerCore(P.load_params({**shipped_values(), "horizon": 20}))


def lg_msg(T=20, smoothing=0.0):
    from gps_core.linear_gaussian import LinearGaussianPolicy

    pol = LinearGaussianPolicy(np.zeros((T, 7, 32)), np.zeros((T, 7)), np.tile(np.eye(7), (T, 1, 1)))
    msg = conv.linear_gaussian_to_msg(pol)
    msg.noise_smoothing_std = smoothing
    return msg


@pytest.mark.parametrize("smoothing", [1e9, 1e308, float("inf"), -1.0])
def test_noise_smoothing_std_beyond_its_bound_is_rejected(core, smoothing):
    with pytest.raises(conv.MessageValidationError, match="noise_smoothing_std: must be between 0 and 1000"):
        core.set_linear_gaussian(0, lg_msg(smoothing=smoothing))
    assert core.set_linear_gaussian(0, lg_msg(smoothing=conv.MAX_NOISE_SMOOTHING_STD)).startswith("condition 0")


def test_a_deeply_nested_architecture_is_rejected_before_parsing(core):
    import hashlib

    from gps_controller.policies.serialization import MAX_JSON_DEPTH, PolicyFormatError

    weights = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "
    sha = hashlib.sha256(weights).hexdigest()
    for arch, words in (("[" * 100_000 + "]" * 100_000, "nested 100000 deep"),
                        (json.dumps({"a": "x" * 2_000_000}), "over the 1000000 limit")):
        with pytest.raises(PolicyFormatError, match=words):
            core.set_policy(arch, weights, sha)
    from gps_controller.policies.serialization import json_depth

    assert json_depth(json.dumps({"a": [[1]] * 3, "b": "[[[["})) == 3 < MAX_JSON_DEPTH


def test_oversized_images_are_rejected_before_they_are_deserialized(core, monkeypatch):
    import rclpy.serialization
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    big = Image(height=4000, width=4000, encoding="rgb8", step=12000)
    big.header.frame_id = "cam"
    raw = serialize_message(big)  # an empty data field: only the header says 4000x4000
    calls = []
    monkeypatch.setattr(rclpy.serialization, "deserialize_message", lambda *a: calls.append(a))
    with pytest.raises(conv.MessageValidationError, match="4000x4000 exceeds max_image_side 2048"):
        core.image(raw, 0.0)
    assert calls == []  # never deserialized
    monkeypatch.undo()
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    core.image(serialize_message(conv.image_to_msg(img)), 1.0)
    assert core.sensors.image.shape == (64, 64, 3) and core.sensors.image_rx == 1.0


def test_run_time_parameters_are_refused_during_a_trial_and_applied_after(core):
    from types import SimpleNamespace

    assert core.set_linear_gaussian(1, lg_msg()).startswith("condition 1")
    req = SimpleNamespace(condition=1, iteration=0, sample_index=0, policy_type="linear_gaussian", horizon=5,
                          use_noise=False, seed=0, record_images=False)
    core.prepare(req)
    with pytest.raises(ValueError, match="a trial is already running"):
        core.prepare(req)
    with pytest.raises(P.ParameterError, match="a trial is running"):
        core.check_parameters({"condition_set": "spatial_test"})
    core.trial = None
    assert core.check_parameters({"condition_set": "spatial_test"}) == {"condition_set": "spatial_test"}
    core.apply_parameters({"condition_set": "spatial_test"})
    assert core.p.condition_set == "spatial_test"
    assert len(core.conditions) == len(core.task.condition_list("spatial_test"))
    core.apply_parameters({"condition_set": "train"})


def test_every_request_is_answered_whatever_the_handler_raises(core):
    from types import SimpleNamespace

    from gps_controller.core import answers_always

    class Node:
        def __init__(self):
            self.core, self.warnings = core, []

        def get_logger(self):
            return SimpleNamespace(warning=self.warnings.append)

        @answers_always
        def _on_thing(self, request, response):
            if request == "memory":
                raise MemoryError("Unable to allocate 59.6 GiB")
            if request == "recursion":
                raise RecursionError("maximum recursion depth exceeded")
            raise conv.MessageValidationError("gains", "wrong size")

    node = Node()
    for request, message in (("memory", "MemoryError: Unable to allocate 59.6 GiB"),
                             ("recursion", "RecursionError: maximum recursion depth exceeded"),
                             ("value", "gains: wrong size")):
        response = node._on_thing(request, SimpleNamespace(success=True, message=""))
        assert response.success is False and response.message == message
    assert len(node.warnings) == 3 and core.in_flight.active == 0
