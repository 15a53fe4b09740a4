"""Policy weights on the wire and on disk: safetensors bytes + JSON architecture + SHA-256. Never pickle.

``serialize_policy(policy) -> (architecture_json, weights, sha256_hex)``; ``deserialize_policy`` checks,
in this order, and raises ``PolicyFormatError`` (a ``ValueError``) with a specific message:

1. argument types;
2. that the weights are not a pickle (protocol header ``0x80 0x02..0x05``) or a ``torch.save`` zip
   archive ("refusing to unpickle");
3. the SHA-256 string (64 hex digits) and that it matches the SHA-256 of the weights bytes
   ("SHA-256 mismatch");
4. the architecture JSON against the schema (format, version, type, sizes, the tensor table);
5. that the weights parse as safetensors (they never run code) and hold exactly the tensors the
   architecture needs, with the same shapes and dtypes, all finite.

The SHA covers the weights bytes (the ``SetPolicyWeights.sha256`` field's definition); the
architecture is covered by the schema and by the tensor table, which must agree with the weights.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .neural import POLICY_TYPES, GaussianPolicy, MLPConfig, VisuomotorConfig, count_parameters

FORMAT_NAME = "gps-ros2-policy"
FORMAT_VERSION = 1
MAX_WEIGHTS_BYTES = 512 * 1024 * 1024
# Sanity limits for untrusted architecture descriptions (keep a hostile description from
# allocating absurd networks before the shape check can reject it).
MAX_DIM = 4096
MAX_IMAGE_SIDE = 2048
MAX_PARAMETERS = 50_000_000
#: The architecture JSON is small (sizes and a tensor table): bound its length and nesting before
#: parsing, so a hostile description cannot exhaust memory or the recursion limit.
MAX_ARCHITECTURE_CHARS = 1_000_000
MAX_JSON_DEPTH = 16
MAX_INT_DIGITS = 19
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.uint8: "uint8"}
_NET_KEYS = {
    "visuomotor_cnn": {f.name for f in VisuomotorConfig.__dataclass_fields__.values()},
    "mlp": {f.name for f in MLPConfig.__dataclass_fields__.values()},
}


class PolicyFormatError(ValueError):
    """A policy payload (architecture, weights, or hash) failed validation."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _state_tensors(policy: GaussianPolicy) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in policy.state_dict().items()}


def architecture_dict(policy: GaussianPolicy) -> dict[str, Any]:
    tensors = _state_tensors(policy)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        **policy.architecture(),
        "obs_dim": policy.obs_dim,
        "action_dim": policy.action_dim,
        **({"observes": policy.observes} if policy.observes else {}),
        "image_shape": list(policy.image_shape) if policy.image_shape else None,
        "num_parameters": count_parameters(policy),
        "tensors": {k: {"shape": list(v.shape), "dtype": _DTYPE_NAMES[v.dtype]} for k, v in tensors.items()},
    }


def serialize_policy(policy: GaussianPolicy) -> tuple[str, bytes, str]:
    """-> (architecture JSON, safetensors bytes, lowercase hex SHA-256 of the bytes)."""
    tensors = _state_tensors(policy)
    for name, t in tensors.items():
        if t.dtype not in _DTYPE_NAMES:
            raise PolicyFormatError(f"tensor {name!r} has unsupported dtype {t.dtype}")
    # No metadata: safetensors orders metadata keys arbitrarily, and the wire bytes (and hence the
    # SHA) should be a function of the tensors alone.
    weights = st_save(tensors)
    arch = json.dumps(architecture_dict(policy), sort_keys=True, separators=(",", ":"))
    return arch, weights, sha256_hex(weights)


def json_depth(text: str) -> int:
    """Nesting depth of a JSON text (objects and arrays), found without recursion."""
    import numpy as np

    skeleton = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "replace"), dtype=np.uint8)
    steps = np.zeros(skeleton.shape, dtype=np.int64)
    steps[(skeleton == ord("{")) | (skeleton == ord("["))] = 1
    steps[(skeleton == ord("}")) | (skeleton == ord("]"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def parse_architecture(architecture_json: str) -> Any:
    """json.loads with the size and depth limits (PolicyFormatError naming the limit)."""
    if len(architecture_json) > MAX_ARCHITECTURE_CHARS:
        raise PolicyFormatError(f"architecture JSON is {len(architecture_json)} characters, over the "
                                f"{MAX_ARCHITECTURE_CHARS} limit")
    depth = json_depth(architecture_json)
    if depth > MAX_JSON_DEPTH:
        raise PolicyFormatError(f"architecture JSON is nested {depth} deep, over the {MAX_JSON_DEPTH} limit")
    try:
        return json.loads(architecture_json, parse_int=_bounded_int)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise PolicyFormatError(f"architecture is not valid JSON: {exc}") from exc


def _bounded_int(text: str) -> int:
    """A JSON integer of at most MAX_INT_DIGITS digits (every size and count of an architecture is far
    below; Python refuses to read one of more than 4300 digits with a ValueError of its own)."""
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise PolicyFormatError(f"architecture JSON holds an integer of {digits} digits, over the "
                                f"{MAX_INT_DIGITS}-digit limit")
    return int(text)


def _looks_pickled(data: bytes) -> str | None:
    # A safetensors file starts with its header length (u64 little endian) and then the JSON header; a
    # length such as 0x0580 begins with the bytes 0x80 0x05, so check for that layout before the
    # pickle-opcode heuristic.
    if len(data) >= 9 and data[8:9] == b"{" and 8 + int.from_bytes(data[:8], "little") <= len(data):
        return None
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return f"pickle protocol {data[1]} header"
    if data[:4] == b"PK\x03\x04":
        return "zip archive (torch.save format)"
    return None


class NetSizeError(PolicyFormatError):
    """A network size outside what a controller accepts; ``key`` names the size."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


def check_net(kind: str, net: dict[str, Any]) -> VisuomotorConfig | MLPConfig:
    """The sizes of a ``kind`` network within the limits every receiver applies (MAX_DIM per layer,
    MAX_IMAGE_SIDE per image side, MAX_PARAMETERS in all): the one check of an architecture received on
    the wire and of a policy an experiment config asks for. Raises NetSizeError naming the size."""
    unknown = set(net) - _NET_KEYS[kind]
    if unknown:
        raise NetSizeError(sorted(unknown)[0], f"architecture 'net' has unknown keys {sorted(unknown)} for type "
                                               f"{kind!r}")
    for key, value in net.items():
        values = value if isinstance(value, list | tuple) else [value]
        limit = MAX_IMAGE_SIDE if key.startswith("image_") else MAX_DIM
        for v in values:
            if isinstance(v, bool) and key != "learn_temperature":
                raise NetSizeError(key, f"architecture size {key!r} must be numeric, got {value!r}")
            if key == "learn_temperature":
                if not isinstance(v, bool):
                    raise NetSizeError(key, f"architecture 'learn_temperature' must be a boolean, got {v!r}")
            elif key == "temperature":
                if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                    raise NetSizeError(key, f"architecture 'temperature' must be a positive number, got {v!r}")
            elif not isinstance(v, int) or v <= 0:
                raise NetSizeError(key, f"architecture size {key!r} must be positive integers, got {value!r}")
            elif v > limit:
                raise NetSizeError(key, f"architecture size {key!r}={v} exceeds the limit of {limit}")
    try:
        config = VisuomotorConfig(**net) if kind == "visuomotor_cnn" else MLPConfig(**net)
    except (TypeError, ValueError) as exc:
        raise NetSizeError("", f"architecture sizes are invalid: {exc}") from exc
    n_params = config.num_parameters()
    if n_params > MAX_PARAMETERS:
        raise NetSizeError("", f"network has {n_params} parameters, over the {MAX_PARAMETERS} limit")
    return config


def _check_arch(arch: Any) -> tuple[dict[str, Any], VisuomotorConfig | MLPConfig]:
    if not isinstance(arch, dict):
        raise PolicyFormatError("architecture must be a JSON object")
    if arch.get("format") != FORMAT_NAME:
        raise PolicyFormatError(f"architecture 'format' must be {FORMAT_NAME!r}, got {arch.get('format')!r}")
    if arch.get("version") != FORMAT_VERSION:
        raise PolicyFormatError(f"unsupported architecture version {arch.get('version')!r} "
                                f"(this build reads version {FORMAT_VERSION})")
    kind = arch.get("type")
    if kind not in POLICY_TYPES:
        raise PolicyFormatError(f"architecture 'type' must be one of {list(POLICY_TYPES)}, got {kind!r}")
    net = arch.get("net")
    if not isinstance(net, dict):
        raise PolicyFormatError("architecture 'net' must be an object of sizes")
    config = check_net(kind, net)
    for key in ("obs_dim", "action_dim"):
        want = config.config_dim if key == "obs_dim" else config.action_dim
        if arch.get(key) != want:
            raise PolicyFormatError(f"architecture {key!r}={arch.get(key)!r} disagrees with the net sizes ({want})")
    if not isinstance(arch.get("tensors"), dict):
        raise PolicyFormatError("architecture 'tensors' must map tensor names to shapes")
    observes = arch.get("observes", "observation")  # absent: not recorded (files before it was; fed o)
    if observes not in ("observation", "state") or (kind == "visuomotor_cnn" and observes != "observation"):
        raise PolicyFormatError(f"architecture 'observes' must be 'observation' (or 'state' for an MLP), "
                                f"got {observes!r}")
    return arch, config


def deserialize_policy(architecture_json: str, weights: bytes | bytearray | memoryview, sha256_hex_: str,
                       device: torch.device | str = "cpu") -> GaussianPolicy:
    """Validate and rebuild a policy; raises ``PolicyFormatError`` on any problem."""
    if not isinstance(architecture_json, str):
        raise PolicyFormatError(f"architecture must be a JSON string, got {type(architecture_json).__name__}")
    if not isinstance(weights, (bytes, bytearray, memoryview)):
        raise PolicyFormatError(f"weights must be bytes, got {type(weights).__name__}")
    if not isinstance(sha256_hex_, str):
        raise PolicyFormatError(f"sha256 must be a hex string, got {type(sha256_hex_).__name__}")
    data = bytes(weights)
    if not data:
        raise PolicyFormatError("weights are empty")
    if len(data) > MAX_WEIGHTS_BYTES:
        raise PolicyFormatError(f"weights are {len(data)} bytes, over the {MAX_WEIGHTS_BYTES}-byte limit")
    pickled = _looks_pickled(data)
    if pickled:
        raise PolicyFormatError(f"weights look like a pickle payload ({pickled}); refusing to unpickle — "
                                "policies travel as safetensors only")
    sha = sha256_hex_.strip().lower()
    if not _SHA_RE.match(sha):
        raise PolicyFormatError(f"sha256 must be 64 hex digits, got {sha256_hex_[:80]!r}")
    actual = sha256_hex(data)
    if not hmac.compare_digest(actual, sha):
        raise PolicyFormatError(f"SHA-256 mismatch: weights hash to {actual}, expected {sha} "
                                "(payload tampered with or corrupted)")
    arch_raw = parse_architecture(architecture_json)
    arch, config = _check_arch(arch_raw)

    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error types; none of them executes code
        raise PolicyFormatError(f"weights are not a valid safetensors payload: {exc}") from exc

    policy = GaussianPolicy.from_architecture({"type": arch["type"], "net": config.to_dict()}, seed=0)
    policy.observes = arch.get("observes")
    expected = {k: v for k, v in policy.state_dict().items()}
    table = arch["tensors"]
    for names, what in ((set(table), "architecture tensor table"), (set(tensors), "weights")):
        missing = sorted(set(expected) - names)
        extra = sorted(names - set(expected))
        if missing or extra:
            raise PolicyFormatError(f"tensor names in the {what} do not match the architecture: "
                                    f"missing {missing}, unexpected {extra}")
    for name, ref in expected.items():
        got = tensors[name]
        listed = table[name]
        if not isinstance(listed, dict) or listed.get("shape") != list(ref.shape):
            raise PolicyFormatError(f"shape mismatch for {name!r}: architecture table lists "
                                    f"{listed.get('shape') if isinstance(listed, dict) else listed!r}, "
                                    f"the network needs {list(ref.shape)}")
        if tuple(got.shape) != tuple(ref.shape):
            raise PolicyFormatError(f"shape mismatch for {name!r}: weights have {list(got.shape)}, "
                                    f"the architecture needs {list(ref.shape)}")
        if got.dtype != ref.dtype:
            raise PolicyFormatError(f"dtype mismatch for {name!r}: weights have {got.dtype}, expected {ref.dtype}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise PolicyFormatError(f"tensor {name!r} holds NaN or Inf")
    if bool((tensors["pol_var"] <= 0).any()):
        raise PolicyFormatError("pol_var must be positive")
    policy.load_state_dict(tensors, strict=True)
    return policy.to(device).eval()


# ----- files (checkpoints, pretrained weights) -------------------------------------------------

def save_policy(policy: GaussianPolicy, path: str | Path) -> str:
    """Write ``path`` (safetensors, the architecture JSON in its metadata) and ``path.sha256``.

    Returns the SHA-256 of the weights bytes as they would travel on the wire.
    """
    arch, weights, sha = serialize_policy(policy)
    tensors = st_load(weights)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "architecture": arch, "weights_sha256": sha}
    path.write_bytes(st_save(tensors, metadata=meta))
    Path(str(path) + ".sha256").write_text(sha256_hex(path.read_bytes()) + "\n")
    return sha


def read_safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors payload, parsed without loading tensors."""
    if len(data) < 8:
        raise PolicyFormatError("file too short to be safetensors")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 100_000_000:
        raise PolicyFormatError("safetensors header length is out of range")
    try:
        header = json.loads(data[8:8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyFormatError(f"safetensors header is not JSON: {exc}") from exc
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise PolicyFormatError("safetensors metadata must be an object")
    return meta


def load_policy(path: str | Path, device: torch.device | str = "cpu") -> GaussianPolicy:
    """Read a file written by ``save_policy``; checks its ``.sha256`` sidecar when present."""
    path = Path(path)
    data = path.read_bytes()
    pickled = _looks_pickled(data)
    if pickled:
        raise PolicyFormatError(f"{path} looks like a pickle payload ({pickled}); refusing to unpickle")
    side = Path(str(path) + ".sha256")
    if side.exists():
        want = side.read_text().strip().lower()
        if not hmac.compare_digest(sha256_hex(data), want):
            raise PolicyFormatError(f"SHA-256 mismatch for {path}: file does not match {side.name}")
    meta = read_safetensors_metadata(data)
    arch = meta.get("architecture")
    if not isinstance(arch, str):
        raise PolicyFormatError(f"{path} has no policy architecture in its metadata")
    try:
        tensors = st_load(data)
    except Exception as exc:
        raise PolicyFormatError(f"{path} is not a valid safetensors file: {exc}") from exc
    weights = st_save(tensors)
    return deserialize_policy(arch, weights, sha256_hex(weights), device=device)
