"""Every command-line entry point answers --help (argparse formats each option's help text only then, so a
stray % in one crashes --help alone)."""

import subprocess
import sys

import pytest

MODULES = ["gps_trainer.cli", "gps_trainer.procedure", "gps_trainer.paper.baselines", "gps_trainer.paper.architectures",
           "gps_trainer.paper.sample_efficiency", "gps_trainer.paper.report", "gps_trainer.pose_pretraining", "gps_sim.urdf",
           "gps_controller.transport_probe"]


@pytest.mark.parametrize("module", MODULES)
def test_help(module):
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout


@pytest.mark.parametrize("subcommand", ["up", "train", "status", "down", "demo", "eval", "report"])
def test_gps_subcommand_help(subcommand):
    r = subprocess.run([sys.executable, "-m", "gps_trainer.cli", subcommand, "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"usage: gps {subcommand}" in r.stdout


@pytest.mark.parametrize("argv, words", [
    (["train", "--iterations", "4294967297"], "argument --iterations: must be between 1 and 10000"),  # wrapped to 1
    (["train", "--iterations", "-1"], "argument --iterations: must be between 1 and 10000"),
    (["train", "--iterations", "0"], "argument --iterations: must be between 1 and 10000"),
    (["train", "--iterations", "1" * 5000], "argument --iterations: expected an integer, got '1111"),
    (["train", "--iterations", "2.5"], "argument --iterations: expected an integer, got '2.5'"),
    (["demo", "--gps-iterations", "99999"], "argument --gps-iterations: must be between 1 and 10000"),
    (["up", "--robots", "0"], "argument --robots: must be between 1 and 64"),
    (["eval", "--policy", "p", "--seed", str(2**64)], "argument --seed: must be between 0 and 4294967295"),
    (["eval", "--policy", "p", "--threads", "-3"], "argument --threads: must be between 1 and 256"),
    (["--timeout", "nan", "status"], "argument --timeout: must be between 0.1 and 86400, got nan"),
])
def test_out_of_range_numbers_are_refused_before_anything_is_sent(argv, words, capsys):
    """`gps train --iterations 4294967297` wrapped to 1 in the uint32 field and waited forever; -1 ended in
    a traceback. Every number is range-checked against its field (or its sane bound) first."""
    from gps_trainer import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err and len(err) < 3000, err


def test_train_refuses_an_iteration_count_its_field_cannot_carry():
    from gps_trainer.cli import train

    for n in (2**32 + 1, -1, 0, True):
        with pytest.raises(ValueError, match="iterations: must be between 1 and 10000"):
            train(n, timeout=1.0)


def test_baselines_refuse_an_override_written_after_sets(capsys):
    """`--sets validation iterations=6` took the override for a set name and failed only after the GPS runs
    (and a run's overrides after it were silently dropped): argparse now refuses it before anything runs."""
    from gps_trainer.paper.baselines import main

    with pytest.raises(SystemExit) as exc:
        main(["--vision", "v.safetensors", "--sets", "validation", "iterations=6"])
    assert exc.value.code == 2 and "invalid choice: 'iterations=6'" in capsys.readouterr().err
