"""gps_core.progress: a live line on a terminal, throttled plain lines in a pipe or log (fake clock)."""

import io
import os
import subprocess
import sys
import time

import pytest

from gps_core.progress import INTERVAL_ENV, Progress, format_duration, interval_from_env


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_pipe_gets_plain_lines_throttled_by_time():
    clock, out = FakeClock(), io.StringIO()
    p = Progress("work", total=100, stream=out, interval=15.0, clock=clock)
    for step in range(1, 101):  # one update per second for 100 s
        clock.advance(1.0)
        p.update(step, f"step {step}/100")
    p.finish("all steps")
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # the first update, then one every 15 s (steps 16, 31, ..., 91), then the final line
    assert [ln.split(":")[1].split("(")[0].strip() for ln in lines[:-1]] == [
        f"step {s}/100" for s in (1, 16, 31, 46, 61, 76, 91)]
    assert lines[-1] == "work: all steps (elapsed 1m40s, done)"


def test_eta_from_the_rate_since_the_start():
    clock, out = FakeClock(), io.StringIO()
    p = Progress("pretraining", total=600, stream=out, interval=15.0, clock=clock)
    clock.advance(30.0)
    p.update(60, "step 60/600 loss 0.5")  # 2 steps/s: 540 left -> 270 s
    assert out.getvalue() == "pretraining: step 60/600 loss 0.5 (elapsed 30s, ETA 4m30s)\n"
    clock.advance(10.0)  # no news for 10 s: the estimate counts them down
    assert p.eta() == pytest.approx(260.0)


def test_restart_measures_a_new_phase_from_its_own_start():
    clock, out = FakeClock(), io.StringIO()
    p = Progress("demo", total=10, stream=out, interval=15.0, clock=clock)
    clock.advance(100.0)
    p.update(10, "rendering 10/10")
    p.restart(50, "step 0/50")  # a new phase: always a line, the ETA unknown until a unit is done
    assert out.getvalue().splitlines()[-1] == "demo: step 0/50 (elapsed 1m40s, ETA ?)"
    clock.advance(1.0)
    p.update(1, "step 1/50")  # the phase's first unit: its first ETA, a line although not due
    assert out.getvalue().splitlines()[-1] == "demo: step 1/50 (elapsed 1m41s, ETA 49s)"
    clock.advance(1.0)
    p.update(2, "step 2/50")  # not due
    assert out.getvalue().count("\n") == 3
    clock.advance(3.0)
    p.update(5, "step 5/50", force=True)
    assert out.getvalue().splitlines()[-1] == "demo: step 5/50 (elapsed 1m45s, ETA 45s)"


def test_forced_lines_mark_meaningful_steps_in_a_pipe():
    clock, out = FakeClock(), io.StringIO()
    p = Progress("train", total=2, stream=out, interval=15.0, clock=clock)
    p.update(0, "iter 0 sampling")
    for _ in range(10):  # polls every 0.5 s within one phase: no new line
        clock.advance(0.5)
        p.update(0, "iter 0 sampling 3/20")
    p.update(0, "iter 0 iterating", force=True)
    assert [ln.split(" (")[0] for ln in out.getvalue().splitlines()] == ["train: iter 0 sampling",
                                                                       "train: iter 0 iterating"]


def test_terminal_gets_one_live_line_redrawn_in_place():
    clock, out = FakeClock(), Tty()
    p = Progress("work", total=10, stream=out, refresh=0.25, clock=clock)
    assert p.live
    for step in range(1, 11):
        clock.advance(0.1)
        p.update(step, f"step {step}/10")
    text = out.getvalue()
    assert "\n" not in text  # still one line on the screen
    draws = text.split("\r")[1:]
    assert len(draws) == 4  # the first update, then at most every 0.25 s (steps 4, 7, 10)
    assert all(d.endswith("\x1b[K") for d in draws)  # each clears what a longer line left
    p.note("a message")  # its own line: the live line is ended first
    assert out.getvalue().endswith("\x1b[K\na message\n")
    p.finish("done it")
    assert out.getvalue().endswith("\rwork: done it (elapsed 1s, done)\x1b[K\n")


def test_terminal_detection_and_close():
    assert not Progress("x", stream=io.StringIO()).live
    tty = Tty()
    p = Progress("x", stream=tty, clock=FakeClock())
    assert p.live
    p.update(1, "one")
    p.close()  # an error path: the line ends, no final line, nothing after
    p.update(2, "two")
    assert tty.getvalue().endswith("\x1b[K\n") and "two" not in tty.getvalue()


def test_heartbeat_repeats_the_state_when_no_update_comes():
    out = io.StringIO()
    p = Progress("s-step", total=4, stream=out, interval=0.05)
    p.update(1, "iteration 2/4, iterating")
    with p.heartbeat(every=0.01):
        deadline = time.monotonic() + 5.0
        while out.getvalue().count("\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all(ln.startswith("s-step: iteration 2/4, iterating (elapsed") for ln in lines)


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert interval_from_env() == 15.0
    monkeypatch.setenv(INTERVAL_ENV, "2.5")
    assert interval_from_env() == 2.5 and Progress("x", stream=io.StringIO()).interval == 2.5
    for bad in ("soon", "0", "-3", "nan", "1e9"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=f"{INTERVAL_ENV}={bad!r}"):
            interval_from_env()


def test_durations():
    assert [format_duration(s) for s in (0, 59.4, 61, 3599, 3720, float("nan"), -1)] == [
        "0s", "59s", "1m01s", "59m59s", "1h02m", "?", "?"]


def test_a_real_pipe_is_not_a_terminal():
    """isatty() of a child's stdout when it is a pipe: plain lines, no carriage return."""
    code = ("from gps_core.progress import Progress\n"
            "p = Progress('child', total=3, interval=1000)\n"
            "[p.update(i, f'step {i}/3') for i in range(1, 4)]\n"
            "p.finish()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stdout
    assert [ln.split(" (")[0] for ln in r.stdout.splitlines()] == ["child: step 1/3", "child: step 3/3"]


def test_a_live_line_fits_the_terminal_and_keeps_its_times(monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")  # shutil.get_terminal_size reads it first
    out = Tty()
    p = Progress("train", total=2, stream=out, clock=FakeClock())
    p.update(0, "iter 0 [####                ] 4/24 sampling cost - success -")
    drawn = out.getvalue().split("\r")[-1].removesuffix("\x1b[K")
    assert len(drawn) == 49 and drawn.endswith("… (elapsed 0s, ETA ?)") and drawn.startswith("train: iter 0")
