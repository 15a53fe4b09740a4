"""The Gazebo files through a real SDFormat parser (libsdformat, what Gazebo loads them with): the URDF
converts with every moving link and joint surviving (a massless torso_lift_link used to take the whole
arm with it), and the world has zero gravity, the Sensors system and the task's objects.

The parser is compiled from sdformat/sdf_links.cc against the installed libsdformat (Debian 12:
`apt-get install libsdformat-dev`, SDFormat 12); skipped with the reason where it is not installed.
Also: the committed world file equals a fresh `python -m gps_sim.gz_world`.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gps_sim import gz_world, urdf

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
WORLD = REPO / "launch" / "worlds" / "reach.sdf"


def test_committed_world_is_fresh():
    assert WORLD.read_text() == gz_world.generate_world("reach")


@pytest.fixture(scope="module")
def sdf_links(tmp_path_factory):
    if shutil.which("pkg-config") is None or shutil.which("g++") is None:
        pytest.skip("no pkg-config/g++ to build the libsdformat check")
    module = next((m for m in ("sdformat14", "sdformat13", "sdformat12")
                   if subprocess.run(["pkg-config", "--exists", m]).returncode == 0), None)
    if module is None:
        pytest.skip("libsdformat not installed (Debian 12: apt-get install libsdformat-dev)")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", module], capture_output=True, text=True,
                           check=True).stdout.split()
    exe = tmp_path_factory.mktemp("sdf") / "sdf_links"
    r = subprocess.run(["g++", "-std=c++17", "-o", str(exe), str(HERE / "sdformat" / "sdf_links.cc"), *flags],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return exe


def _parse(exe: Path, path: Path) -> tuple[list[str], str]:
    r = subprocess.run([str(exe), str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 3), r.stderr  # 3: loaded with warnings
    return r.stdout.splitlines(), r.stderr


def test_urdf_converts_with_every_moving_link(sdf_links, tmp_path):
    lines, _ = _parse(sdf_links, urdf.URDF)
    links = {ln.split()[1] for ln in lines if ln.startswith("link ")}
    joints = {ln.split()[1] for ln in lines if ln.startswith("joint ")}
    root = ET.parse(urdf.URDF).getroot()
    moving = [j for j in root.findall("joint") if j.get("type") != "fixed"]
    assert len(moving) == 7
    for j in moving:
        assert j.get("name") in joints, j.get("name")
        assert j.find("child").get("link") in links, j.find("child").get("link")
    # Fixed-joint links are lumped into their parents; what stays is the base and the seven arm links.
    assert "base_link" in links and len(links) == 8


def test_urdf_without_the_torso_inertial_loses_the_arm(sdf_links, tmp_path):
    """The check above can fail: SDFormat drops the arm when torso_lift_link has no inertial."""
    root = ET.parse(urdf.URDF).getroot()
    torso = next(link for link in root.findall("link") if link.get("name") == "torso_lift_link")
    torso.remove(torso.find("inertial"))
    bad = tmp_path / "no_torso_inertial.urdf"
    ET.ElementTree(root).write(bad)
    lines, _ = _parse(sdf_links, bad)
    assert not any(ln.startswith("link r_") for ln in lines), lines


def test_world_zero_gravity_sensors_and_objects(sdf_links):
    lines, _ = _parse(sdf_links, WORLD)
    (world,) = [ln for ln in lines if ln.startswith("world ")]
    assert world.split()[-3:] == ["0", "0", "0"]
    plugins = {ln.split()[2] for ln in lines if ln.startswith("plugin ")}
    assert {"gz::sim::systems::Sensors", "gz::sim::systems::Physics", "gz::sim::systems::UserCommands",
            "gz::sim::systems::SceneBroadcaster"} <= plugins
    models = {ln.split()[1] for ln in lines if ln.startswith("model ")}
    assert {"table", "target"} <= models


def test_gazebo_launch_uses_the_world():
    text = (REPO / "launch" / "gazebo.launch.py").read_text()
    assert '"worlds" / "reach.sdf"' in text and "empty.sdf" not in text
