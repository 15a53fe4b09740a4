"""Neural policies the controller runs (CNN / MLP) and their serialization; the linear-Gaussian
controller type lives in gps_core.linear_gaussian."""

from .neural import (
    GaussianPolicy,
    MLPConfig,
    MLPPolicy,
    VisuomotorCNN,
    VisuomotorConfig,
    count_parameters,
    images_to_tensor,
    make_mlp_policy,
    make_policy,
    make_visuomotor_policy,
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
    "GaussianPolicy",
    "MLPConfig",
    "MLPPolicy",
    "PolicyFormatError",
    "SpatialSoftmax",
    "VisuomotorCNN",
    "VisuomotorConfig",
    "count_parameters",
    "deserialize_policy",
    "images_to_tensor",
    "load_policy",
    "make_mlp_policy",
    "make_policy",
    "make_visuomotor_policy",
    "save_policy",
    "serialize_policy",
]
