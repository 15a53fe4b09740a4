"""The test suite's ROS domains under pytest-xdist (scripts/test.sh runs two workers side by side): no rig of
one worker (controller_rig.subprocess_env's session domain + offset) shares a domain with the other's."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import xdist_worker_domain

ROOT = Path(__file__).resolve().parent.parent


def _rig_offsets() -> set[int]:
    """Every domain offset the tests give a rig (subprocess_env(domain_offset=N), the sim rigs' _rig(..., N))."""
    offsets = {0}
    for path in [*ROOT.glob("src/*/test/*.py"), *ROOT.glob("tests/*.py")]:
        text = path.read_text()
        offsets |= {int(n) for n in re.findall(r"domain_offset=(\d+)", text)}
        offsets |= {int(n) for n in re.findall(r"_rig\(tmp_path_factory, (\d+)", text)}
    return offsets


def test_two_workers_never_share_a_domain():
    offsets = _rig_offsets()
    assert {57, 101, 153} <= offsets  # the scan finds the rigs (a renamed helper would hide them)
    for session in range(1, 101):  # conftest's draw
        worker_domains = [{(xdist_worker_domain(session, f"gw{i}", 2) + o) % 230 for o in offsets} for i in (0, 1)]
        assert not worker_domains[0] & worker_domains[1], session
    assert xdist_worker_domain(7, "gw0", 2) == 7 and xdist_worker_domain(7, "gw1", 2) == 122
