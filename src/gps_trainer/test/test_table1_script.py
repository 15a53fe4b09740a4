"""scripts/table1.sh end to end with TABLE1_BUDGET=smoke on reach (real pose pretraining, trajectory
optimization, MDGPS runs and evaluations, tiny budgets) in a temporary folder: the summary table, the
phases side by side in the order their inputs allow, a progress line per running job, a second run that
skips everything and prints the same summary, a phase alone taking both cores (two processes, the same
numbers), a failing phase stopping the script, and the rerun, one job at a time, giving the same results;
a folder in use and bad settings refused before any work. The summary's arithmetic (union of intervals, missing files) is checked apart."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gps_trainer.paper.table1_summary import SETS, merged_length, summary_markdown

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "table1.sh"
PHASES = ("pose", "controllers", "state", "state_oracle", "pose_features", "end_to_end", "pose_prediction")
NEEDS = {"pose": (), "controllers": (), "state": ("controllers",), "state_oracle": ("state",),
         "end_to_end": ("pose", "controllers"), "pose_features": ("pose", "controllers"),
         "pose_prediction": ("pose", "state")}
METHODS = ("end_to_end", "pose_features", "pose_prediction", "state_oracle")
HEARTBEAT_S = 1  # the smoke runs' progress-line interval


def table1(out: Path, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``bash scripts/table1.sh`` with this interpreter's environment (setup.sh with this venv)."""
    full = {**os.environ, "GPS_VENV": sys.prefix, "TABLE1_BUDGET": "smoke", "TABLE1_HEARTBEAT_S": str(HEARTBEAT_S), **env}
    return subprocess.run(["bash", str(SCRIPT), *args, str(out)], capture_output=True, text=True, timeout=timeout,
                          env=full, cwd=ROOT)


def summary_of(stdout: str) -> str:
    """The summary the script printed: from its title to the next log line."""
    text = stdout[stdout.index("# Table I"):]
    return text[:text.index("\n[") + 1]


def records(out: Path) -> dict[str, dict]:
    return {p: json.loads((out / ".table1" / f"{p}.done").read_text()) for p in PHASES}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    pytest.importorskip("gps_sim")
    out = tmp_path_factory.mktemp("table1") / "reach"
    t0 = time.monotonic()
    r = table1(out, "reach")
    if r.returncode != 0 and "EGL" in r.stdout + r.stderr and not (out / ".table1" / "pose.done").exists():
        pytest.skip("simulator rendering unavailable")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    return out, r, time.monotonic() - t0


@pytest.mark.slow
def test_smoke_run_writes_every_methods_rates_and_runs_phases_side_by_side(smoke_run):
    out, r, _ = smoke_run
    summary = (out / "summary.md").read_text()
    assert summary_of(r.stdout) == summary
    for method in METHODS:
        ev = json.loads((out / f"eval_{method}.json").read_text())
        assert [ev["sets"][s]["trials"] for s in SETS] == [1, 1, 1], method
    rows = [ln for ln in summary.splitlines() if ln.startswith("| reach |")]
    assert len(rows) == len(METHODS) + 1  # a row per method, and the wall times
    for row in rows[:-1]:
        assert len(re.findall(r"\| [01]/1 \((0|100)%\)", row)) == 3, row
    assert not re.search(r"missing|unreadable|not run|not evaluated", summary)

    rec = records(out)
    for phase, needs in NEEDS.items():  # no phase started before its inputs were finished
        for need in needs:
            assert rec[phase]["start"] >= rec[need]["end"], (phase, need)
    # the two phases that need nothing ran at the same time, and never more than two at once
    assert rec["pose"]["start"] < rec["controllers"]["end"] and rec["controllers"]["start"] < rec["pose"]["end"]
    events = sorted([(v["start"], 1) for v in rec.values()] + [(v["end"], -1) for v in rec.values()])
    running, most = 0, 0
    for _, step in events:
        running += step
        most = max(most, running)
    assert most == 2
    wall = re.search(r"^\| reach \| (?:(\d+)m)?(\d+)s \|", summary, re.M)
    assert wall, summary
    union = merged_length([(v["start"], v["end"]) for v in rec.values()])
    assert int(wall.group(1) or 0) * 60 + int(wall.group(2)) == round(union)
    assert union < sum(v["end"] - v["start"] for v in rec.values())  # overlap: less than the sum
    # a progress line per running job, naming the task, the phase and the time: the lines come on a clock, every
    # HEARTBEAT_S, so a job is sure of one only if it runs longer than that plus the scheduler's 1 s poll (on an
    # idle machine the first two phases ended within the first 5 s interval and had none)
    beats = re.findall(r"^\[\d\d:\d\d:\d\d\] table1 reach: (\w+) running for \d+m\d\ds \(all: ", r.stdout, re.M)
    long_jobs = {p for p, v in rec.items() if v["end"] - v["start"] > HEARTBEAT_S + 2}
    assert long_jobs and long_jobs <= set(beats), (long_jobs, r.stdout)
    for phase in PHASES:
        assert f"table1 reach: {phase} starts" in r.stdout and f"table1 reach: {phase} done in" in r.stdout
        assert (out / "logs" / f"{phase}.log").stat().st_size > 0


@pytest.mark.slow
def test_a_second_run_skips_every_phase_and_prints_the_same_summary(smoke_run):
    out, first, _ = smoke_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "summary.md"}
    r = table1(out, "reach", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    for phase in PHASES:
        assert f"table1 reach: {phase} done before, skipped" in r.stdout
    assert "starts" not in r.stdout
    assert summary_of(r.stdout) == summary_of(first.stdout)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "summary.md"}
    assert after == before  # nothing rerun, nothing rewritten
    # the results of one budget only: the full budget refuses a smoke run's folder
    r = table1(out, "reach", timeout=120, TABLE1_BUDGET="full")
    assert r.returncode == 2 and "holds a run with TABLE1_BUDGET=smoke, not full" in r.stderr


@pytest.mark.slow
def test_a_phase_alone_takes_both_cores_and_computes_the_same(smoke_run):
    """With nothing beside it and nothing else ready, a job runs its trials in two processes: the same
    evaluation as the one-process job of the first run."""
    out, _, _ = smoke_run
    before = json.loads((out / "eval_state_oracle.json").read_text())
    (out / "eval_state_oracle.json").unlink()
    (out / ".table1" / "state_oracle.done").unlink()
    r = table1(out, "reach", timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    assert "table1 reach: state_oracle starts (2 processes)" in r.stdout
    assert records(out)["state_oracle"]["workers"] == 2
    after = json.loads((out / "eval_state_oracle.json").read_text())
    assert after["sets"] == before["sets"]
    assert "--workers 2" in after["command"] and "--workers 1" in before["command"]


@pytest.mark.slow
def test_a_failing_phase_stops_the_run_and_the_rerun_one_job_at_a_time_gives_the_same_numbers(smoke_run, tmp_path):
    """A phase that fails ends the script and the job beside it (pose pretraining, stopped half-way); the
    same command again, one job at a time, starts the stopped phase afresh and finishes. Where and beside
    what a phase runs must not change what it computes (each phase is its own process with seeded streams
    and one torch thread): every number equals the two-at-a-time run's bit for bit."""
    from safetensors.numpy import load_file

    par = smoke_run[0]
    out = tmp_path / "reach"
    out.mkdir()
    (out / "controllers").write_text("not a run folder")  # the controllers' run cannot start
    r = table1(out, "reach", timeout=300)
    assert r.returncode == 1, r.stdout[-3000:]
    assert re.search(r"table1 reach: controllers FAILED \(exit [1-9]\d*\); the last lines of .*controllers\.log:",
                     r.stdout), r.stdout
    tail = r.stdout[r.stdout.index("controllers FAILED"):]
    assert re.search(r"^    .*Error", tail, re.M), tail  # the log's tail, indented
    assert not (out / ".table1" / "controllers.done").exists()
    # The job beside it (pose pretraining) is stopped, unless it finished first: a smoke pretraining takes
    # about as long as the failing phase takes to start, so on a loaded machine either may end first. Either
    # way no process of the run is left (the script ends them; allow a loaded machine a few seconds).
    # A process that inherited the folder's lock (a worker whose arguments do not name the folder) may
    # outlive the ps check by a moment: the rerun needs the lock free, so wait for that too.
    deadline = time.monotonic() + 10
    while str(out) in (ps := subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout):
        assert time.monotonic() < deadline, ps
        time.sleep(0.5)
    with open(out / ".table1" / "lock", "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(lock, fcntl.LOCK_UN)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "the stopped run still holds its folder's lock"
                time.sleep(0.5)

    (out / "controllers").unlink()
    r = table1(out, "reach", TABLE1_SLOTS="1")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    rec = records(out)
    order = sorted(PHASES, key=lambda p: rec[p]["start"])
    for a, b in zip(order, order[1:], strict=False):
        assert rec[b]["start"] >= rec[a]["end"], (a, b)  # one at a time
    for method in METHODS:
        par_sets = json.loads((par / f"eval_{method}.json").read_text())["sets"]
        seq_sets = json.loads((out / f"eval_{method}.json").read_text())["sets"]
        assert seq_sets == par_sets, method
    for f in ("pose_pretrain/vision.safetensors", "gps_mdgps_state/policy.safetensors",
              "gps_pose_features/policy.safetensors", "gps_end_to_end/policy.safetensors"):
        a, b = load_file(par / f), load_file(out / f)
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), f


@pytest.mark.slow
def test_the_training_seed_reaches_every_training_phase_and_a_folder_keeps_its_seed(tmp_path):
    """TABLE1_SEED seeds pose pretraining, the controllers, the state policy and its initialization; a
    folder started with one seed refuses another, and one from before the setting (seed 0) any other."""
    pytest.importorskip("gps_sim")
    out = tmp_path / "reach"

    def phase(name: str) -> None:
        r = subprocess.run(["bash", str(SCRIPT), "--phase", name, "reach", str(out), "1"], capture_output=True,
                           text=True, timeout=600, cwd=ROOT,
                           env={**os.environ, "GPS_VENV": sys.prefix, "TABLE1_BUDGET": "smoke", "TABLE1_SEED": "3"})
        if r.returncode != 0 and "EGL" in r.stdout + r.stderr:
            pytest.skip("simulator rendering unavailable")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    for name in ("pose", "controllers", "state"):
        phase(name)
    assert json.loads((out / "pose_pretrain" / "vision.metrics.json").read_text())["seed"] == 3
    assert json.loads((out / "controllers" / "experiment.json").read_text())["seed"] == 3
    state = json.loads((out / "gps_mdgps_state" / "experiment.json").read_text())
    assert state["seed"] == 3 and state["algorithm"]["policy_seed"] == 3

    (out / ".table1").mkdir()
    (out / ".table1" / "seed").write_text("3\n")
    r = table1(out, "reach", timeout=120, TABLE1_SEED="4")
    assert r.returncode == 2 and "holds a run with TABLE1_SEED=3, not 4" in r.stderr, r.stderr
    (out / ".table1" / "seed").unlink()
    (out / ".table1" / "pose.done").write_text("{}")
    r = table1(out, "reach", timeout=120, TABLE1_SEED="4")
    assert r.returncode == 2 and "from before TABLE1_SEED (seed 0), not 4" in r.stderr, r.stderr


def test_a_folder_in_use_and_a_bad_setting_are_refused_before_any_work(tmp_path):
    out = tmp_path / "reach"
    (out / ".table1").mkdir(parents=True)
    holder = subprocess.Popen(["flock", str(out / ".table1" / "lock"), "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the holder has the lock
            if subprocess.run(["flock", "-n", str(out / ".table1" / "lock"), "true"]).returncode != 0:
                break
            time.sleep(0.1)
        r = table1(out, "reach", timeout=120)
        assert r.returncode == 2 and "is in use by another table1.sh" in r.stderr, r.stderr
    finally:
        holder.kill()
        holder.wait()
    for env, message in ((dict(TABLE1_BUDGET="quick"), "TABLE1_BUDGET=quick: expected full or smoke"),
                         (dict(TABLE1_SLOTS="0"), "TABLE1_SLOTS=0: expected a positive integer"),
                         (dict(TABLE1_HEARTBEAT_S="600"), "TABLE1_HEARTBEAT_S=600: expected whole seconds in 1..60"),
                         (dict(TABLE1_SEED="01"), "TABLE1_SEED=01: expected a whole number in 0..999999999"),
                         (dict(TABLE1_SEED="-1"), "TABLE1_SEED=-1: expected a whole number in 0..999999999")):
        r = table1(out, "reach", timeout=120, **env)
        assert r.returncode == 2 and message in r.stderr, (env, r.stderr)
    r = table1(out, "reach_grid", timeout=120)
    assert r.returncode == 2 and "no Table I recipe for task 'reach_grid'" in r.stderr
    assert sorted(p.name for p in out.rglob("*")) == [".table1", "lock"]  # nothing started, nothing written


def test_the_summary_counts_overlapping_phases_once_and_names_missing_results(tmp_path):
    assert merged_length([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17
    assert merged_length([]) == 0
    d = tmp_path / "reach"
    (d / ".table1").mkdir(parents=True)
    for phase, (start, end) in {"pose": (100, 400), "controllers": (100, 200), "state": (200, 300)}.items():
        (d / ".table1" / f"{phase}.done").write_text(json.dumps({"phase": phase, "start": start, "end": end}))
    (d / ".table1" / "end_to_end.done").write_text("{truncated")
    sets = {s: {"successes": k, "trials": 4} for s, k in zip(SETS, (4, 2, 0), strict=True)}
    (d / "eval_end_to_end.json").write_text(json.dumps({"sets": sets}))
    (d / "eval_pose_features.json").write_text("{")
    text = summary_markdown([("reach", d)], "smoke")
    assert "| reach | end-to-end | 4/4 (100%) | 2/4 (50%) | 0/4 (0%) |" in text
    assert "| reach | pose features | unreadable | unreadable | unreadable |" in text
    assert "| reach | pose prediction | missing | missing | missing |" in text
    # 300 s of wall (pose beside controllers then state), not the 500 s of their sum
    assert "| reach | 5m00s | 5m00s | 1m40s | 1m40s | not run | not run | not run | not run |" in text
