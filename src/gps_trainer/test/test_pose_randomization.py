"""Domain randomization and image augmentation for pose pretraining (issue 12, section 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gps_sim import ArmSim
from gps_trainer.pose_pretraining import (
    PosePretrainConfig,
    augment_images,
    collect_pose_images,
    lr_at,
    pose_target_box,
)


def test_augment_shift_moves_content_by_whole_pixels_and_is_seeded():
    img = torch.zeros(1, 3, 8, 8)
    img[0, :, 3, 4] = 1.0  # one bright pixel
    outs = [augment_images(img.repeat(20, 1, 1, 1), 2, 0.0, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    for o in outs[0]:
        ys, xs = torch.nonzero(o[0], as_tuple=True)
        assert len(ys) == 1 and abs(int(ys[0]) - 3) <= 2 and abs(int(xs[0]) - 4) <= 2
    assert len({tuple(torch.nonzero(o[0])[0].tolist()) for o in outs[0]}) > 3  # several shifts drawn


def test_augment_color_stays_in_range_and_bounded():
    img = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = augment_images(img, 0, 0.2, torch.Generator().manual_seed(1))
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
    assert 0 < (out - img).abs().max() <= 0.2 * 1 + 0.1 + 1e-6
    assert torch.equal(augment_images(img, 0, 0.0, torch.Generator()), img)


def test_config_range_checks():
    for bad in ({"scene_randomization": 1.5}, {"augment_shift": -1}, {"augment_color": 0.9},
                {"lr_schedule": "step"}):
        with pytest.raises(Exception, match=next(iter(bad))):
            PosePretrainConfig.from_dict(bad)


def test_cosine_schedule_decays_from_the_base_rate_towards_zero():
    rates = [lr_at(k, 100, 1e-3, "cosine") for k in range(1, 101)]
    assert rates[0] == pytest.approx(1e-3) and rates[50] == pytest.approx(0.5e-3)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False)) and 0 < rates[-1] < 1e-6
    assert lr_at(37, 100, 1e-3, "constant") == 1e-3


def test_warmup_ramps_the_rate_linearly_then_leaves_the_schedule_alone():
    ramp = [lr_at(k, 100, 3e-3, "constant", warmup_steps=10) for k in range(1, 13)]
    assert ramp[:10] == pytest.approx([3e-3 * k / 10 for k in range(1, 11)])
    assert ramp[10:] == [3e-3, 3e-3]
    # with cosine: the product of both, equal to the plain cosine once the ramp is over
    assert lr_at(5, 100, 1e-3, "cosine", 10) == pytest.approx(0.5 * lr_at(5, 100, 1e-3, "cosine"))
    assert lr_at(50, 100, 1e-3, "cosine", 10) == lr_at(50, 100, 1e-3, "cosine")
    with pytest.raises(Exception, match="warmup_steps"):
        PosePretrainConfig.from_dict({"warmup_steps": -1})


def test_warmup_rates_reach_the_optimizer():
    """The rates Adam used, read back per step from a short real training run."""
    import torch

    from gps_controller.policies.neural import VisuomotorConfig
    from gps_trainer.pose_pretraining import PoseRegressor, train_pose_regressor

    cfg = PosePretrainConfig.from_dict({"iterations": 6, "batch_size": 2, "learning_rate": 1e-3, "warmup_steps": 4,
                                        "log_every": 100, "image_size": 16})
    model = PoseRegressor(VisuomotorConfig(image_height=16, image_width=16, conv_filters=(4, 4, 4),
                                           conv_kernels=(3, 3, 3), conv_strides=(1, 1, 1), fc_hidden=(8,),
                                           config_dim=1, action_dim=1))
    seen = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    images = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    positions = np.random.default_rng(1).normal(size=(4, 3))
    torch.optim.Adam.step = spy
    try:
        train_pose_regressor(model, images, positions, cfg)
    finally:
        torch.optim.Adam.step = step
    assert seen == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def _small_regressor(dead=((0, 1), (0, 4), (1, 0))):
    """A trunk whose hidden ReLU channels are all alive on images in [0, 1] (positive weights and biases)
    except the (layer, channel) pairs in ``dead`` (negative weights, bias -10)."""
    from gps_controller.policies.neural import VisuomotorConfig
    from gps_trainer.pose_pretraining import PoseRegressor

    torch.manual_seed(0)
    model = PoseRegressor(VisuomotorConfig(image_height=16, image_width=16, conv_filters=(6, 5, 4),
                                           conv_kernels=(3, 3, 3), conv_strides=(1, 1, 1), fc_hidden=(8,),
                                           config_dim=1, action_dim=1))
    with torch.no_grad():
        for conv in list(model.net.convs)[:-1]:
            conv.weight.abs_()
            conv.bias.fill_(0.1)
        for layer, ch in dead:
            model.net.convs[layer].weight[ch] *= -1
            model.net.convs[layer].bias[ch] = -10.0
    return model


def test_recycling_revives_dead_channels_without_changing_the_output():
    from gps_trainer.pose_pretraining import active_channels, recycle_dead_channels

    model = _small_regressor()
    convs = model.net.convs
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert active_channels(model.net, images) == [4, 4]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(images)[0].sum().backward()
    opt.step()  # moments exist, and the dead channels' entries are zero in them (no gradient)
    opt.state[convs[0].weight]["exp_avg"][1] = 7.0  # stale moments of a dead channel must not survive
    before = model(images)[0].detach()
    counts = recycle_dead_channels(model.net, images, opt, torch.Generator().manual_seed(3))
    assert counts == [2, 1]
    assert active_channels(model.net, images) == [6, 5]
    # the next layer reads nothing from a recycled channel yet, so the function is unchanged
    # (layer 2's channel 0, recycled too, has new weights from every layer-1 channel)
    assert torch.all(convs[1].weight[1:, [1, 4]] == 0) and torch.all(convs[2].weight[:, 0] == 0)
    torch.testing.assert_close(model(images)[0].detach(), before, rtol=0, atol=0)
    assert torch.all(opt.state[convs[0].weight]["exp_avg"][1] == 0)
    sq = opt.state[convs[1].weight]["exp_avg_sq"]
    assert torch.all(sq[1:, 4] == sq[1, 4, 0, 0]) and sq[1, 4, 0, 0] > 0  # the mean, not zero (row 0: recycled)
    # drawn from the generator: the same seed gives the same new weights
    again = _small_regressor()
    recycle_dead_channels(again.net, images, None, torch.Generator().manual_seed(3))
    for layer, rows in ((0, [1, 4]), (1, [0])):  # (the other entries differ by the Adam step above)
        assert torch.equal(again.net.convs[layer].weight[rows], convs[layer].weight[rows])
        assert torch.equal(again.net.convs[layer].bias[rows], convs[layer].bias[rows])


def test_recycling_in_training_is_off_by_default_and_reported():
    from gps_trainer.pose_pretraining import train_pose_regressor

    images = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    positions = np.random.default_rng(1).normal(size=(6, 3))
    base = {"iterations": 4, "batch_size": 3, "learning_rate": 1e-3, "log_every": 100, "image_size": 16}
    results = []
    for extra in ({}, {"recycle_every": 2}):
        model = _small_regressor(dead=((0, 2),))
        results.append(train_pose_regressor(model, images, positions, PosePretrainConfig.from_dict({**base, **extra})))
    assert results[0]["recycled_channels"] == []
    assert results[1]["recycled_channels"][0] == {"step": 2, "channels": [1, 0]}
    with pytest.raises(Exception, match="recycle_every"):
        PosePretrainConfig.from_dict({"recycle_every": -1})


def test_scene_randomized_images_follow_the_visual_rules():
    sim = ArmSim("shape_sorting", image_size=32, render_images=True)
    box = pose_target_box(PosePretrainConfig.from_dict({"task": "shape_sorting"}), sim.task)
    plain, pos_a = collect_pose_images(sim, 6, np.random.default_rng(0), box)
    mixed, pos_b = collect_pose_images(sim, 6, np.random.default_rng(0), box, scene_fraction=1.0)
    assert plain.shape == mixed.shape and np.mean(np.any(plain != mixed, axis=-1)) > 0.2
    again, _ = collect_pose_images(sim, 6, np.random.default_rng(0), box, scene_fraction=1.0)
    np.testing.assert_array_equal(mixed, again)
    # randomize_scene: around the current target, at least the visual set's gap away, target unchanged
    spec = sim.task.condition_list("visual_validation")[0].random_scene
    sim.reset(0)
    target_rgba = sim.model.geom_rgba[sim._geom_ids("target")].copy()
    for seed in range(10):
        for d in sim.randomize_scene(np.random.default_rng(seed), spec):
            gap = np.linalg.norm(np.subtract(d["position"][:2], sim.target_pose()[:2])) - d["radius"]
            assert gap >= spec["target_radius"] + spec["min_gap"] - 1e-9
        np.testing.assert_array_equal(sim.model.geom_rgba[sim._geom_ids("target")], target_rgba)
    sim.close()
