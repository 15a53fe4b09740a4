"""S-step: precision-weighted regression, covariance update, normalization, determinism."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from gps_controller.policies import (
    MLPConfig,
    VisuomotorConfig,
    make_mlp_policy,
    make_policy,
    make_visuomotor_policy,
)
from gps_trainer.policy_opt import PolicyOptConfig, covariance_update, loss_eval_seed, train_policy

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[3]


def _cfg(**kw):
    base = {"device": "cpu", "weight_decay": 0.0, "log_every": 100, "learning_rate": 0.02, "iterations": 600}
    base.update(kw)
    return PolicyOptConfig(**base)


def _linear_data(seed=0, m=400):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(m, 3)) * np.array([2.0, 0.5, 1.0]) + np.array([1.0, -1.0, 0.0])
    return rng, obs


def test_recovers_known_linear_controller():
    rng, obs = _linear_data()
    K = np.array([[1.0, -2.0, 0.5], [0.3, 0.0, -1.5]])
    k = np.array([0.2, -0.4])
    u = obs @ K.T + k
    pol = make_mlp_policy(MLPConfig(obs_dim=3, action_dim=2, hidden=()), seed=0)
    prec = np.tile(np.eye(2) * 4.0, (400, 1, 1))
    diag = train_policy(pol, obs.reshape(20, 20, 3), None, u.reshape(20, 20, 2), prec.reshape(20, 20, 2, 2),
                        _cfg(iterations=800, batch_size=100))
    test = rng.normal(size=(50, 3))
    pred, _ = pol.predict(test)
    np.testing.assert_allclose(pred, test @ K.T + k, atol=2e-2)
    assert diag.loss_after < 1e-3 * diag.loss_before
    np.testing.assert_allclose(diag.pol_var, [0.25, 0.25])
    np.testing.assert_allclose(pol.variance(), [0.25, 0.25], rtol=1e-6)
    assert diag.normalization_updated and diag.num_samples == 400


def test_precision_weighting_matters():
    # Two controllers disagree; each is confident in a different action dimension. The weighted fit
    # follows each controller where it is confident; an unweighted fit averages them.
    rng, obs = _linear_data(1, 600)
    K1 = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    K2 = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    half = 300
    u = np.concatenate([obs[:half] @ K1.T, obs[half:] @ K2.T])
    obs_all = np.concatenate([obs[:half], obs[half:]])
    # the same observations for both controllers, so only the precisions can break the tie
    obs_all[half:] = obs_all[:half]
    u[half:] = obs_all[half:] @ K2.T
    p1 = np.diag([100.0, 0.01])
    p2 = np.diag([0.01, 100.0])
    prec = np.concatenate([np.tile(p1, (half, 1, 1)), np.tile(p2, (half, 1, 1))])
    pol = make_mlp_policy(MLPConfig(obs_dim=3, action_dim=2, hidden=()), seed=0)
    conf = _cfg(iterations=800, batch_size=100)
    train_policy(pol, obs_all, None, u, prec, conf)
    test = rng.normal(size=(50, 3))
    pred, _ = pol.predict(test)
    want = np.stack([(test @ K1.T)[:, 0], (test @ K2.T)[:, 1]], axis=1)
    np.testing.assert_allclose(pred, want, atol=0.1)

    flat = make_mlp_policy(MLPConfig(obs_dim=3, action_dim=2, hidden=()), seed=0)
    train_policy(flat, obs_all, None, u, np.ones((2 * half, 2)), conf)  # diagonal form
    pred_flat, _ = flat.predict(test)
    avg = 0.5 * (test @ K1.T + test @ K2.T)
    np.testing.assert_allclose(pred_flat, avg, atol=0.1)
    assert np.abs(pred_flat - want).max() > 1.0


def test_full_precision_and_diagonal_agree_and_covariance():
    prec = np.array([[[2.0, 0.5], [0.5, 1.0]], [[4.0, -0.5], [-0.5, 3.0]]])
    np.testing.assert_allclose(covariance_update(prec), [1 / 3.0, 1 / 2.0])
    np.testing.assert_allclose(covariance_update(prec, ent_reg=0.5), [1 / 4.0, 1 / 3.0])
    # the bounds clip each entry: [1/3, 1/2] with a floor 0.4 -> [0.4, 0.5]; with a cap 0.4 -> [1/3, 0.4]
    np.testing.assert_allclose(covariance_update(prec, min_variance=0.4), [0.4, 0.5])
    np.testing.assert_allclose(covariance_update(prec, max_variance=0.4), [1 / 3.0, 0.4])
    np.testing.assert_allclose(covariance_update(prec, min_variance=0.4, max_variance=0.45), [0.4, 0.45])


def test_variance_bounds_reach_the_trained_policy_and_are_validated():
    """min_variance / max_variance set the S-step's policy variance (the closed form here is 1/3, 1/2)."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(2, 5, 3))
    u = rng.normal(size=(2, 5, 2))
    prec = np.broadcast_to(np.diag([3.0, 2.0]), (2, 5, 2, 2)).copy()
    for lo, hi, want in [(0.0, 0.0, [1 / 3.0, 0.5]), (0.45, 0.0, [0.45, 0.5]), (0.0, 0.4, [1 / 3.0, 0.4])]:
        policy = make_mlp_policy(MLPConfig(obs_dim=3, action_dim=2, hidden=(8,)), seed=0)
        train_policy(policy, obs, None, u, prec, PolicyOptConfig(iterations=2, min_variance=lo, max_variance=hi))
        np.testing.assert_allclose(policy.variance(), want, rtol=1e-6)
    with pytest.raises(ValueError, match="min_variance"):
        PolicyOptConfig(min_variance=0.5, max_variance=0.1)
    with pytest.raises(ValueError, match="min_variance"):
        PolicyOptConfig(min_variance=-1.0)


def _small_visual(seed=0):
    cfg = VisuomotorConfig(config_dim=4, action_dim=2, image_height=16, image_width=16,
                           conv_filters=(8, 4, 4), fc_hidden=(16, 16))
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(4, 10, 16, 16, 3), dtype=np.uint8)
    obs = rng.normal(size=(4, 10, 4))
    u = rng.normal(size=(4, 10, 2))
    prec = np.tile(np.eye(2), (4, 10, 1, 1))
    return cfg, imgs, obs, u, prec


def test_train_policy_is_deterministic_with_seed():
    cfg, imgs, obs, u, prec = _small_visual()
    conf = _cfg(iterations=12, fc_only_iterations=5, log_every=4, learning_rate=1e-3, weight_decay=0.005)
    runs = []
    for s in (3, 3, 4):
        pol = make_visuomotor_policy(cfg, seed=0)
        d = train_policy(pol, obs, imgs, u, prec, conf, seed=s)
        runs.append((pol.state_dict(), d))
    (a, da), (b, db), (c, _) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert da.loss_history == db.loss_history and da.loss_after == db.loss_after
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert len(da.fc_only_loss_history) == 2 and da.fc_only_iterations == 5


def test_loss_before_is_the_same_with_and_without_the_head_phase():
    # With a head phase the loss before the S-step comes from the head phase's feature points (one CNN pass
    # instead of two); it is the same quantity as the full network's loss on every sample.
    cfg, imgs, obs, u, prec = _small_visual()
    losses = []
    for fc_steps in (0, 3):
        pol = make_visuomotor_policy(cfg, seed=0)
        d = train_policy(pol, obs, imgs, u, prec, _cfg(iterations=1, fc_only_iterations=fc_steps, eval_batch_size=7))
        losses.append(d.loss_before)
    assert losses[0] > 0
    # fp32 sums over a few hundred terms, grouped differently: agreement to a few ulps of the sum
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_the_loss_is_evaluated_on_a_fixed_draw_of_samples_and_training_does_not_depend_on_it():
    """loss_eval_samples n < m: the loss before and after is the weighted loss on the n samples drawn from
    loss_eval_seed(seed) (the same n both times; with or without the head phase); the training itself (its
    minibatches, so its weights) is the same as when every sample is evaluated."""
    cfg, imgs, obs, u, prec = _small_visual()
    m, n = 40, 13
    idx = torch.randperm(m, generator=torch.Generator().manual_seed(loss_eval_seed(5)))[:n].sort().values.numpy()
    for fc_steps in (0, 3):
        pols, diags = [], []
        for n_eval in (0, n):
            pol = make_visuomotor_policy(cfg, seed=0)
            before = pol.state_dict()
            diags.append(train_policy(pol, obs, imgs, u, prec, _cfg(iterations=4, fc_only_iterations=fc_steps,
                                                                      loss_eval_samples=n_eval, eval_batch_size=5),
                                      seed=5))
            pols.append(pol)
        (full, sub), (p_full, p_sub) = diags, pols
        assert all(torch.equal(p_full.state_dict()[k], p_sub.state_dict()[k]) for k in before)
        assert full.loss_history == sub.loss_history

        def loss_on(pol, rows):  # the S-step's weighted loss, formed here from the policy's means
            mean, _ = pol.predict(obs.reshape(m, -1)[rows], imgs.reshape(m, 16, 16, 3)[rows])
            err = mean - u.reshape(m, -1)[rows]
            return float(np.mean(np.einsum("ni,nij,nj->n", err, prec.reshape(m, 2, 2)[rows], err)))

        assert sub.loss_after == pytest.approx(loss_on(p_sub, idx), rel=1e-4)
        assert full.loss_after == pytest.approx(loss_on(p_full, np.arange(m)), rel=1e-4)
        assert sub.loss_after != pytest.approx(full.loss_after, rel=1e-4)  # a subset, not every sample
    with pytest.raises(ValueError, match="loss_eval_samples"):
        PolicyOptConfig(loss_eval_samples=-1)


def test_the_loss_is_reported_per_group_of_samples():
    """groups (e.g. the condition): the loss before and after per group is the weighted loss on that group's
    evaluated samples, formed here from the policy's means; with and without the head phase, on a subset
    draw; a negative group is left out of every group, a group with no evaluated sample is None."""
    cfg, imgs, obs, u, prec = _small_visual()
    m = 40
    groups = np.repeat([0, -1, 2, 0], 10).reshape(4, 10)  # sample 1: no group; group 1: no sample
    prec = prec * np.linspace(0.5, 4.0, m).reshape(4, 10, 1, 1)  # groups differ in their losses

    def losses_of(pol, rows):
        mean, _ = pol.predict(obs.reshape(m, -1)[rows], imgs.reshape(m, 16, 16, 3)[rows])
        err = mean - u.reshape(m, -1)[rows]
        return np.einsum("ni,nij,nj->n", err, prec.reshape(m, 2, 2)[rows], err)

    for fc_steps, n_eval in ((0, 0), (3, 0), (3, 25)):
        before_pol = make_visuomotor_policy(cfg, seed=0)
        before_pol.fit_normalization(obs.reshape(m, -1), min_std=PolicyOptConfig().min_obs_std)  # as the S-step does first
        pol = make_visuomotor_policy(cfg, seed=0)
        d = train_policy(pol, obs, imgs, u, prec, _cfg(iterations=3, fc_only_iterations=fc_steps, eval_batch_size=7,
                                                       loss_eval_samples=n_eval), seed=5, groups=groups)
        rows = np.arange(m) if n_eval == 0 else torch.randperm(
            m, generator=torch.Generator().manual_seed(loss_eval_seed(5)))[:n_eval].sort().values.numpy()
        g = groups.reshape(-1)[rows]
        for per_group, policy in ((d.loss_before_per_group, before_pol), (d.loss_after_per_group, pol)):
            values = losses_of(policy, rows)
            assert len(per_group) == 3 and per_group[1] is None
            for k in (0, 2):
                assert per_group[k] == pytest.approx(values[g == k].mean(), rel=1e-4)
        assert d.loss_before_per_group[2] != pytest.approx(d.loss_before_per_group[0], rel=0.05)
    with pytest.raises(ValueError, match="groups"):
        train_policy(make_visuomotor_policy(cfg, seed=0), obs, imgs, u, prec, _cfg(iterations=1),
                     groups=np.zeros(7, dtype=int))
    d = train_policy(make_visuomotor_policy(cfg, seed=0), obs, imgs, u, prec, _cfg(iterations=1))
    assert d.loss_before_per_group == [] and d.loss_after_per_group == []


def test_a_persistent_optimizer_continues_adam_across_s_steps():
    """Known answer: with full-batch steps on the same data, two S-steps of n steps sharing Adam's state
    are one S-step of 2n steps (up to the summation order of a permuted batch); a new Adam each S-step is
    not (its bias-corrected first steps jump)."""
    rng, obs = _linear_data(m=60)
    u = obs @ rng.normal(size=(3, 2)) + 0.3
    prec = np.tile(np.eye(2), (60, 1, 1))
    conf = _cfg(iterations=25, batch_size=60, learning_rate=0.01)

    def run(calls, persistent):
        pol = make_mlp_policy(MLPConfig(obs_dim=3, action_dim=2, hidden=(8,)), seed=1)
        memory = {}
        c = dataclasses.replace(conf, persistent_optimizer=persistent, iterations=50 // calls)
        for i in range(calls):
            train_policy(pol, obs, None, u, prec, c, seed=i, optimizer_memory=memory)
        return pol, memory

    one, memory = run(1, True)
    two, memory2 = run(2, True)
    fresh, unused = run(2, False)
    assert unused == {}
    assert memory2["0.step"] == 50 and memory["0.step"] == 50
    flat = lambda p: torch.cat([t.flatten() for t in p.parameters()]).detach().numpy()  # noqa: E731
    # float32 Adam over 50 steps from gradients that differ in their last bits: agreement to ~1e-5
    np.testing.assert_allclose(flat(two), flat(one), atol=2e-5)
    assert np.max(np.abs(flat(fresh) - flat(one))) > 1e-3
    for k, v in memory.items():
        np.testing.assert_allclose(memory2[k], v, atol=2e-5)


def test_a_persistent_optimizer_state_that_does_not_fit_is_an_error():
    rng, obs = _linear_data(m=20)
    u, prec = rng.normal(size=(20, 2)), np.tile(np.eye(2), (20, 1, 1))
    conf = _cfg(iterations=3, persistent_optimizer=True)
    pol = make_mlp_policy(MLPConfig(obs_dim=3, action_dim=2, hidden=(8,)), seed=1)
    with pytest.raises(ValueError, match="optimizer_memory"):
        train_policy(pol, obs, None, u, prec, conf)
    memory = {}
    train_policy(pol, obs, None, u, prec, conf, optimizer_memory=memory)
    other = make_mlp_policy(MLPConfig(obs_dim=3, action_dim=2, hidden=(5,)), seed=1)
    with pytest.raises(ValueError, match="optimizer state: parameter 0"):
        train_policy(other, obs, None, u, prec, conf, optimizer_memory=dict(memory))
    with pytest.raises(ValueError, match="unexpected entry"):
        train_policy(pol, obs, None, u, prec, conf, optimizer_memory={**memory, "0.momentum": np.zeros(1)})


def test_fc_only_phase_freezes_conv():
    cfg, imgs, obs, u, prec = _small_visual()
    pol = make_visuomotor_policy(cfg, seed=0)
    before = {k: v.clone() for k, v in pol.state_dict().items()}
    train_policy(pol, obs, imgs, u, prec, _cfg(iterations=0, fc_only_iterations=10, learning_rate=1e-2))
    after = pol.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("net.convs") or "softmax" in k)
    assert not torch.equal(before["net.fc.0.weight"], after["net.fc.0.weight"])


def test_normalization_first_only_and_validation():
    _, obs = _linear_data(2, 50)
    pol = make_mlp_policy(MLPConfig(obs_dim=3, action_dim=2, hidden=(4,)))
    u, prec = np.zeros((50, 2)), np.ones((50, 2))
    d1 = train_policy(pol, obs, None, u, prec, _cfg(iterations=2))
    np.testing.assert_allclose(pol.obs_scale.numpy(), 1 / obs.std(0), rtol=1e-5)
    scale = pol.obs_scale.clone()
    d2 = train_policy(pol, obs * 10, None, u, prec, _cfg(iterations=2))
    assert d1.normalization_updated and not d2.normalization_updated
    assert torch.equal(scale, pol.obs_scale)
    train_policy(pol, obs * 10, None, u, prec, _cfg(iterations=2, normalize_obs="always"))
    np.testing.assert_allclose(pol.obs_scale.numpy(), 0.1 / obs.std(0), rtol=1e-5)
    with pytest.raises(ValueError, match="leading shape"):
        train_policy(pol, obs, None, u[:10], prec, _cfg(iterations=1))
    with pytest.raises(ValueError, match="NaN"):
        train_policy(pol, obs, None, np.full((50, 2), np.nan), prec, _cfg(iterations=1))
    with pytest.raises(ValueError, match="needs images"):
        cfg, _, o, uu, p = _small_visual()
        train_policy(make_visuomotor_policy(cfg), o, None, uu, p, _cfg(iterations=1))


def test_sample_weights_emphasize_samples():
    _, obs = _linear_data(3, 200)
    u = np.where(np.arange(200)[:, None] < 100, 1.0, -1.0) * np.ones((200, 2))
    pol = make_mlp_policy(MLPConfig(obs_dim=3, action_dim=2, hidden=()), seed=0)
    w = np.where(np.arange(200) < 100, 1.0, 0.0)
    train_policy(pol, np.zeros_like(obs), None, u, np.ones((200, 2)), _cfg(iterations=800), weights=w)
    np.testing.assert_allclose(pol.predict(np.zeros((1, 3)))[0], [[1.0, 1.0]], atol=0.05)


def test_config_yaml_files_load():
    cfg = PolicyOptConfig.from_yaml(ROOT / "config/policy/policy_opt.yaml")
    assert cfg.batch_size == 25 and cfg.learning_rate == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="lr: unknown key"):
        PolicyOptConfig.from_dict({"lr": 1.0})
    import yaml

    for name, kind in (("visuomotor_cnn", "visuomotor_cnn"), ("mlp", "mlp")):
        spec = yaml.safe_load((ROOT / f"config/policy/{name}.yaml").read_text())["policy"]
        pol = make_policy(spec, obs_dim=32, action_dim=7, seed=0)
        assert pol.kind == kind and pol.obs_dim == 32 and pol.action_dim == 7


def test_precision_settings_are_validated():
    with pytest.raises(ValueError, match="train_precision must be one of"):
        PolicyOptConfig(train_precision="fp16")
    with pytest.raises(ValueError, match="inference_precision must be one of"):
        PolicyOptConfig(inference_precision="int8")
    assert PolicyOptConfig().train_precision == "fp32"  # bf16 S-steps are opt-in (docs/benchmarks.md)


def test_bf16_s_step_learns_as_well_as_fp32():
    """The S-step under bf16 autocast against fp32 from the same initial weights and minibatches: targets
    from a teacher network of the same architecture, so the loss can fall far. Both fall; bf16 ends within
    a factor 1.5 of fp32 (losses evaluated in fp32)."""
    cfg, imgs, obs, _, prec = _small_visual(seed=1)
    teacher = make_visuomotor_policy(cfg, seed=7)
    u, _ = teacher.predict(obs, imgs, precision="fp32")
    u = 3.0 * u
    finals = {}
    for p in ("fp32", "bf16"):
        pol = make_visuomotor_policy(cfg, seed=0)
        d = train_policy(pol, obs, imgs, u, prec, _cfg(iterations=150, learning_rate=5e-3, train_precision=p,
                                                          inference_precision="fp32"), seed=0)
        assert d.loss_after < 0.5 * d.loss_before
        finals[p] = d.loss_after
    assert finals["bf16"] < 1.5 * finals["fp32"]
    assert finals["bf16"] != finals["fp32"]  # it really trained in reduced precision


def _square_images(rng, n, size=16):
    """Images with one bright 3x3 square at a random place; the pose target is its (row, col, 0)."""
    imgs = np.zeros((n, size, size, 3), np.uint8)
    pos = rng.integers(1, size - 2, size=(n, 2))
    for i, (r, c) in enumerate(pos):
        imgs[i, r - 1:r + 2, c - 1:c + 2] = 255
    return imgs, np.hstack([pos / size, np.zeros((n, 1))])


def test_aux_pose_loss_keeps_the_feature_points_locating_the_target():
    """S-step targets unrelated to the image pull the conv layers away from localization; the auxiliary
    pose loss (policy_opt.aux_pose_weight) holds them: its loss after training is lower with a large
    weight than with a negligible one, and the head is updated in place."""
    from gps_trainer.policy_opt import AuxPoseTargets

    cfg = VisuomotorConfig(config_dim=2, action_dim=2, image_height=16, image_width=16,
                           conv_filters=(8, 4, 4), fc_hidden=(16,))
    rng = np.random.default_rng(0)
    imgs, pos = _square_images(rng, 200)
    obs, u = rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) * 3.0
    prec = np.tile(np.eye(2), (200, 1, 1))
    pol0 = make_visuomotor_policy(cfg, seed=0)
    with torch.no_grad():
        from gps_controller.policies.neural import images_to_tensor
        pts = pol0.net.feature_points(images_to_tensor(imgs)).reshape(200, -1).double().numpy()
    design = np.hstack([pts, np.ones((200, 1))])
    head0 = np.linalg.lstsq(design, pos, rcond=None)[0].T  # (3, 2K + 1): the "pretrained" head
    after = {}
    for w in (1e-6, 10.0):
        pol = make_visuomotor_policy(cfg, seed=0)
        aux = AuxPoseTargets(head0.copy(), pos)
        d = train_policy(pol, obs, imgs, u, prec, _cfg(iterations=300, learning_rate=1e-2, aux_pose_weight=w),
                         aux_pose=aux)
        assert d.aux_pose_loss_before == pytest.approx(np.mean(np.sum((design @ head0.T - pos) ** 2, 1)), rel=1e-3)
        assert not np.array_equal(aux.head, head0)
        after[w] = d.aux_pose_loss_after
    assert after[10.0] < 0.5 * after[1e-6]

    # Off (weight 0): no auxiliary term, the head untouched; bad auxiliary data is refused.
    aux = AuxPoseTargets(head0.copy(), pos)
    d = train_policy(make_visuomotor_policy(cfg, seed=0), obs, imgs, u, prec, _cfg(iterations=5), aux_pose=aux)
    assert d.aux_pose_loss_after is None and np.array_equal(aux.head, head0)
    on = _cfg(iterations=5, aux_pose_weight=1.0)
    with pytest.raises(ValueError, match="target positions"):
        train_policy(make_visuomotor_policy(cfg, seed=0), obs, imgs, u, prec, on)
    with pytest.raises(ValueError, match="head"):
        train_policy(make_visuomotor_policy(cfg, seed=0), obs, imgs, u, prec, on,
                     aux_pose=AuxPoseTargets(head0[:, :-1], pos))
    bad = pos.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_policy(make_visuomotor_policy(cfg, seed=0), obs, imgs, u, prec, on, aux_pose=AuxPoseTargets(head0, bad))
    with pytest.raises(ValueError, match="aux_pose_weight"):
        _cfg(aux_pose_weight=-1.0)
