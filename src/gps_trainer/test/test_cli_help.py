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
