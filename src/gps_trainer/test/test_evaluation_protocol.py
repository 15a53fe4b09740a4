"""The evaluation protocol in use (issue 12): the same trial twice gives the same result, and the vision
ablation (blank / swapped image) feeds the policy what it claims to."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gps_controller.policies import make_policy
from gps_sim import ArmSim
from gps_trainer.paper.evaluation import ImageAblation, evaluate_policy, format_table, run_trial

SMALL_CNN = {"type": "visuomotor_cnn", "init_var": 0.1,
             "net": {"image_height": 16, "image_width": 16, "conv_filters": [4, 4, 4],
                     "conv_kernels": [3, 3, 3], "conv_strides": [2, 1, 1], "fc_hidden": [8]}}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class _Recorder:
    """An actor that sees images, records them and pushes the arm a little (so the arm moves)."""

    uses_images = True
    image_shape = (16, 16, 3)
    name = "recorder"

    def __init__(self):
        self.images: list[np.ndarray] = []

    def act(self, obs, image, noise=None):
        self.images.append(np.array(image))
        return np.full(7, 0.5)


def test_same_trial_twice_gives_identical_results():
    cnn = make_policy(SMALL_CNN, 32, 7, seed=2).eval()
    sim = ArmSim("reach", image_size=16, render_images=True)
    runs = [run_trial(sim, cnn, "observation", 1, "visual_test", 1234, 8) for _ in range(2)]
    assert runs[0] == runs[1]
    other = run_trial(sim, cnn, "observation", 1, "visual_test", 1235, 8)
    assert other[1] != runs[0][1]  # another seed: another start and scene, another outcome
    sim.close()


def test_blank_ablation_feeds_black_images_and_is_recorded():
    rec = _Recorder()
    res = evaluate_policy("rec", "reach", ("visual_test",), trials_per_set=2, horizon=3, actor=rec, ablation="blank",
                          image_size=16)
    assert len(rec.images) == 6 and all(img.shape == (16, 16, 3) and not img.any() for img in rec.images)
    assert res.ablation == "blank" and "ablation" in format_table(res)
    assert res.to_dict()["ablation"] == "blank"


def test_swap_ablation_shows_another_condition_with_the_real_arm():
    rec = _Recorder()
    sim = ArmSim("reach", image_size=16, render_images=True)
    abl = ImageAblation("swap", sim)
    seed, cset = 77, "spatial_test"
    run_trial(sim, rec, "observation", 3, cset, seed, 1, ablation=abl)
    # what the policy saw at step 0: condition 4's scene (same set and seed) with the arm at condition 3's
    # (perturbed) start, not condition 3's own image
    q0 = sim.reset(3, seed=seed, condition_set=cset).config[:7]
    true_img = sim.render()
    ref = ArmSim("reach", image_size=16, render_images=True)
    ref.reset(4, seed=seed, condition_set=cset)
    assert np.abs(ref.joint_positions() - q0).max() > 1e-4  # the other condition starts elsewhere ...
    ref.set_joint_state(q0)  # ... the swapped image shows the real arm
    np.testing.assert_array_equal(rec.images[0], ref.render())
    assert np.any(rec.images[0] != true_img)
    with pytest.raises(ValueError, match="2 conditions"):
        one = ArmSim("reach", image_size=16, render_images=True)
        one.task.conditions["train"] = one.task.conditions["train"][:1]
        ImageAblation("swap", one).start(0, "train", 0)
    abl.close()
    ref.close()
    sim.close()


def test_ablation_changes_a_cnn_policy_and_rejects_bad_requests():
    cnn = make_policy(SMALL_CNN, 32, 7, seed=4)
    kw = dict(condition_sets=("train_perturbed",), trials_per_set=4, horizon=10)
    true = evaluate_policy(cnn, "reach", **kw)
    blank = evaluate_policy(cnn, "reach", ablation="blank", **kw)
    swap = evaluate_policy(cnn, "reach", ablation="swap", **kw)
    d0, d1, d2 = (np.array(r.sets["train_perturbed"].final_distance) for r in (true, blank, swap))
    assert not np.array_equal(d0, d1) and not np.array_equal(d0, d2)  # an untrained CNN: tiny effect, but one
    mlp = make_policy({"type": "mlp", "net": {"hidden": [8]}}, 32, 7, seed=0)
    with pytest.raises(ValueError, match="ablation"):
        evaluate_policy(mlp, "reach", ablation="blank", **kw)
    with pytest.raises(ValueError, match="ablation"):
        evaluate_policy(cnn, "reach", ablation="noise", **kw)


def test_eval_cli_ablation_and_situations(tmp_path, capsys):
    import json

    from gps_controller.policies import save_policy
    from gps_trainer.cli import main

    save_policy(make_policy(SMALL_CNN, 32, 7, seed=0), tmp_path / "cnn.safetensors")
    rc = main(["eval", "--policy", str(tmp_path / "cnn.safetensors"), "--trials", "2", "--sets", "visual_test",
               "--ablation", "swap", "--out", str(tmp_path / "e.json")])
    assert rc == 0
    d = json.loads((tmp_path / "e.json").read_text())
    assert d["ablation"] == "swap" and d["sets"]["visual_test"]["situations"] == 2
    assert "situations" in capsys.readouterr().out
    assert main(["eval", "--policy", str(tmp_path / "cnn.safetensors"), "--through-nodes", "--ablation", "blank"]) == 2
