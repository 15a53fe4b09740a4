"""MDGPS policy linearization: one batched CNN pass over the prior's buffer serves the prior and the samples."""

from types import SimpleNamespace

import numpy as np
import torch

from gps_controller.policies import VisuomotorConfig, make_visuomotor_policy
from gps_trainer.algorithms.mdgps import PolicyPriorBuffer, fit_policy_linearization
from gps_trainer.config import GMMPriorConfig

torch.set_num_threads(1)


def _data(rng, n, T=6, dX=5, dO=4, size=16):
    X = rng.normal(size=(n, T, dX))
    obs = X[..., :dO] + 0.01 * rng.normal(size=(n, T, dO))
    imgs = rng.integers(0, 256, size=(n, T, size, size, 3), dtype=np.uint8)
    return X, obs, imgs


def test_linearize_equals_the_two_separate_passes():
    rng = np.random.default_rng(0)
    pol = make_visuomotor_policy(VisuomotorConfig(config_dim=4, action_dim=2, image_height=16, image_width=16,
                                                  conv_filters=(8, 4, 4)), seed=1)
    buf = PolicyPriorBuffer(GMMPriorConfig(max_clusters=2, min_samples_per_cluster=5, max_samples=5), seed=3)
    old = _data(rng, 3)
    buf.add(*old)
    X, obs, imgs = _data(rng, 4)  # 3 + 4 > max_samples: the buffer keeps the newest 5 rollouts
    buf.add(X, obs, imgs)
    assert buf.X.shape[0] == 5 and np.array_equal(buf.X[-4:], X)
    # The reference's passes run the batch shapes linearize runs (the buffer: 5 rollouts; the larger batch
    # below: its own 7), so each is the same float computation and the results are equal exactly. (A pass
    # over the 4 samples alone would run other kernel blockings: equal to float32 rounding only, and in
    # bfloat16 a flipped rounding of 2^-8 relative.)
    for precision in ("fp32", "bf16"):
        lin, mu = buf.linearize(pol, SimpleNamespace(X=X), obs, imgs, 1e-6, precision)
        ref_mu = pol.predict(buf.obs, buf.images, precision=precision)[0][-4:]  # the samples' rows, found by hand
        ref = fit_policy_linearization(X, ref_mu, pol.variance(), buf.prior(pol, precision), 1e-6)
        np.testing.assert_array_equal(mu, ref_mu)
        np.testing.assert_array_equal(lin.K, ref.K)
        np.testing.assert_array_equal(lin.k, ref.k)
        np.testing.assert_array_equal(lin.pol_covar, ref.pol_covar)
        # and they are the policy's fp32 means at the samples, from a pass of their own: within float32
        # rounding (about 1e-6 relative per op chain), or bfloat16's (2^-8 relative per rounding, a few
        # layers: 2 % of the output scale)
        fp32 = pol.predict(obs, imgs, precision="fp32")[0]
        if precision == "fp32":
            np.testing.assert_allclose(mu, fp32, rtol=1e-5, atol=1e-6)
        else:
            assert np.abs(mu - fp32).max() < 0.02 * np.abs(fp32).max()
    # A batch larger than the buffer keeps gets its own pass.
    X, obs, imgs = _data(rng, 7)
    buf.add(X, obs, imgs)
    lin, mu = buf.linearize(pol, SimpleNamespace(X=X), obs, imgs, 1e-6, "fp32")
    assert mu.shape == (7, 6, 2)
    np.testing.assert_array_equal(mu, pol.predict(obs, imgs, precision="fp32")[0])


def test_bf16_linearization_is_as_accurate_as_fp32():
    """The linearization from bf16 means against fp32 means on the same samples: gains and offsets agree to
    a small fraction of their scale, and the covariance (dominated by the policy's own variance) too."""
    rng = np.random.default_rng(1)
    pol = make_visuomotor_policy(VisuomotorConfig(config_dim=4, action_dim=2, image_height=32, image_width=32),
                                 seed=2)
    X, obs, imgs = _data(rng, 10, size=32)
    lins = {}
    for p in ("fp32", "bf16"):
        mu, _ = pol.predict(obs, imgs, precision=p)
        lins[p] = fit_policy_linearization(X, mu, pol.variance(), None, 1e-6)
    a, b = lins["fp32"], lins["bf16"]
    assert np.abs(a.k - b.k).max() < 5e-3 * max(np.abs(a.k).max(), 1e-2)
    assert np.abs(a.K - b.K).max() < 5e-2 * max(np.abs(a.K).max(), 1e-3)
    np.testing.assert_allclose(b.pol_covar, a.pol_covar, rtol=1e-3, atol=1e-4 * np.abs(a.pol_covar).max())
