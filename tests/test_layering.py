"""The packages' layering (DESIGN.md, Layout): gps_core depends on no package of ours; gps_sim and
gps_controller depend on gps_core only (never on each other); the learning library imports no rclpy;
no import circle between modules anywhere in src/; each package.xml declares the packages of ours it
imports."""

from __future__ import annotations

import ast
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("gps_core", "gps_sim", "gps_controller", "gps_trainer", "gps_msgs")
ALLOWED = {  # package -> packages of ours it may import
    "gps_core": set(),
    "gps_sim": {"gps_core", "gps_msgs"},
    "gps_controller": {"gps_core", "gps_msgs"},
    "gps_trainer": {"gps_core", "gps_sim", "gps_controller", "gps_msgs"},
}
LIBRARY = ["gps_trainer.dynamics", "gps_trainer.traj_opt", "gps_trainer.costs", "gps_trainer.policy_opt",
           "gps_trainer.algorithms.traj_opt_only", "gps_trainer.algorithms.mdgps", "gps_trainer.algorithms.badmm",
           "gps_trainer.loop", "gps_trainer.run_dir", "gps_trainer.sim_sampler", "gps_core.tasks",
           "gps_core.kinematics", "gps_core.samples", "gps_core.linear_gaussian", "gps_core.layout"]


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ALLOWED:
        for path in (ROOT / "src" / pkg / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT / "src" / pkg).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    """Modules of ours imported by ``path`` (``top_level_only``: not inside functions, what a cycle needs)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = module.split(".")[: -node.level] if not path.name == "__init__.py" else module.split(".")
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{a.name}" for a in node.names}
    return {n for n in found if n.split(".")[0] in OURS}


def test_packages_import_only_the_packages_below_them():
    bad = []
    modules = _modules()
    assert len(modules) > 40 and "gps_trainer.loop" in modules and "gps_core.tasks" in modules
    assert "gps_core.tasks" in _imports(modules["gps_sim.arm_sim"], "gps_sim.arm_sim", top_level_only=False)
    for module, path in modules.items():
        pkg = module.split(".")[0]
        for imp in _imports(path, module, top_level_only=False):
            other = imp.split(".")[0]
            if other != pkg and other not in ALLOWED[pkg]:
                bad.append(f"{module} imports {imp}")
    assert not bad, "\n".join(bad)


def test_no_import_circle_between_modules():
    modules = _modules()
    graph = {m: {i for i in _imports(p, m, top_level_only=False) if i in modules and i != m}
             for m, p in modules.items()}
    # a package's __init__ importing its own submodules is not a circle through the package
    graph = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import circle: " + " -> ".join(cycle))


def test_the_library_imports_no_rclpy():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in LIBRARY)
            + "bad = sorted(m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.'))\n"
            + "assert not bad, bad\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_package_xml_declares_our_packages_it_imports():
    for pkg in ALLOWED:
        declared = {e.text for e in ET.parse(ROOT / "src" / pkg / "package.xml").getroot()
                    if e.tag in ("depend", "exec_depend")}
        used = {i.split(".")[0] for m, p in _modules().items() if m.split(".")[0] == pkg
                for i in _imports(p, m, top_level_only=False)} - {pkg}
        assert used <= declared, f"{pkg}/package.xml lacks {sorted(used - declared)}"
