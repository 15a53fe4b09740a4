"""Neural policies the controller runs (CNN / MLP) and their serialization; the linear-Gaussian
controller type lives in gps_core.linear_gaussian."""

from .neural import (
    PRECISIONS,
    GaussianPolicy,
    MLPConfig,
    MLPPolicy,
    VisuomotorCNN,
    VisuomotorConfig,
    count_parameters,
    cpu_supports_bf16,
    images_to_tensor,
    make_mlp_policy,
    make_policy,
    make_visuomotor_policy,
    resolve_precision,
)
from .serialization import (
    PolicyFormatError,
    deserialize_policy,
    load_policy,
    save_policy,
    serialize_policy,
)
from .spatial_softmax import SpatialSoftmax

__all__ = [
    "PRECISIONS",
    "GaussianPolicy",
    "MLPConfig",
    "MLPPolicy",
    "PolicyFormatError",
    "SpatialSoftmax",
    "VisuomotorCNN",
    "VisuomotorConfig",
    "count_parameters",
    "cpu_supports_bf16",
    "deserialize_policy",
    "images_to_tensor",
    "load_policy",
    "make_mlp_policy",
    "make_policy",
    "make_visuomotor_policy",
    "resolve_precision",
    "save_policy",
    "serialize_policy",
]
