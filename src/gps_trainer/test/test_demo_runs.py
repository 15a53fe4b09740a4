"""The demo starts a new run each time instead of extending the last one (the trainer resumes whatever run
its output directory holds): a finished run is set aside, a running stack's directory is left alone."""

import json
import os

from gps_trainer.cli import PIDS, _proc_identity, _set_aside_previous_run


def _run(path, marker):
    (path / "checkpoints").mkdir(parents=True)
    (path / "experiment.json").write_text(json.dumps({"marker": marker}))


def test_a_finished_run_is_set_aside_and_replaces_the_older_one(tmp_path):
    phase = tmp_path / "controllers"
    assert _set_aside_previous_run(phase) is None  # nothing there yet
    phase.mkdir()
    (phase / "logs").mkdir()
    assert _set_aside_previous_run(phase) is None and phase.exists()  # logs alone are no run
    (phase / "logs").rmdir()
    _run(phase, "first")
    previous = _set_aside_previous_run(phase)
    assert previous == tmp_path / "controllers.previous" and not phase.exists()
    assert json.loads((previous / "experiment.json").read_text()) == {"marker": "first"}
    _run(phase, "second")
    assert _set_aside_previous_run(phase) == previous and not phase.exists()
    assert json.loads((previous / "experiment.json").read_text()) == {"marker": "second"}


def test_a_directory_whose_stack_still_runs_is_left_alone(tmp_path):
    phase = tmp_path / "controllers"
    _run(phase, "running")
    me = _proc_identity(os.getpid())  # this test process stands in for a node `gps up` started
    (phase / PIDS).write_text(json.dumps([{"role": "trainer", "pid": os.getpid(), **me}]))
    assert _set_aside_previous_run(phase) is None and (phase / "experiment.json").exists()
    # a stale pids file (the process is gone or another) does not keep the run in place
    (phase / PIDS).write_text(json.dumps([{"role": "trainer", "pid": os.getpid(), "cmdline": ["x"],
                                           "start_ticks": me["start_ticks"]}]))
    assert _set_aside_previous_run(phase) == tmp_path / "controllers.previous"
