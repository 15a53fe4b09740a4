"""Issue 24's training-side levers, off by default: appearance randomization of pose pretraining's random scenes
(scene_lighting / scene_camera / scene_texture) and image augmentation of the S-step (augment_shift /
augment_color): bit-identical when off, seeded, within their bounds, and the S-step's loss still measured on
the samples' own images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gps_controller.policies import VisuomotorConfig, make_visuomotor_policy
from gps_controller.policies.neural import images_to_tensor
from gps_sim import ArmSim
from gps_trainer import augment, pose_pretraining
from gps_trainer.config import load_experiment
from gps_trainer.config_schema import ConfigError
from gps_trainer.policy_opt import PolicyOptConfig, augment_seed, train_policy
from gps_trainer.pose_pretraining import (
    PosePretrainConfig,
    collect_pose_dataset,
    collect_pose_images,
    target_box_for,
)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[3]
TASK = "shape_sorting_grid_dr"
# Target positions pose pretraining drew before the appearance keys existed (commit e58db08): TASK, set train,
# default_rng(3), joint noise 0.15, every image a random scene. The second is drawn after the first image's
# random scene, so a random number consumed there by a key that is off would move it.
BEFORE_POSE = np.array([[0.6336442878523036, -0.31589839402357894, 0.51],
                        [0.5499140552826132, -0.16612715242926823, 0.51]])


@pytest.fixture(scope="module")
def sim():
    s = ArmSim(TASK, image_size=32, render_images=True)
    yield s
    s.close()


def _collect(sim, appearance):
    box = target_box_for(sim.task, "train", 0.05)
    return collect_pose_images(sim, 2, np.random.default_rng(3), box, "train", 0.15, 1.0, appearance=appearance)


def test_pose_pretraining_scene_keys_off_as_before_and_on_perturb_the_random_scenes(sim):
    img0, pos0 = _collect(sim, None)
    img1, pos1 = _collect(sim, {"lighting": 0, "camera": 0, "texture": 0})
    np.testing.assert_allclose(pos0, BEFORE_POSE, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(img0, img1)
    np.testing.assert_array_equal(pos0, pos1)
    img2, pos2 = _collect(sim, {"lighting": 3, "texture": 2})
    assert set(sim.appearance_draw) == {"lighting", "texture"}
    np.testing.assert_array_equal(pos2[0], pos0[0])  # (drawn before the first scene)
    assert np.abs(img2[0].astype(float) - img0[0].astype(float)).mean() > 1.0


def test_pose_pretraining_config_passes_the_keys_and_checks_them(sim):
    cfg = PosePretrainConfig.from_dict({"task": TASK, "image_size": 32, "num_train": 1, "num_test": 0,
                                        "scene_randomization": 1.0, "scene_camera": 2})
    collect_pose_dataset(cfg, sim)
    assert set(sim.appearance_draw) == {"camera"}
    with pytest.raises(ConfigError, match=r"^scene_lighting: must be <= 3; got 4"):
        PosePretrainConfig.from_dict({"scene_randomization": 1.0, "scene_lighting": 4})
    with pytest.raises(ConfigError, match=r"^scene_texture: perturbs the random scenes only: needs "
                                          r"scene_randomization > 0; got 1"):
        PosePretrainConfig.from_dict({"scene_texture": 1})


# ----------------------------------------------------------------------------------------------- S-step
def _data(m=24, side=12, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (m, side, side, 3), dtype=np.uint8)
    images[:, side // 3: side // 2, side // 3: side // 2] = 255  # a bright patch: shifts show
    return rng.normal(size=(m, 4)), images, rng.normal(size=(m, 2)), np.tile(np.eye(2), (m, 1, 1))


def _policy(side=12):
    cfg = VisuomotorConfig(config_dim=4, action_dim=2, image_height=side, image_width=side, conv_filters=(4, 4),
                           conv_kernels=(3, 3), conv_strides=(1, 1), fc_hidden=(8,))
    return make_visuomotor_policy(cfg, seed=0)


def _run(**kw):
    """An S-step on a tiny CNN; returns (policy, diagnostics, [(inference?, images seen by a forward pass)])."""
    policy = _policy()
    seen: list[tuple[bool, torch.Tensor]] = []
    policy.register_forward_pre_hook(lambda mod, args: seen.append((torch.is_inference_mode_enabled(),
                                                                     args[1].detach().clone())))
    base = {"device": "cpu", "iterations": 6, "batch_size": 8, "log_every": 2, "inference_precision": "fp32",
            "learning_rate": 0.01, **kw}
    diag = train_policy(policy, *_data(), PolicyOptConfig.from_dict(base))
    return policy, diag, seen


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_s_step_augmentation_off_is_bit_identical():
    p0, d0, s0 = _run()
    p1, d1, s1 = _run(augment_shift=0, augment_color=0.0)
    assert _same_weights(p0, p1)
    assert (d0.loss_before, d0.loss_after, d0.loss_history) == (d1.loss_before, d1.loss_after, d1.loss_history)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(s0, s1, strict=True))


def _training_batches(seen):
    return [im for inference, im in seen if not inference]


def test_s_step_shift_moves_each_training_image_by_at_most_the_bound():
    _, _, plain = _run()
    _, _, shifted = _run(augment_shift=2)
    a, b = _training_batches(plain), _training_batches(shifted)
    assert len(a) == len(b) == 6  # the same minibatches: the augmentation has a generator of its own
    moved = 0
    for xa, xb in zip(a, b, strict=True):
        for img, aug in zip(xa, xb, strict=True):
            padded = torch.nn.functional.pad(img[None], (2, 2, 2, 2), mode="replicate")[0]
            shifts = [(dy, dx) for dy in range(5) for dx in range(5)
                      if torch.equal(padded[:, dy:dy + 12, dx:dx + 12], aug)]
            assert shifts, "not a shift of at most 2 pixels of the sample's image"
            moved += (2, 2) not in shifts
    assert moved > 0.5 * 6 * 8  # most images moved (1 in 25 draws no shift)


def test_s_step_colour_jitter_stays_within_its_bound():
    c = 0.2
    _, _, plain = _run()
    _, _, jittered = _run(augment_color=c)
    for xa, xb in zip(_training_batches(plain), _training_batches(jittered), strict=True):
        assert xb.min() >= 0 and xb.max() <= 1
        # brightness x U(1 - c, 1 + c), offset U(-c/2, c/2), clamped to [0, 1]
        assert torch.all((xb - xa).abs() <= c * xa + c / 2 + 1e-6)
        assert (xb - xa).abs().amax(dim=(1, 2, 3)).min() > 0  # every image jittered


def test_s_step_loss_is_evaluated_on_the_samples_own_images():
    obs, images, u, prec = _data()
    plain_policy, plain, _ = _run()
    policy, diag, seen = _run(augment_shift=2, augment_color=0.2)
    originals = images_to_tensor(torch.as_tensor(images))
    evaluated = [im for inference, im in seen if inference]
    assert len(evaluated) == 2  # before and after, all samples in one chunk each
    assert all(torch.equal(im, originals) for im in evaluated)
    assert diag.loss_before == plain.loss_before  # (the same initial weights)
    assert not _same_weights(policy, plain_policy)  # while the training saw other images
    # the loss after, recomputed on the un-augmented images with the trained policy
    with torch.inference_mode():
        mean, _ = policy(torch.as_tensor(obs, dtype=torch.float32), originals)
        d = mean.double() - torch.as_tensor(u)
        want = float(torch.einsum("bi,bij,bj->b", d, torch.as_tensor(prec), d).mean())
    assert diag.loss_after == pytest.approx(want, rel=1e-5)


def test_s_step_head_phase_is_not_augmented_and_runs_repeat():
    _, plain, _ = _run(fc_only_iterations=4)
    p1, aug, _ = _run(fc_only_iterations=4, augment_shift=3, augment_color=0.3)
    assert aug.fc_only_loss_history == plain.fc_only_loss_history  # cached feature points of the own images
    assert aug.loss_history != plain.loss_history
    p2, again, _ = _run(fc_only_iterations=4, augment_shift=3, augment_color=0.3)
    assert _same_weights(p1, p2) and again.loss_history == aug.loss_history
    p3, _, _ = _run(fc_only_iterations=4, augment_shift=3, augment_color=0.3, seed=1)
    assert not _same_weights(p1, p3)
    assert augment_seed(0) != 0 and augment_seed(0) != augment_seed(1)
    assert pose_pretraining.augment_images is augment.augment_images  # one implementation


def test_s_step_augmentation_config_checks():
    with pytest.raises(ConfigError, match=r"^augment_shift: must be <= 16; got 17"):
        PolicyOptConfig.from_dict({"augment_shift": 17})
    with pytest.raises(ConfigError, match=r"^augment_shift: expected an integer; got 1.5"):
        PolicyOptConfig.from_dict({"augment_shift": 1.5})
    with pytest.raises(ConfigError, match=r"^augment_color: must be <= 0.5; got 0.6"):
        PolicyOptConfig.from_dict({"augment_color": 0.6})
    with pytest.raises(ValueError, match=r"augment_color must be >= 0.0"):
        PolicyOptConfig(augment_color=-0.1)
    base = ROOT / "config" / "experiments" / "reach_mdgps.yaml"  # an MLP policy: it sees no images
    with pytest.raises(ConfigError, match=r"algorithm.policy_opt.augment_shift: augments the S-step's images: "
                                          r"needs a visuomotor_cnn policy; got 2"):
        load_experiment(base, {"algorithm.policy_opt.augment_shift": 2})
    visual = ROOT / "config" / "experiments" / "reach_mdgps_visual.yaml"
    cfg = load_experiment(visual, {"algorithm.policy_opt.augment_shift": 2, "algorithm.policy_opt.augment_color": 0.1})
    opt = cfg.algorithm.policy_opt_config()
    assert (opt.augment_shift, opt.augment_color) == (2, 0.1)
    assert (PolicyOptConfig().augment_shift, PolicyOptConfig().augment_color) == (0, 0.0)
