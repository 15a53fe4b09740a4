"""Progress of long work (pose pretraining, the paper's baselines, `gps demo` / `gps train`): one line
that says what runs, how far it got, the time spent and the time left (ETA).

On a terminal the line is redrawn in place (carriage return, at most every ``refresh`` s). Anywhere
else (a log file, a pipe, CI) carriage returns would make one endless line, so the report is plain
lines: one at the start, one when the first unit of work is done (the first ETA), one per meaningful
step the caller marks (``force=True``: a new phase, an iteration done), one at the end, and between
them one at most every ``interval`` s (environment
variable ``GPS_PROGRESS_INTERVAL``, default 15 s). Work whose updates come rarely (an S-step of
several minutes between two phase changes) runs a :meth:`Progress.heartbeat`, which repeats the last
state with the elapsed time at that pace, so a log never stays silent for longer than ``interval``.

    progress = Progress("pose pretraining", total=600)
    for step in range(1, 601):
        ...
        progress.update(step, f"step {step}/600 loss {loss:.4g}")
    progress.finish("test error 1.2 cm")

The ETA is the rate since the start (or the last :meth:`restart`) extrapolated to ``total``.
rclpy-free; the clock and the stream are injectable (tests use a fake clock and a StringIO).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

INTERVAL_ENV = "GPS_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 15.0
DEFAULT_REFRESH_S = 0.25


def interval_from_env(default: float = DEFAULT_INTERVAL_S) -> float:
    """Seconds between plain progress lines: ``$GPS_PROGRESS_INTERVAL`` or ``default``; ValueError naming
    the variable and the value when it is not a number in (0, 3600]."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 3600.0:
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: expected seconds in (0, 3600]")
    return value


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``?`` when unknown (NaN, infinite, negative)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """A progress report on ``stream`` (default: sys.stdout). ``live``: redraw one line (None: exactly when
    the stream is a terminal). ``total``: units of work (None: no ETA). Thread-safe."""

    def __init__(self, label: str, total: float | None = None, *, stream: TextIO | None = None,
                 live: bool | None = None, interval: float | None = None, refresh: float = DEFAULT_REFRESH_S,
                 clock: Callable[[], float] = time.monotonic):
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stdout
        self.live = _is_terminal(self.stream) if live is None else bool(live)
        self.interval = interval_from_env() if interval is None else float(interval)
        self.refresh = float(refresh)
        self.clock = clock
        self._lock = threading.RLock()
        self._started = clock()
        self._rate_origin = (self._started, 0.0)  # (time, done) the ETA's rate is measured from
        self._done = 0.0
        self._done_at = self._started
        self._text = ""
        self._last_emit: float | None = None
        self._live_width = 0  # characters of the live line on screen (0: none drawn)
        self._finished = False

    # ------------------------------------------------------------------ what callers use
    def update(self, done: float | None = None, text: str | None = None, *, total: float | None = None,
               force: bool = False) -> None:
        """Record progress (``done`` units of ``total``) and what runs (``text``); emit a line when due.
        ``force``: a meaningful step (a new phase, an iteration finished): always a line."""
        with self._lock:
            now = self.clock()
            if total is not None:
                self.total = total
            if done is not None:
                # the first unit of a phase gives its first ETA: worth a line of its own
                force = force or (self._done <= self._rate_origin[1] < float(done))
                self._done, self._done_at = float(done), now
            if text is not None:
                self._text = text
            self._maybe_emit(now, force)

    def restart(self, total: float | None = None, text: str = "") -> None:
        """A new phase with its own units: the ETA's rate is measured afresh (a line is emitted)."""
        with self._lock:
            now = self.clock()
            self.total, self._rate_origin, self._done, self._done_at = total, (now, 0.0), 0.0, now
            self._text = text
            self._maybe_emit(now, force=True)

    def poll(self) -> None:
        """Emit the last state again when a line is due (the heartbeat's call)."""
        with self._lock:
            if not self._finished:
                self._maybe_emit(self.clock(), False)

    def note(self, text: str) -> None:
        """A line of its own (ends a live line first)."""
        with self._lock:
            self._end_live_line()
            self.stream.write(text + "\n")
            self.stream.flush()

    def finish(self, text: str | None = None) -> None:
        """The final line (always emitted; a live line is ended with a newline)."""
        with self._lock:
            if self._finished:
                return
            if text is not None:
                self._text = text
            self._emit(self.clock(), final=True)
            self._end_live_line()
            self._finished = True

    def close(self) -> None:
        """Stop reporting without a final line (an error path: a live line is ended so the error message
        starts on a line of its own)."""
        with self._lock:
            self._end_live_line()
            self._finished = True

    @contextlib.contextmanager
    def heartbeat(self, every: float = 1.0) -> Iterator[Progress]:
        """While the block runs, a daemon thread calls :meth:`poll` every ``every`` s."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                self.poll()

        thread = threading.Thread(target=beat, name=f"progress:{self.label}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    # ------------------------------------------------------------------ figures
    def elapsed(self, now: float | None = None) -> float:
        return (self.clock() if now is None else now) - self._started

    def eta(self, now: float | None = None) -> float:
        """Seconds left at the rate since the rate origin; NaN before any unit is done or without a total."""
        now = self.clock() if now is None else now
        if self.total is None:
            return math.nan
        t0, done0 = self._rate_origin
        units, spent = self._done - done0, self._done_at - t0
        if units <= 0 or spent <= 0:
            return math.nan
        left = (self.total - self._done) * spent / units - (now - self._done_at)
        return max(left, 0.0)

    def line(self, now: float | None = None, final: bool = False, width: int | None = None) -> str:
        """The report: ``label: text (elapsed .., ETA ..)``; with ``width``, the text is shortened to fit
        (the times always show)."""
        now = self.clock() if now is None else now
        head = f"{self.label}: {self._text}" if self._text else self.label
        tail = f"elapsed {format_duration(self.elapsed(now))}"
        if final:
            tail += ", done"
        elif self.total is not None:
            tail += f", ETA {format_duration(self.eta(now))}"
        tail = f" ({tail})"
        if width is not None and len(head) + len(tail) > width:
            head = head[:max(width - len(tail) - 1, 0)] + "…"
        return head + tail

    # ------------------------------------------------------------------ output
    def _maybe_emit(self, now: float, force: bool) -> None:
        if self._finished:
            return
        due = self.refresh if self.live else self.interval
        if force or self._last_emit is None or now - self._last_emit >= due:
            self._emit(now)

    def _emit(self, now: float, final: bool = False) -> None:
        if self.live:  # a line longer than the terminal would wrap, and \r only returns to its last row
            text = self.line(now, final, width=max(shutil.get_terminal_size((100, 24)).columns - 1, 20))
            # \r back to the line's start, \x1b[K clears what a longer previous line left behind
            self.stream.write("\r" + text + "\x1b[K")
            self._live_width = len(text)
        else:
            text = self.line(now, final)
            self.stream.write(text + "\n")
        self.stream.flush()
        self._last_emit = now

    def _end_live_line(self) -> None:
        if self.live and self._live_width:
            self.stream.write("\n")
            self.stream.flush()
            self._live_width = 0
