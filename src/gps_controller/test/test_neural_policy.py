"""Visuomotor CNN, spatial softmax, MLP and the Gaussian policy wrapper."""

import numpy as np
import pytest
import torch

from gps_controller.policies import (
    GaussianPolicy,
    MLPConfig,
    SpatialSoftmax,
    VisuomotorConfig,
    count_parameters,
    make_mlp_policy,
    make_visuomotor_policy,
)

torch.set_num_threads(1)


def test_softmax_points_in_unit_square():
    sm = SpatialSoftmax(9, 13, temperature=0.3)
    feats = torch.randn(4, 5, 9, 13, generator=torch.Generator().manual_seed(0)) * 50
    pts = sm(feats)
    assert pts.shape == (4, 5, 2)
    assert bool((pts.abs() <= 1.0 + 1e-6).all())


@pytest.mark.parametrize(("row", "col"), [(2, 3), (10, 14), (0, 15), (15, 0)])
def test_softmax_tracks_bright_spot(row, col):
    h = w = 16
    img = torch.zeros(1, 1, h, w)
    img[0, 0, row, col] = 30.0  # a bright spot; low temperature makes the expectation sharp
    pts = SpatialSoftmax(h, w, temperature=1.0)(img)[0, 0]
    x_expect = -1 + 2 * col / (w - 1)
    y_expect = -1 + 2 * row / (h - 1)
    assert pts[0].item() == pytest.approx(x_expect, abs=1e-3)
    assert pts[1].item() == pytest.approx(y_expect, abs=1e-3)


def test_softmax_point_moves_monotonically_with_spot():
    sm = SpatialSoftmax(12, 12)
    xs = []
    for col in range(12):
        img = torch.zeros(1, 1, 12, 12)
        img[0, 0, 5, col] = 5.0
        xs.append(sm(img)[0, 0, 0].item())
    assert all(b > a for a, b in zip(xs[:-1], xs[1:], strict=True))


def test_softmax_gradcheck():
    sm = SpatialSoftmax(4, 5, temperature=0.7).double()
    feats = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                        requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: sm(f), (feats,), eps=1e-6, atol=1e-5)

    # and through the learned temperature
    def as_fn_of_temperature(log_t):
        sm.log_temperature.data.copy_(log_t.detach())
        logits = feats.detach().reshape(2, 3, 20) / log_t.exp()
        probs = torch.softmax(logits, -1).reshape(2, 3, 4, 5)
        return (probs.sum(2) * sm.pos_x.double()).sum(-1)

    log_t = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(as_fn_of_temperature, (log_t,))
    out = sm(feats.detach()).sum()
    out.backward()
    assert sm.log_temperature.grad is not None and torch.isfinite(sm.log_temperature.grad)


def test_paper_parameter_count():
    # conv 3*49*64+64 = 9,472; 64*25*32+32 = 51,232; 32*25*32+32 = 25,632  (86,336 conv)
    # fc (64+39)*40+40 = 4,160; 40*40+40 = 1,640; 40*7+7 = 287            (6,087 fc)
    # = 92,423 weights and biases, + 1 learned softmax temperature.
    cfg = VisuomotorConfig(config_dim=39, action_dim=7, image_height=240, image_width=240)
    pol = make_visuomotor_policy(cfg)
    assert count_parameters(pol, include_temperature=False) == 92_423
    assert count_parameters(pol) == 92_424 == cfg.num_parameters()
    assert cfg.feature_map_size() == (120, 120)
    # independent of the image size
    assert VisuomotorConfig(config_dim=39, action_dim=7).num_parameters() == 92_424


def test_cnn_forward_shapes_and_features():
    cfg = VisuomotorConfig(config_dim=6, action_dim=3, image_height=24, image_width=32,
                           conv_filters=(8, 4, 4))
    pol = make_visuomotor_policy(cfg, seed=3)
    imgs = np.random.default_rng(0).integers(0, 256, size=(2, 5, 24, 32, 3), dtype=np.uint8)
    obs = np.random.default_rng(1).normal(size=(2, 5, 6))
    mean, pts = pol.predict(obs, imgs, batch_size=3)
    assert mean.shape == (2, 5, 3) and pts.shape == (2, 5, 4, 2)
    assert np.all(np.abs(pts) <= 1.0)
    u, fp = pol.act(obs[1, 2], imgs[1, 2], return_features=True)
    # One observation against a batch of 3: other kernel blockings, so equal to float32 rounding (about
    # 1e-6 relative per op chain; a few conv and fc layers and a softmax -> 1e-5), not bit for bit.
    np.testing.assert_allclose(u, mean[1, 2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fp, pts[1, 2], rtol=1e-5, atol=1e-6)
    assert u.dtype == np.float64


def test_seeded_init_is_reproducible():
    cfg = VisuomotorConfig(config_dim=4, action_dim=2, image_height=16, image_width=16, conv_filters=(4, 4, 4))
    a, b = make_visuomotor_policy(cfg, seed=5), make_visuomotor_policy(cfg, seed=5)
    c = make_visuomotor_policy(cfg, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_act_noise_normalization_and_validation():
    pol = make_mlp_policy(MLPConfig(obs_dim=3, action_dim=2, hidden=(8,)), seed=0, init_var=0.25)
    obs = np.array([1.0, -2.0, 0.5])
    mean = pol.act(obs)
    noisy = pol.act(obs, noise=np.array([1.0, -2.0]))
    np.testing.assert_allclose(noisy - mean, [0.5, -1.0], atol=1e-6)
    # normalization is applied: shifting the bias by the data mean changes the output
    pol.set_normalization(mean=obs, std=np.ones(3))
    np.testing.assert_allclose(pol.act(obs), pol.act(np.zeros(3) * 0 + obs), atol=0)
    with torch.no_grad():
        ref = pol.net(torch.zeros(1, 3))[0][0].double().numpy()
    np.testing.assert_allclose(pol.act(obs), ref, atol=1e-6)
    assert int(pol.norm_initialized) == 1
    with pytest.raises(ValueError, match="shape"):
        pol.act(np.zeros(4))
    with pytest.raises(ValueError, match="noise"):
        pol.act(obs, noise=np.zeros(3))


def test_cnn_requires_image_of_right_shape():
    cfg = VisuomotorConfig(config_dim=2, action_dim=1, image_height=16, image_width=16, conv_filters=(4, 4, 4))
    pol = make_visuomotor_policy(cfg)
    with pytest.raises(ValueError, match="needs an image"):
        pol.act(np.zeros(2))
    with pytest.raises(ValueError, match="image must have shape"):
        pol.act(np.zeros(2), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        pol.act(np.zeros(2), np.zeros((16, 16, 3), np.float32))


def test_architecture_round_trip():
    cfg = VisuomotorConfig(config_dim=5, action_dim=2, image_height=20, image_width=20, fc_hidden=(7,))
    pol = make_visuomotor_policy(cfg)
    again = GaussianPolicy.from_architecture(pol.architecture())
    assert again.net.config == cfg
    with pytest.raises(ValueError, match="unknown policy type"):
        GaussianPolicy.from_architecture({"type": "rnn", "net": {}})


# ----- reduced-precision inference (issue 16) ----------------------------------------------------

def test_resolve_precision_rules(monkeypatch):
    from gps_controller.policies import neural

    assert neural.resolve_precision("fp32") == "fp32"
    assert neural.resolve_precision("bf16") == "bf16"  # explicit: kept even where emulated
    assert neural.resolve_precision("auto", "cuda") == "bf16"
    for native in (True, False):
        monkeypatch.setattr(neural, "cpu_supports_bf16", lambda native=native: native)
        assert neural.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    with pytest.raises(ValueError, match="precision must be one of"):
        neural.resolve_precision("int4")


def test_cpu_bf16_detection_reads_the_flags(tmp_path, monkeypatch):
    from gps_controller.policies import neural

    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx2 avx512f avx512bw\n")
    assert neural._cpuinfo_flags(str(info)) == {"fpu", "avx2", "avx512f", "avx512bw"}
    assert neural._cpuinfo_flags(str(tmp_path / "missing")) == set()
    # Without torch's cpuinfo the kernel's flags decide; AVX-512 alone is not native bf16.
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {})
    for flags, native in (("avx2 avx512f avx512bw", False), ("avx512f avx512_bf16", True), ("amx_bf16", True)):
        monkeypatch.setattr(neural, "_cpuinfo_flags", lambda flags=flags: set(flags.split()))
        neural.cpu_supports_bf16.cache_clear()
        assert neural.cpu_supports_bf16() is native
    neural.cpu_supports_bf16.cache_clear()


def test_set_inference_precision_api():
    cnn = make_visuomotor_policy(VisuomotorConfig(config_dim=3, action_dim=2, image_height=16, image_width=16,
                                                  conv_filters=(4, 4, 4)))
    mlp = make_mlp_policy(MLPConfig(obs_dim=3, action_dim=2))
    assert cnn.inference_precision == "fp32"  # the default
    assert cnn.set_inference_precision("bf16") == "bf16"
    assert mlp.set_inference_precision("auto") == "fp32"  # nothing to gain for a small MLP
    assert mlp.set_inference_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        cnn.set_inference_precision("fp8")
    assert cnn.inference_precision == "bf16"  # a rejected value changes nothing
    # not part of the saved state
    assert not any("precision" in k for k in cnn.state_dict())


@pytest.mark.parametrize("size", [64, 240])
def test_bf16_actions_close_to_fp32(size):
    """bf16 autocast against fp32 on a fixed seeded batch at 64x64 and the paper's 240x240: actions within
    3e-3 (outputs of scale ~0.15, about 2 %) and feature points within 2e-3 (a 120x120 map's pixel pitch is
    1.7e-2); act and predict agree with each other in bf16 too."""
    pol = make_visuomotor_policy(VisuomotorConfig(config_dim=32, action_dim=7, image_height=size,
                                                  image_width=size), seed=0)
    rng = np.random.default_rng(0)
    n = 8
    imgs = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    obs = rng.normal(size=(n, 32))
    pol.fit_normalization(rng.normal(size=(50, 32)))
    ref_u, ref_p = pol.predict(obs, imgs)
    assert pol.set_inference_precision("bf16") == "bf16"
    u, p = pol.predict(obs, imgs)
    assert u.dtype == np.float64 and p.dtype == np.float64
    assert np.max(np.abs(ref_u)) > 0.05  # a non-trivial output scale
    assert np.max(np.abs(u - ref_u)) < 3e-3
    assert np.max(np.abs(p - ref_p)) < 2e-3
    assert not np.array_equal(u, ref_u)  # it really ran in reduced precision
    u0, p0 = pol.act(obs[0], imgs[0], return_features=True)
    # act is predict on a batch of one: the same shapes run the same kernels, so bit-equal. Against the
    # batch of 8 (other blockings) a bfloat16 rounding (2^-8 relative) may flip, so act is held to the
    # batch's own bound against fp32 instead.
    one_u, one_p = pol.predict(obs[:1], imgs[:1])
    np.testing.assert_array_equal(u0, one_u[0])
    np.testing.assert_array_equal(p0, one_p[0])
    assert np.max(np.abs(u0 - ref_u[0])) < 3e-3 and np.max(np.abs(p0 - ref_p[0])) < 2e-3
    assert not np.array_equal(u0, ref_u[0])


def test_fp32_act_is_predict_on_a_batch_of_one():
    """act and predict feed the CNN the same layout ((C, H, W)-ordered pixels in fp32), so a tick equals a
    batch of one bit for bit: the controller's torques are the trainer's linearization means."""
    cfg = VisuomotorConfig(config_dim=32, action_dim=7, image_height=48, image_width=48, conv_filters=(8, 8, 8))
    pol = make_visuomotor_policy(cfg, seed=2)
    assert pol.set_inference_precision("fp32") == "fp32"
    rng = np.random.default_rng(4)
    imgs = rng.integers(0, 256, size=(3, 48, 48, 3), dtype=np.uint8)
    obs = rng.normal(size=(3, 32))
    for i in range(3):
        u, p = pol.act(obs[i], imgs[i], return_features=True)
        one_u, one_p = pol.predict(obs[i:i + 1], imgs[i:i + 1])
        np.testing.assert_array_equal(u, one_u[0])
        np.testing.assert_array_equal(p, one_p[0])
    assert pol._inference_images(imgs[0], "fp32").is_contiguous()
