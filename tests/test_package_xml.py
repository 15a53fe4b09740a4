"""Every Python import of each ament package is declared in its package.xml with its rosdep key (issue 14),
and the dependency graph is the layered one: gps_core at the base (no rclpy), gps_trainer on top."""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gps_core", "gps_sim", "gps_controller", "gps_trainer")
# import name -> rosdep key (ROS packages are their own keys)
KEYS = {
    "numpy": "python3-numpy", "scipy": "python3-scipy", "yaml": "python3-yaml", "cv2": "python3-opencv",
    "matplotlib": "python3-matplotlib", "PIL": "python3-pil", "sklearn": "python3-sklearn",
    "threadpoolctl": "python3-threadpoolctl", "torch": "python3-torch", "mujoco": "python3-mujoco-pip",
    "safetensors": "python3-safetensors-pip", "gymnasium": "python3-gymnasium-pip",
    "stable_baselines3": "python3-stable-baselines3-pip", "mcap": "python3-mcap-pip",
    "mcap_ros2": "python3-mcap-ros2-support-pip",
}
OPTIONAL = {"pinocchio"}  # imported only when configured (robot_model: a URDF path); noted in package.xml


def imports(package: str) -> set[str]:
    names = set()
    for path in (ROOT / "src" / package / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__" and n != package}


def declared(package: str) -> set[str]:
    root = ET.parse(ROOT / "src" / package / "package.xml").getroot()
    return {e.text.strip() for e in root if e.tag in ("depend", "exec_depend")}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_import_is_declared(package):
    deps = declared(package)
    missing = sorted(f"{name} ({KEYS.get(name, name)})" for name in imports(package) - OPTIONAL
                     if KEYS.get(name, name) not in deps)
    assert not missing, f"{package}/package.xml lacks: {missing}"


def test_layering():
    assert "rclpy" not in imports("gps_core") and "rclpy" not in declared("gps_core")
    assert {"gps_core", "gps_controller", "gps_sim"} <= declared("gps_trainer")
    for pkg in ("gps_sim", "gps_controller"):
        assert "gps_core" in declared(pkg) and "gps_trainer" not in declared(pkg)
