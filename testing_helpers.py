"""Helpers shared by the tests (and benchmarks) that run nodes as subprocesses.

Importable from any test (pytest's pythonpath includes the repository root). controller_rig.py puts
the root on sys.path itself, for the peer scripts and benchmarks that import it outside pytest.
"""

from __future__ import annotations

import subprocess
import time


def wait_for_output(proc: subprocess.Popen, word: str = "ready", timeout: float = 60.0) -> str:
    """Read proc's stdout (a text pipe) line by line until a line contains `word`; return that line.

    Raises RuntimeError with the rest of the process's output if it exits first, TimeoutError if no
    such line arrives within `timeout` seconds (checked between lines: a silent process blocks the
    read until it prints or exits).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if word in line:
            return line
        if proc.poll() is not None:
            rest = proc.stdout.read()
            if proc.stderr is not None:
                rest += proc.stderr.read()
            raise RuntimeError(f"process exited with {proc.returncode} before printing {word!r}: {rest}")
    raise TimeoutError(f"process never printed {word!r} within {timeout:g} s")
