"""Policy weights: safetensors + architecture JSON + SHA-256 round trip and rejections."""

import hashlib
import io
import json
import pickle  # only to *produce* a hostile payload; nothing here unpickles
import struct

import numpy as np
import pytest
import torch

from gps_controller.policies import (
    MLPConfig,
    PolicyFormatError,
    VisuomotorConfig,
    deserialize_policy,
    load_policy,
    make_mlp_policy,
    make_visuomotor_policy,
    save_policy,
    serialize_policy,
)

torch.set_num_threads(1)


@pytest.fixture
def cnn_policy():
    cfg = VisuomotorConfig(config_dim=5, action_dim=3, image_height=20, image_width=24, conv_filters=(6, 4, 4))
    pol = make_visuomotor_policy(cfg, seed=11, init_var=0.3)
    pol.set_normalization(mean=np.arange(5.0), std=np.linspace(0.5, 2.0, 5))
    with torch.no_grad():
        pol.net.softmax.log_temperature.fill_(-0.4)
    return pol


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_round_trip_is_exact(cnn_policy):
    arch, weights, sha = serialize_policy(cnn_policy)
    assert sha == _sha(weights) and isinstance(weights, bytes)
    back = deserialize_policy(arch, weights, sha)
    s0, s1 = cnn_policy.state_dict(), back.state_dict()
    assert set(s0) == set(s1)
    for k in s0:
        assert s0[k].dtype == s1[k].dtype and torch.equal(s0[k], s1[k]), k
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(4, 5))
    imgs = rng.integers(0, 256, size=(4, 20, 24, 3), dtype=np.uint8)
    # bit-equal weights, the same batch, this process's thread count: the same kernels, so equal exactly
    m0, p0 = cnn_policy.predict(obs, imgs)
    m1, p1 = back.predict(obs, imgs)
    np.testing.assert_array_equal(m0, m1)
    np.testing.assert_array_equal(p0, p1)
    # deterministic bytes
    assert serialize_policy(back) == (arch, weights, sha)


def test_round_trip_mlp_and_file(tmp_path):
    pol = make_mlp_policy(MLPConfig(obs_dim=4, action_dim=2, hidden=(9, 9)), seed=2)
    arch, weights, sha = serialize_policy(pol)
    assert json.loads(arch)["type"] == "mlp"
    back = deserialize_policy(arch, weights, sha)
    np.testing.assert_array_equal(pol.predict(np.ones((3, 4)))[0], back.predict(np.ones((3, 4)))[0])
    path = tmp_path / "policy.safetensors"
    assert save_policy(pol, path) == sha
    loaded = load_policy(path)
    assert all(torch.equal(a, b) for a, b in zip(pol.state_dict().values(), loaded.state_dict().values(),
                                                  strict=True))
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(PolicyFormatError, match="SHA-256 mismatch"):
        load_policy(path)


def test_rejects_tampered_weights(cnn_policy):
    arch, weights, sha = serialize_policy(cnn_policy)
    tampered = bytearray(weights)
    tampered[-3] ^= 0x40  # flip a bit in the last tensor's data
    with pytest.raises(PolicyFormatError, match="SHA-256 mismatch.*tampered"):
        deserialize_policy(arch, bytes(tampered), sha)
    # a tamperer who also recomputes the SHA but breaks the safetensors structure
    broken = bytes(tampered[:40]) + b"garbage"
    with pytest.raises(PolicyFormatError, match="not a valid safetensors payload"):
        deserialize_policy(arch, broken, _sha(broken))
    # a tampered architecture (type swapped) is caught by the schema
    bad_arch = json.loads(arch)
    bad_arch["type"] = "resnet"
    with pytest.raises(PolicyFormatError, match="'type' must be one of"):
        deserialize_policy(json.dumps(bad_arch), weights, sha)


def test_rejects_wrong_sha(cnn_policy):
    arch, weights, sha = serialize_policy(cnn_policy)
    with pytest.raises(PolicyFormatError, match="SHA-256 mismatch"):
        deserialize_policy(arch, weights, _sha(b"something else"))
    with pytest.raises(PolicyFormatError, match="64 hex digits"):
        deserialize_policy(arch, weights, sha[:-1])
    with pytest.raises(PolicyFormatError, match="64 hex digits"):
        deserialize_policy(arch, weights, "z" * 64)


def test_rejects_shape_mismatch(cnn_policy):
    arch, weights, sha = serialize_policy(cnn_policy)
    # architecture says 4 torques, weights carry 3
    a = json.loads(arch)
    a["net"]["action_dim"] = 4
    a["action_dim"] = 4
    with pytest.raises(PolicyFormatError, match="shape mismatch for '.*architecture table lists"):
        deserialize_policy(json.dumps(a), weights, sha)
    # ... and with the tensor table edited to agree, the weights themselves disagree
    a["tensors"]["pol_var"]["shape"] = [4]
    a["tensors"]["net.fc.2.bias"]["shape"] = [4]
    a["tensors"]["net.fc.2.weight"]["shape"] = [4, 40]
    with pytest.raises(PolicyFormatError, match=r"shape mismatch for '(pol_var|net.fc.2.\w+)': weights have \[3\]"):
        deserialize_policy(json.dumps(a), weights, sha)
    # weights from a differently-sized network under the original architecture
    other = make_visuomotor_policy(VisuomotorConfig(config_dim=5, action_dim=3, image_height=20, image_width=24,
                                                    conv_filters=(6, 4, 4), fc_hidden=(40, 41)))
    _, w2, s2 = serialize_policy(other)
    with pytest.raises(PolicyFormatError, match="shape mismatch for 'net.fc.1"):
        deserialize_policy(arch, w2, s2)
    # missing tensor
    a = json.loads(arch)
    del a["tensors"]["pol_var"]
    with pytest.raises(PolicyFormatError, match=r"missing \['pol_var'\]"):
        deserialize_policy(json.dumps(a), weights, sha)


def test_rejects_pickle_payloads(cnn_policy):
    arch, _, _ = serialize_policy(cnn_policy)
    pickled = pickle.dumps(cnn_policy.state_dict(), protocol=4)
    with pytest.raises(PolicyFormatError, match="pickle protocol 4 header.*refusing to unpickle"):
        deserialize_policy(arch, pickled, _sha(pickled))
    buf = io.BytesIO()
    torch.save(cnn_policy.state_dict(), buf)
    zipped = buf.getvalue()
    with pytest.raises(PolicyFormatError, match=r"zip archive \(torch.save format\).*refusing to unpickle"):
        deserialize_policy(arch, zipped, _sha(zipped))


def test_rejects_bad_json_sizes_and_nonfinite(cnn_policy):
    arch, weights, sha = serialize_policy(cnn_policy)
    with pytest.raises(PolicyFormatError, match="not valid JSON"):
        deserialize_policy(arch[:-2], weights, sha)
    for key, value, msg in [("image_height", -3, "positive integers"), ("conv_filters", [64, 32, "x"], "positive"),
                            ("image_width", 10**6, "exceeds the limit"), ("bogus", 1, "unknown keys")]:
        a = json.loads(arch)
        a["net"][key] = value
        with pytest.raises(PolicyFormatError, match=msg):
            deserialize_policy(json.dumps(a), weights, sha)
    # NaN inside a correctly hashed, correctly shaped payload
    from safetensors.torch import save
    sd = {k: v.clone() for k, v in cnn_policy.state_dict().items()}
    sd["pol_var"][0] = float("nan")
    w = save(sd)
    with pytest.raises(PolicyFormatError, match="NaN or Inf"):
        deserialize_policy(arch, w, _sha(w))
    # safetensors header claiming more bytes than present
    hdr = struct.pack("<Q", 10**9) + b"{}"
    with pytest.raises(PolicyFormatError, match="not a valid safetensors payload"):
        deserialize_policy(arch, hdr, _sha(hdr))
    with pytest.raises(PolicyFormatError, match="must be bytes"):
        deserialize_policy(arch, "text", sha)


@pytest.mark.parametrize("path", [("version",), ("net", "fc_hidden", 1), ("num_parameters",)])
def test_a_huge_integer_anywhere_in_the_architecture_gets_the_labelled_error(cnn_policy, path):
    """An integer of 5000 digits is beyond what Python's int() reads: json.loads raised a plain ValueError
    past the parser's labelled errors."""
    arch, weights, sha = serialize_policy(cnn_policy)
    a = json.loads(arch)
    node = a
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = "HUGE"
    text = json.dumps(a).replace('"HUGE"', "1" * 5000)
    with pytest.raises(PolicyFormatError, match="an integer of 5000 digits, over the 19-digit limit"):
        deserialize_policy(text, weights, sha)


def test_safetensors_header_length_that_looks_like_a_pickle_opcode_is_not_rejected():
    """A header of 0x0580 bytes starts the file with 0x80 0x05 (the pickle-5 opcode bytes)."""
    from gps_controller.policies.serialization import _looks_pickled

    n = 0x0580
    data = struct.pack("<Q", n) + b"{" + b" " * (n - 2) + b"}"
    assert data[:2] == b"\x80\x05"
    assert _looks_pickled(data) is None
    assert _looks_pickled(pickle.dumps({"a": 1}, protocol=5)) is not None
