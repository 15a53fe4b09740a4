"""gps_core.ood without MuJoCo: set names, spec validation, the split-interleaved draws, image perturbation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gps_core import ood


def test_set_names_round_trip_and_test_families_end_in_test():
    assert len(ood.OOD_SETS) == len(ood.OOD_KINDS) * 3 * 2 == len(set(ood.OOD_SETS))
    for name in ood.OOD_SETS:
        kind, strength, split = ood.parse_ood_set_name(name)
        assert ood.ood_set_name(kind, strength, split) == name
        assert name.endswith("_test") == (split == "test")
    assert ood.parse_ood_set_name("visual_test") is None
    assert ood.parse_ood_set_name("ood_lighting_4_test") is None


@pytest.mark.parametrize("bad,key", [
    ({"kind": "fog", "strength": 1, "split": "test"}, "kind"),
    ({"kind": "lighting", "strength": 0, "split": "test"}, "strength"),
    ({"kind": "lighting", "strength": True, "split": "test"}, "strength"),
    ({"kind": "lighting", "strength": 1, "split": "train"}, "split"),
    ({"kind": "lighting", "strength": 1}, "ood"),
    ({"kind": "lighting", "strength": 1, "split": "test", "colour": 1}, "ood"),
    ({"kind": "clutter", "strength": 1, "split": "test", "scene": [1]}, "scene"),
])
def test_spec_errors_name_the_key(bad, key):
    with pytest.raises(ValueError, match=key):
        ood.ood_spec(bad)


def test_interleaved_draws_stay_in_their_split_pieces_and_cover_them():
    rng = np.random.default_rng(0)
    lo, hi = 0.2, 0.6
    for split, parity in (("validation", 0), ("test", 1)):
        values = np.array([ood.interleaved_uniform(rng, lo, hi, split) for _ in range(2000)])
        assert np.all((values >= lo) & (values <= hi))
        pieces = {ood.piece_of(v, lo, hi) for v in values}
        assert {p % 2 for p in pieces} == {parity} and len(pieces) == ood.BAND_PIECES // 2
    angles = np.array([ood.interleaved_angle(rng, "test") for _ in range(2000)])
    assert {ood.piece_of(a, 0.0, 2 * math.pi, ood.ANGLE_PIECES) % 2 for a in angles} == {1}
    # the same Generator state draws the same value: the draws are seeded
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    assert ood.draw_camera({"split": "test", "strength": 2}, a) == ood.draw_camera({"split": "test", "strength": 2}, b)


@pytest.mark.parametrize("strength", ood.OOD_STRENGTHS)
def test_family_draws_within_their_bands(strength):
    rng = np.random.default_rng(strength)
    for split in ood.OOD_SPLITS:
        spec = {"split": split, "strength": strength}
        for _ in range(50):
            light = ood.draw_lighting(spec, rng)
            lo, hi = ood.band("lighting", "log_intensity", strength)
            assert lo <= light["log_intensity"] <= hi
            assert light["intensity"] in (pytest.approx(math.exp(-light["log_intensity"])),
                                          pytest.approx(math.exp(0.5 * light["log_intensity"])))
            tint = np.asarray(light["tint"])
            # the tint is a pure chroma change: its mean stays 1, its distance from grey is the drawn chroma
            assert tint.mean() == pytest.approx(1.0)
            assert np.linalg.norm(tint - 1.0) == pytest.approx(light["tint_chroma"])
            assert ood.band("lighting", "tint", strength)[0] <= light["tint_chroma"] <= ood.band("lighting", "tint",
                                                                                                   strength)[1]
            cam = ood.draw_camera(spec, rng)
            lo, hi = ood.band("camera", "shift", strength)
            assert lo <= np.linalg.norm(cam["shift"]) <= hi + 1e-12
            lo, hi = ood.band("camera", "rotation", strength)
            assert lo <= cam["rotation"] <= hi and np.linalg.norm(cam["rotation_axis"]) == pytest.approx(1.0)
            noise = ood.draw_image_noise(spec, rng)
            for key in ("noise_std", "blur"):
                lo, hi = ood.band("image_noise", key, strength)
                assert lo <= noise[key] <= hi
                assert ood.piece_of(noise[key], lo, hi) % 2 == ood.OOD_SPLITS.index(split)


def test_perturb_image_blur_noise_and_errors():
    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 3), 100, np.uint8)
    assert ood.perturb_image(flat, 0.0, 0.0, None) is flat
    np.testing.assert_array_equal(ood.perturb_image(flat, 0.0, 1.5, None), flat)  # blur keeps a flat image
    noisy = ood.perturb_image(flat, 10.0, 0.0, rng).astype(float)
    assert abs(noisy.mean() - 100.0) < 0.5 and 9.5 < noisy.std() < 10.5  # 12288 samples: std error ~0.06
    edge = np.zeros((64, 64, 3), np.uint8)
    edge[:, 32:] = 200
    blurred = ood.perturb_image(edge, 0.0, 1.0, None)
    assert 0 < blurred[0, 31, 0] < 100 < blurred[0, 32, 0] < 200  # the edge spread across both sides
    assert blurred[0, 0, 0] == 0 and blurred[0, 63, 0] == 200  # far from it nothing moved
    # the blur's sigma scales with the image's width: a 128-px image blurs over twice the pixels
    wide = np.zeros((8, 128, 3), np.uint8)
    wide[:, 64:] = 200
    w = ood.perturb_image(wide, 0.0, 1.0, None)
    assert (w[0, :, 0] % 200 != 0).sum() > (blurred[0, :, 0] % 200 != 0).sum()
    # each frame's noise is a function of (trial seed, step)
    a = ood.perturb_image(flat, 5.0, 0.0, ood.frame_rng(3, 7))
    np.testing.assert_array_equal(a, ood.perturb_image(flat, 5.0, 0.0, ood.frame_rng(3, 7)))
    assert not np.array_equal(a, ood.perturb_image(flat, 5.0, 0.0, ood.frame_rng(3, 8)))
    for bad in (np.zeros((4, 4, 3)), np.zeros((4, 4), np.uint8)):
        with pytest.raises(ValueError, match="uint8"):
            ood.perturb_image(bad, 1.0, 0.0, rng)
    for std, blur in ((-1.0, 0.0), (math.nan, 0.0), (0.0, math.inf)):
        with pytest.raises(ValueError, match="finite"):
            ood.perturb_image(flat, std, blur, rng)
    with pytest.raises(ValueError, match="random generator"):
        ood.perturb_image(flat, 1.0, 0.0, None)


@pytest.mark.parametrize("max_strength", ood.OOD_STRENGTHS)
def test_training_draws_cover_zero_to_the_top_band_not_the_split_pieces(max_strength):
    """Training-time appearance randomization: every value uniform over [0, top of the largest band], seeded;
    hues and azimuths over the whole circle (the held-out families keep to their split's sectors)."""
    rng = np.random.default_rng(max_strength)
    lights = [ood.draw_training_lighting(max_strength, rng) for _ in range(400)]
    cams = [ood.draw_training_camera(max_strength, rng) for _ in range(400)]
    for kind, name, values in (("lighting", "log_intensity", [d["log_intensity"] for d in lights]),
                               ("lighting", "tint", [d["tint_chroma"] for d in lights]),
                               ("lighting", "tilt", [d["tilt"] for d in lights]),
                               ("camera", "shift", [np.linalg.norm(d["shift"]) for d in cams]),
                               ("camera", "rotation", [d["rotation"] for d in cams])):
        lo, hi = ood.training_range(kind, name, max_strength)
        v = np.array(values)
        assert lo == 0.0 and hi == ood.band(kind, name, max_strength)[1]
        assert np.all((v >= lo) & (v <= hi)), (kind, name)
        # both ends of the range are reached (uniform: the lowest and highest tenth each hold draws)
        assert np.mean(v < lo + 0.1 * (hi - lo)) > 0.03 and np.mean(v > hi - 0.1 * (hi - lo)) > 0.03, (kind, name)
    for key in ("tint_hue", "tilt_azimuth"):
        sectors = {ood.piece_of(d[key], 0.0, 2 * math.pi, ood.ANGLE_PIECES) for d in lights}
        assert sectors == set(range(ood.ANGLE_PIECES))  # both splits' sectors, not one split's
    for d in lights:  # the format the lighting family's edits take
        assert d["intensity"] == pytest.approx(math.exp(0.5 * d["log_intensity"]) if d["intensity"] > 1
                                               else math.exp(-d["log_intensity"]))
        np.testing.assert_allclose(d["tint"], ood.tint_factor(d["tint_chroma"], d["tint_hue"]))
    for d in cams:
        assert np.linalg.norm(d["rotation_axis"]) == pytest.approx(1.0)
    a, b = np.random.default_rng(11), np.random.default_rng(11)
    assert ood.draw_training_lighting(2, a) == ood.draw_training_lighting(2, b)
    assert ood.draw_training_camera(2, a) == ood.draw_training_camera(2, b)
