"""Policies the controller runs: linear-Gaussian local controllers and neural (CNN / MLP) policies."""

from .linear_gaussian import LinearGaussianPolicy, init_lqr, init_pd, smooth_noise
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
    "LinearGaussianPolicy",
    "MLPConfig",
    "MLPPolicy",
    "PolicyFormatError",
    "SpatialSoftmax",
    "VisuomotorCNN",
    "VisuomotorConfig",
    "count_parameters",
    "deserialize_policy",
    "images_to_tensor",
    "init_lqr",
    "init_pd",
    "load_policy",
    "make_mlp_policy",
    "make_policy",
    "make_visuomotor_policy",
    "save_policy",
    "serialize_policy",
    "smooth_noise",
]
