"""Robustness mode (issue 24): every out-of-distribution family at every strength through the evaluation,
`gps eval --robustness`, and the curves' figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gps_controller.policies import make_policy, save_policy
from gps_core.ood import OOD_KINDS, OOD_STRENGTHS
from gps_trainer.paper.robustness import (
    curves,
    evaluate_robustness,
    format_robustness,
    main,
    plot_robustness,
    robustness_sets,
)

TINY_CNN = {"type": "visuomotor_cnn", "init_var": 0.1,
            "net": {"image_height": 16, "image_width": 16, "conv_filters": [4, 4, 4], "conv_kernels": [3, 3, 3],
                    "conv_strides": [2, 1, 1], "fc_hidden": [8]}}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_robustness_sets_per_split_and_errors():
    val = robustness_sets("validation")
    assert val[0] == "train_validation" and len(val) == 1 + len(OOD_KINDS) * len(OOD_STRENGTHS)
    assert all(s.endswith("_validation") for s in val)
    test = robustness_sets("test", ("camera",))
    assert test == ["train_perturbed", "ood_camera_1_test", "ood_camera_2_test", "ood_camera_3_test"]
    with pytest.raises(ValueError, match="split"):
        robustness_sets("train")
    with pytest.raises(ValueError, match="families"):
        robustness_sets("validation", ("fog",))


class _Recorder:
    """An actor that stands still and records the mean brightness of every image it is shown."""

    uses_images = True
    image_shape = (32, 32, 3)
    name = "recorder"

    def __init__(self):
        self.means: list[float] = []
        self.images: list[np.ndarray] = []

    def act(self, obs, image, noise=None):
        self.means.append(float(image.astype(float).mean()))
        self.images.append(image)
        return np.zeros(7)


def test_the_policy_sees_each_family_and_strength_0_is_the_plain_scene():
    actor = _Recorder()
    res = evaluate_robustness("recorder", "shape_sorting", "validation", trials_per_set=2, seed=1,
                              kinds=("lighting", "image_noise"), actor=actor, horizon=1, image_size=32)
    assert list(res.sets) == robustness_sets("validation", ("lighting", "image_noise"))
    means = np.array(actor.means).reshape(len(res.sets), 2)
    images = np.array(actor.images).reshape(len(res.sets), 2, 32, 32, 3)
    reference = means[0]
    # lighting: every trial's image brighter or darker than the plain scene of the same position
    assert np.all(np.abs(means[1:4] - reference) > 1.0)
    # image noise: the images differ pixel by pixel from the plain ones, more with the strength
    noise = [np.abs(images[k].astype(float) - images[0].astype(float)).mean() for k in (4, 5, 6)]
    assert 0.5 < noise[0] < noise[1] < noise[2]
    table = curves(res, "validation")
    assert set(table) == {"lighting", "image_noise"}
    assert [p["strength"] for p in table["lighting"]] == [0, 1, 2, 3]
    assert table["lighting"][0]["set"] == table["image_noise"][0]["set"] == "train_validation"
    assert "image_noise" in format_robustness(res, "validation")


def test_eval_cli_robustness_table_json_and_figure(tmp_path, capsys):
    from gps_trainer.cli import main as gps

    pol = make_policy(TINY_CNN, 32, 7, seed=0)
    save_policy(pol, tmp_path / "policy.safetensors")
    args = ["eval", "--policy", str(tmp_path / "policy.safetensors"), "--task", "reach", "--trials", "1"]
    assert gps([*args, "--robustness", "--method", "end_to_end"]) == 0
    out = capsys.readouterr().out
    assert "robustness (validation families; strength 0 = train_validation)" in out
    d = json.loads((tmp_path / "robustness_validation.json").read_text())
    assert d["method"] == "end_to_end" and d["robustness"]["split"] == "validation"
    assert set(d["robustness"]["curves"]) == set(OOD_KINDS)
    assert len(d["sets"]) == 1 + 3 * len(OOD_KINDS) and all(s["trials"] == 1 for s in d["sets"].values())
    # the test families: final numbers, their own file; the strength-0 point is Table I's training set
    assert gps([*args, "--robustness", "test", "--out", str(tmp_path / "t.json")]) == 0
    t = json.loads((tmp_path / "t.json").read_text())
    assert t["robustness"]["curves"]["camera"][0]["set"] == "train_perturbed"
    assert gps([*args, "--robustness", "--sets", "visual_test"]) == 2
    capsys.readouterr()
    # the figure: two methods side by side, one panel per family
    other = dict(d, method="pose_features")
    (tmp_path / "b.json").write_text(json.dumps(other))
    png = tmp_path / "fig" / "robustness.png"
    assert main(["--results", str(tmp_path / "robustness_validation.json"), str(tmp_path / "b.json"),
                 "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pose_features:" in capsys.readouterr().out
    with pytest.raises(ValueError, match="one split"):
        plot_robustness([("a", d), ("b", t)], tmp_path / "x.png")
    for bad in (png, tmp_path / "missing.json"):  # not JSON, not there
        with pytest.raises(SystemExit):
            main(["--results", str(bad), "--out", str(tmp_path / "y.png")])
    (tmp_path / "plain.json").write_text(json.dumps({k: v for k, v in d.items() if k != "robustness"}))
    with pytest.raises(SystemExit):  # a plain gps eval result
        main(["--results", str(tmp_path / "plain.json"), "--out", str(tmp_path / "y.png")])
    assert "not a result of gps eval --robustness" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--results", str(tmp_path / "b.json"), "--labels", "a", "b", "--out", str(tmp_path / "y.png")])
