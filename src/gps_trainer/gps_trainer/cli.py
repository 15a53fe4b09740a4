"""``gps``: run the GPS stack without ``ros2 launch`` (same nodes, same parameter files).

    gps up [--robots 2] [--output-dir runs/reach] [--experiment config/experiments/reach_traj_opt.yaml]
    gps up --part robot --namespace robot1   # robots and trainer on separate machines (docs/networking.md):
    gps up --part trainer --robots 2         #   a robot host's nodes; the trainer host's trainer alone
    gps train --iterations 5          # start_iteration + live progress from /gps/status
    gps status                        # get_status as JSON
    gps down                          # stop what `gps up` started (pids in <output-dir>/pids.json)
    gps demo                          # local controllers, then the visuomotor policy from them; success
                                      # rate + image paths (each phase: up -> train -> down)
    gps eval --policy runs/p3/policy.safetensors --task reach --trials 20 --seed 0
                                      # success per condition set (train / spatial / visual test), JSON
    gps eval --policy ... --through-nodes   # the same trials run by the stack `gps up` started (same numbers)
    gps report --results runs/results --out docs/results.md   # tables, plots, GIF, how to reproduce

With a ROS distro, ``ros2 launch launch/sim.launch.py`` + ``ros2 service call`` do the same.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _repo_root() -> Path:
    # config/ of a checkout or of the installed share/gps_trainer (gps_core.tasks.repo_root); `gps --help`
    # must work even where neither is found, so fall back to the working directory.
    from gps_core.tasks import repo_root

    try:
        return repo_root()
    except FileNotFoundError:
        return Path.cwd()


ROOT = _repo_root()
PIDS = "pids.json"


def _proc_identity(pid: int) -> dict | None:
    """The command line and start time (clock ticks after boot, /proc/<pid>/stat field 22) of a running
    process; None if it is gone. Together they tell a process from a later one that reused its pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": field 3 onwards
    return {"cmdline": [c.decode(errors="replace") for c in cmdline if c], "start_ticks": int(fields[19])}


def _ours(entry: dict) -> bool:
    """True if the process recorded in pids.json still runs as the very process `gps up` started."""
    now = _proc_identity(int(entry["pid"]))
    if now is None or now.get("start_ticks") != entry.get("start_ticks") or now["cmdline"] != entry.get("cmdline"):
        return False
    try:  # a zombie child (exited, not yet reaped) is not running
        return Path(f"/proc/{int(entry['pid'])}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _read_pids(path: Path) -> list[dict]:
    """pids.json as written by `gps up`; ValueError naming the file and the problem otherwise."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a pids file written by `gps up` ({exc})") from exc
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("pid"), int) and e["pid"] > 0
            and isinstance(e.get("cmdline"), list) and isinstance(e.get("start_ticks"), int) for e in entries):
        raise ValueError(f"{path}: not a pids file written by `gps up` (expected a list of "
                         "{pid, cmdline, start_ticks, ...} entries)")
    return entries


def _stack_specs(a, out: Path) -> list:
    from gps_core.bringup import sim_stack

    overrides = {}
    for key in ("init_controllers", "pretrained_vision"):  # start a GPS run from earlier phases' outputs
        if getattr(a, key, ""):
            overrides[key] = str(Path(getattr(a, key)).resolve())
    if getattr(a, "experiment_overrides", ()):  # key=value changes to the experiment (the trainer's `overrides`)
        overrides["overrides"] = list(a.experiment_overrides)
    resolve = lambda p: str((ROOT / p) if not Path(p).is_absolute() and (ROOT / p).exists() else Path(p).resolve())  # noqa: E731
    return sim_stack(robots=a.robots, namespace=getattr(a, "namespace", ""), part=getattr(a, "part", "all"),
                     experiment=str(Path(a.experiment).resolve()) if a.experiment else "",
                     output_dir=str(out), use_sim_time=not getattr(a, "wall_time", False),
                     sim_params=resolve(a.sim_params), controller_params=resolve(a.controller_params),
                     trainer_params=resolve(a.trainer_params), trainer_overrides=overrides,
                     publish_images=False if getattr(a, "no_images", False) else None)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until_answering(started: list[dict], timeout: float) -> dict | None:
    """Wait until every started node is in the ROS graph and the trainer, if started, answers get_status;
    return the first entry that died or never showed up (None when all answer)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from gps_msgs.srv import GetStatus

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("gps_up_probe", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    client = node.create_client(GetStatus, "/gps_trainer/get_status")
    pending = {(e["namespace"], e["name"]): e for e in started}
    answered = not any(e["role"] == "trainer" for e in started)  # a robot host (--part robot) has none
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for e in started:
                if not _ours(e):
                    e["failure"] = "exited before answering"
                    return e
            seen = {("/" + ns.strip("/"), name) for name, ns in node.get_node_names_and_namespaces()}
            for key in list(pending):
                if ("/" + key[0].strip("/"), key[1]) in seen:
                    del pending[key]
            if not pending and not answered and client.service_is_ready():
                fut = client.call_async(GetStatus.Request())
                executor.spin_until_future_complete(fut, timeout_sec=5.0)
                answered = fut.done() and fut.result() is not None
            if not pending and answered:
                return None
            executor.spin_once(timeout_sec=0.2)
        missing = next(iter(pending.values()), None) or next(e for e in started if e["role"] == "trainer")
        missing["failure"] = f"did not answer within {timeout:g} s"
        return missing
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def cmd_up(a) -> int:
    out = Path(a.output_dir).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    if (out / PIDS).exists():
        try:
            running = [e for e in _read_pids(out / PIDS) if _ours(e)]
        except ValueError as exc:
            print(f"{exc}; remove it if nothing of this run is running", file=sys.stderr)
            return 1
        if running:
            print(f"already up ({out / PIDS}); run `gps down` first", file=sys.stderr)
            return 1
    try:
        specs = _stack_specs(a, out)
    except (ValueError, FileNotFoundError) as exc:
        print(f"gps up: {exc}", file=sys.stderr)
        return 2
    started = []
    for spec in specs:
        cmd = [sys.executable, "-m", spec.module, *spec.ros_args()]
        log_path = out / "logs" / f"{spec.role}{'-' + spec.namespace if spec.namespace else ''}.log"
        with open(log_path, "a") as log:
            p = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # The start time is the fork's; the command line is the one exec'd (/proc may still show the
        # parent's, or nothing, for a moment after Popen returns).
        ident = _proc_identity(p.pid) or {"start_ticks": -1}
        started.append({"role": spec.role, "namespace": spec.namespace, "name": spec.name, "pid": p.pid,
                        "cmdline": cmd, "start_ticks": ident["start_ticks"], "log": str(log_path)})
    (out / PIDS).write_text(json.dumps(started, indent=2))
    names = ", ".join(s["role"] + (":" + s["namespace"] if s["namespace"] else "") for s in started)
    wait = getattr(a, "wait_timeout", 45.0)
    if wait > 0:
        failed = _wait_until_answering(started, wait)
        if failed is not None:
            print(f"gps up: {failed['role']}{':' + failed['namespace'] if failed['namespace'] else ''} "
                  f"(pid {failed['pid']}) {failed['failure']}; last lines of {failed['log']}:\n"
                  f"{_tail(Path(failed['log']))}\nstopping the rest (gps down)", file=sys.stderr)
            _stop(out / PIDS, started)
            return 1
    print(f"up: {len(started)} processes ({names}); logs in {out / 'logs'}")
    return 0


def _stop(path: Path, entries: list[dict], grace: float = 10.0) -> tuple[int, list[str]]:
    """SIGINT every process of `entries` that is verifiably ours (trainer first), SIGKILL after `grace` s;
    removes `path`. Returns (processes stopped, notes about entries left alone)."""
    notes = []
    ours = []
    for e in reversed(entries):
        if _ours(e):
            ours.append(e)
        elif _proc_identity(e["pid"]) is not None:
            notes.append(f"pid {e['pid']} ({e.get('role', '?')}) is now another process: left alone")
    for e in ours:
        try:
            os.kill(e["pid"], signal.SIGINT)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    for e in ours:
        while _ours(e) and time.monotonic() < deadline:
            try:
                os.waitpid(e["pid"], os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        if _ours(e):
            notes.append(f"pid {e['pid']} ({e.get('role', '?')}) ignored SIGINT for {grace:g} s: killed")
            os.kill(e["pid"], signal.SIGKILL)
    path.unlink(missing_ok=True)
    return len(ours), notes


def cmd_down(a) -> int:
    path = Path(a.output_dir) / PIDS
    if not path.exists():
        print("nothing to stop")
        return 0
    try:
        entries = _read_pids(path)
    except ValueError as exc:
        print(f"gps down: {exc}; nothing was signalled (remove the file once you have checked the processes)",
              file=sys.stderr)
        return 1
    stopped, notes = _stop(path, entries)
    for n in notes:
        print(f"gps down: {n}", file=sys.stderr)
    print(f"down: stopped {stopped} processes")
    return 0


class _Client:
    def __init__(self):
        import rclpy

        self.rclpy = rclpy
        rclpy.init()
        self.node = rclpy.create_node("gps_cli")

    def call(self, srv_type, name: str, request, timeout: float):
        client = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"{name} not available after {timeout:.0f} s (is the trainer up?)")
        future = client.call_async(request)
        self.rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        if not future.done():
            raise TimeoutError(f"{name}: no answer within {timeout:.0f} s")
        return future.result()

    def close(self):
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def _get_status(cli: _Client, timeout: float) -> dict:
    from gps_controller.conversions import status_to_dict
    from gps_msgs.srv import GetStatus

    return status_to_dict(cli.call(GetStatus, "/gps_trainer/get_status", GetStatus.Request(), timeout).status)


def cmd_status(a) -> int:
    cli = _Client()
    try:
        print(json.dumps(_get_status(cli, a.timeout), indent=2, default=str))
    finally:
        cli.close()
    return 0


def _progress_line(st: dict) -> str:
    done, exp = st["rollouts_received"], max(st["rollouts_expected"], 1)
    bar = "#" * int(20 * done / exp)
    costs = [c for c in st["cost_per_condition"] if math.isfinite(c)]
    cost = f"{sum(costs) / len(costs):.4g}" if costs else "-"
    sr = st["success_rate"]
    succ = f"{100 * sr:.0f}%" if math.isfinite(sr) else "-"
    return (f"iter {st['iteration']} [{bar:<20}] {done}/{exp} {st['phase']:<16} cost {cost} success {succ} "
            f"(done {st['iterations_completed']}, left {st['iterations_remaining']})")


def train(iterations: int, timeout: float, quiet: bool = False, label: str = "train") -> dict:
    """start_iteration, then the trainer's status as progress (gps_core.progress: a live line on a
    terminal; in a log or pipe a line per phase and at most every GPS_PROGRESS_INTERVAL s between) until
    ``iterations`` more are done. The ETA counts whole iterations."""
    from gps_controller.conversions import MAX_ITERATIONS_PER_REQUEST
    from gps_core.progress import Progress
    from gps_msgs.srv import StartIteration

    if isinstance(iterations, bool) or not isinstance(iterations, int) or \
            not 1 <= iterations <= MAX_ITERATIONS_PER_REQUEST:  # a uint32 field: a larger number would wrap
        raise ValueError(f"iterations: must be between 1 and {MAX_ITERATIONS_PER_REQUEST}, got {iterations!r}")
    cli = _Client()
    progress = None
    try:
        res = cli.call(StartIteration, "/gps_trainer/start_iteration", StartIteration.Request(iterations=iterations),
                       timeout)
        if not res.accepted:
            raise RuntimeError(f"start_iteration refused: {res.message}")
        target = res.first_iteration + iterations
        deadline = time.monotonic() + max(timeout, 60.0) * iterations * 10
        progress = None if quiet else Progress(label, total=iterations)
        step = None
        while True:
            st = _get_status(cli, timeout)
            if progress is not None:
                now = (st["iteration"], st["phase"])  # a new phase or iteration is worth a line of the log
                progress.update(max(st["iterations_completed"] - res.first_iteration, 0), _progress_line(st),
                                force=now != step)
                step = now
            if st["phase"] == "error":
                raise RuntimeError(f"trainer error: {st['message']}")
            if st["iterations_completed"] >= target and st["iterations_remaining"] == 0:
                if progress is not None:
                    progress.finish()
                return st
            if time.monotonic() > deadline:
                raise TimeoutError("training did not finish in time")
            time.sleep(0.5)
    finally:
        if progress is not None:
            progress.close()  # after an error: the live line ends before the message is printed
        cli.close()


def cmd_train(a) -> int:
    try:
        st = train(a.iterations, a.timeout)
    except (RuntimeError, TimeoutError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(json.dumps({k: st[k] for k in ("iterations_completed", "cost_per_condition", "success_rate")}))
    return 0


DEMO_CONTROLLERS_EXPERIMENT = "config/experiments/reach_grid_traj_opt.yaml"
DEMO_GPS_EXPERIMENT = "config/experiments/reach_grid_dr_mdgps_visual_demo.yaml"
DEMO_POSE_PRETRAIN = "config/policy/pose_pretrain_demo.yaml"
DEMO_SETS = ("spatial_test", "visual_test")


def _demo_phase(a, name: str, experiment: str, iterations: int, **trainer_params) -> dict:
    """One demo phase in its own output directory: up -> train -> down (always down)."""
    phase = argparse.Namespace(**{**vars(a), "output_dir": str(Path(a.output_dir) / name),
                                  "experiment": experiment, **trainer_params})
    print(f"== {name}: {iterations} iterations of {experiment} -> {phase.output_dir}", flush=True)
    t0 = time.monotonic()
    if cmd_up(phase) != 0:
        raise RuntimeError(f"{name}: could not start the nodes")
    try:
        st = train(iterations, a.timeout, label=name)
    finally:
        cmd_down(phase)
    st["wall_s"] = time.monotonic() - t0
    return st


class _DemoVision:
    """Phase 0 (paper Sec. V), pose pretraining of the CNN's conv layers on rendered images with random
    scenes, in its own process (one torch thread) beside phase 1, which runs on the other core. The conv
    sizes are the GPS experiment's; <out>/vision/vision.safetensors is reused if present."""

    def __init__(self, a, out: Path):
        from gps_trainer.config import load_experiment

        self.dir = out / "vision"
        self.weights = self.dir / "vision.safetensors"
        self.log = self.dir / "pretrain.log"
        self.proc: subprocess.Popen | None = None
        self.t0 = time.monotonic()
        if self.weights.exists():
            print(f"== vision: reusing {self.weights}", flush=True)
            return
        cfg = load_experiment(ROOT / a.gps_experiment)
        net = {k: v for k, v in cfg.algorithm.policy.get("net", {}).items() if k.startswith("conv_")}
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "gps_trainer.procedure", "pose", "--config", str(ROOT / DEMO_POSE_PRETRAIN),
               "--out", str(self.dir), "--threads", "1", f"iterations={a.vision_iterations}",
               f"image_size={cfg.image_size}", f"seed={a.seed}", f"net={json.dumps(net)}"]
        print(f"== vision: pose pretraining of the conv layers ({a.vision_iterations} steps) beside the "
              f"controllers, log {self.log}", flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "GPS_PROGRESS_INTERVAL": "30"}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def _last_line(self) -> str:
        try:
            lines = [x for x in self.log.read_text(errors="replace").splitlines() if "pose pretraining" in x]
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""

    def wait(self) -> str:
        """The weights, once the process ends (its progress line every 30 s meanwhile)."""
        if self.proc is not None:
            while True:
                try:
                    rc = self.proc.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    print(f"vision: {self._last_line()}", flush=True)
            if rc != 0 or not self.weights.exists():
                tail = self.log.read_text(errors="replace").splitlines()[-5:] if self.log.exists() else []
                raise RuntimeError(f"vision: pose pretraining failed (exit {rc}):\n" + "\n".join(tail))
            try:
                m = json.loads((self.dir / "vision.metrics.json").read_text())
                print(f"vision: target position error {m['test_error_cm']:.1f} cm on held-out images with random "
                      f"scenes (mean-guess baseline {m['baseline_mean_error_cm']:.1f} cm), "
                      f"{time.monotonic() - self.t0:.0f} s", flush=True)
            except (OSError, ValueError, KeyError):
                pass
        return str(self.weights)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def cmd_demo(a) -> int:
    """The README's main job: (0) pose-pretrained conv layers, beside (1) trajectory-only local
    controllers on the full state at 9 target positions, then (2) the visuomotor CNN by MDGPS from both
    with a random distractor scene in every sample, (1) and (2) through the ROS nodes; then the CNN alone
    at new target positions and in new distractor scenes (reach's spatial and visual test sets)."""
    out = Path(a.output_dir).resolve()
    t0 = time.monotonic()
    vision = None
    try:
        if not a.pretrained_vision and a.vision_iterations > 0:
            vision = _DemoVision(a, out)
        seeds = [f"seed={a.seed}"]  # the controllers' noise and init; the policy's init too in phase 2
        p1 = _demo_phase(a, "controllers", a.experiment or DEMO_CONTROLLERS_EXPERIMENT, a.iterations,
                         pretrained_vision="", experiment_overrides=seeds, no_images=True)
        print(f"controllers: success {100 * p1['success_rate']:.0f}% (noise-free local controllers), "
              f"{100 * p1['sample_success_rate']:.0f}% of the noisy samples, {p1['wall_s']:.0f} s")
        weights = a.pretrained_vision or (vision.wait() if vision else "")
        p2 = _demo_phase(a, "visuomotor", a.gps_experiment, a.gps_iterations,
                         init_controllers=str(out / "controllers"), pretrained_vision=weights,
                         experiment_overrides=[*seeds, f"algorithm.policy_seed={a.seed}"], no_images=False)
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if vision is not None:
            vision.stop()
    print(f"visuomotor policy: success rate {100 * p2['success_rate']:.0f}% (policy alone, no noise, through the "
          f"nodes), policy cost {p2['policy_cost']:.4g}, {p2['wall_s']:.0f} s")
    policy, kept = _demo_policy(out / "visuomotor")
    sr = float(kept.get("success_rate", math.nan))
    generalization = _demo_generalization(policy, tuple(a.demo_sets), a.demo_trials, a.demo_workers)
    for p in sorted(out.glob("*/*.png")):
        print(f"image: {p}")
    print(f"policy: {policy} (iteration {kept.get('iteration', '-')} of {a.gps_iterations}: the most successes "
          f"at the training positions)")
    print(f"success rate: {100 * sr:.0f}% at the 9 training positions (through the nodes)" if math.isfinite(sr)
          else "success rate: -")
    print(generalization)
    print(f"evaluate it fully (Table I protocol): gps eval --policy {policy} --task reach")
    print(f"demo wall time: {time.monotonic() - t0:.0f} s")
    return 0


def _demo_policy(run_dir: Path) -> tuple[Path, dict]:
    """The policy the demo keeps and its metrics row. MDGPS can lose at iteration k what it had at k-1
    (issue 21's drift: a seed of this demo fell from 8 of 9 training positions to 4), so the iteration
    whose CNN succeeded most often at the training positions through the nodes, the later of equals (it
    has trained more): a rule that sees the training conditions only."""
    from gps_trainer.paper.baselines import select_policy
    from gps_trainer.run_dir import read_run

    try:
        policy = select_policy(run_dir, "best", later_of_equals=True)
    except FileNotFoundError:
        return run_dir / "policy.safetensors", {}
    rows = {int(r["iteration"]): r for r in read_run(run_dir)[1]}
    return policy, rows[int(policy.parent.name.removeprefix("iter_"))]


def _demo_generalization(policy: Path, sets: tuple[str, ...], trials: int | None, workers: int) -> str:
    """The CNN alone at target positions never trained on and in distractor scenes never seen (reach's
    spatial and visual test sets, the task's trial counts by default), on the simulation API."""
    import torch

    from gps_core.progress import Progress
    from gps_trainer.paper.evaluation import evaluate_policy

    torch.set_num_threads(1)
    progress = Progress("generalization")
    res = evaluate_policy(str(policy), "reach", sets, trials, 0, progress=progress,
                          workers=workers)
    progress.finish(f"{sum(r.trials for r in res.sets.values())} trials")
    what = {"spatial_test": "new target positions", "visual_test": "new distractor scenes",
            "validation": "new target positions", "visual_validation": "new distractor scenes"}
    parts = [f"{name} {r.successes}/{r.trials} ({100 * r.rate:.0f}%, {what.get(name, name)})"
             for name, r in res.sets.items()]
    return "CNN alone, simulation API: " + ", ".join(parts)


def cmd_eval(a) -> int:
    """Success rates of a saved policy per condition set, table + JSON: on the simulation API
    (gps_trainer.paper.evaluation) or, with --through-nodes, by the running controller + lockstep sim
    (gps_trainer.paper.node_evaluation; same trials, same numbers)."""
    import shlex

    import torch

    from gps_core.progress import Progress
    from gps_trainer.paper.evaluation import evaluate_policy, format_table

    torch.set_num_threads(max(1, a.threads))
    if a.robustness:
        from gps_trainer.paper.robustness import robustness_sets

        if a.sets is not None:
            print("--robustness evaluates its own sets (every out-of-distribution family at every strength); "
                  "drop --sets", file=sys.stderr)
            return 2
        if a.ablation:
            print("--robustness and --ablation: one at a time", file=sys.stderr)
            return 2
        a.sets = robustness_sets(a.robustness)
        from gps_core.tasks import load_task

        if not load_task(a.task).conditions.get(a.sets[0]):  # no strength-0 reference in this task
            a.sets = a.sets[1:]
    elif a.sets is None:
        a.sets = ["train_perturbed", "spatial_test", "visual_test"]
    progress = Progress("eval")
    if a.through_nodes:
        from gps_trainer.paper.node_evaluation import evaluate_policy_through_nodes

        if a.ablation or a.workers > 1 or a.pose_regressor:
            print("--ablation, --workers and --pose-regressor run on the simulation API only (drop --through-nodes)",
                  file=sys.stderr)
            return 2

        try:
            res = evaluate_policy_through_nodes(a.policy, a.task, tuple(a.sets), a.trials, a.seed,
                                                policy_obs=a.policy_obs, namespace=a.namespace, timeout=a.timeout,
                                                progress=progress)
        except (RuntimeError, TimeoutError, ValueError) as exc:
            progress.close()
            print(f"eval through the nodes failed: {exc}", file=sys.stderr)
            return 1
    else:
        actor = None
        if a.pose_regressor:
            from gps_controller.policies.serialization import load_policy
            from gps_trainer.paper.baselines import PosePredictionActor
            from gps_trainer.pose_pretraining import load_pose_regressor

            try:
                actor = PosePredictionActor(load_policy(a.policy), load_pose_regressor(a.pose_regressor), a.task)
            except (OSError, ValueError) as exc:
                progress.close()
                print(f"--pose-regressor: {exc}", file=sys.stderr)
                return 2
            a.method = a.method or "pose_prediction"
        res = evaluate_policy(f"{a.policy} + {a.pose_regressor}" if actor else a.policy, a.task, tuple(a.sets),
                              a.trials, a.seed, actor.image_shape[0] if actor else a.image_size,
                              policy_obs=a.policy_obs, joint_limit_margin=a.joint_limit_guard, ablation=a.ablation,
                              progress=progress, workers=a.workers, actor=actor)
    progress.finish(f"{sum(r.trials for r in res.sets.values())} trials")
    print(format_table(res))
    name = f"robustness_{a.robustness}.json" if a.robustness else "eval.json"
    out = Path(a.out) if a.out else Path(a.policy).parent / name
    command = "gps " + " ".join(shlex.quote(x) for x in a.argv)
    extra = {"command": command, "through_nodes": bool(a.through_nodes)}
    extra = {"method": a.method, **extra} if a.method else extra
    if a.robustness:
        from gps_trainer.paper.robustness import format_robustness, write_robustness_json

        print(format_robustness(res, a.robustness))
        write_robustness_json(res, a.robustness, out, extra)
    else:
        res.write_json(out, extra)
    print(f"wrote {out}")
    return 0


def cmd_report(a) -> int:
    """docs/results.md from the result files (gps_trainer.paper.report)."""
    from gps_trainer.paper.report import generate_report

    path = generate_report(a.results, a.out, a.images, gps_runs=a.gps_run, gif=not a.no_gif)
    print(f"wrote {path}")
    return 0


#: `gps up --robots`: robots of one stack on this machine (each a sim, a controller and a TF publisher).
MAX_ROBOTS = 64
#: trials per condition set of an evaluation.
MAX_TRIALS = 100_000


def main(argv=None) -> int:
    from gps_controller.conversions import MAX_ITERATIONS_PER_REQUEST
    from gps_core.bringup import PARTS
    from gps_trainer.config_schema import MAX_SEED, arg_float, arg_int

    # start_iteration's field is a uint32: a larger number would wrap on the wire, so it is refused here
    iterations = arg_int(1, MAX_ITERATIONS_PER_REQUEST, "the trainer's limit per start_iteration")
    ap = argparse.ArgumentParser(prog="gps", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output-dir", default="runs/reach")
    ap.add_argument("--timeout", type=arg_float(0.1, 86400.0), default=30.0, help="seconds to wait for a service")
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start sim + controller + tf (per robot) + trainer, as launch/sim.launch.py")
    demo = sub.add_parser("demo", help="up, train, report, down")
    for p in (up, demo):
        p.add_argument("--robots", type=arg_int(1, MAX_ROBOTS), default=1)
        p.add_argument("--experiment", default="")
        p.add_argument("--sim-params", default="config/sim.yaml")
        p.add_argument("--controller-params", default="config/controller.yaml")
        p.add_argument("--trainer-params", default="config/trainer.yaml")
        p.add_argument("--pretrained-vision", default="", help="pose-pretraining vision.safetensors (GPS)")
    up.add_argument("--part", choices=PARTS, default="all",
                    help="all: robots and trainer here; robot: this host's robot (sim, controller, tf) in "
                         "--namespace; trainer: the trainer alone for robots on other hosts (docs/networking.md)")
    up.add_argument("--namespace", default="",
                    help="the robot's namespace with --robots 1 (a robot host's own, or the one robot a trainer "
                         "host serves)")
    up.add_argument("--wait-timeout", type=arg_float(0.0, 3600.0), default=45.0,
                    help="seconds to wait until every node answers (0: do not wait); non-zero exit otherwise")
    up.add_argument("--no-images", action="store_true",
                    help="the sims render and publish no camera images (state-only experiments run faster)")
    up.add_argument("--wall-time", action="store_true",
                    help="controllers on the system clock instead of their sim's clock (the launch's use_sim_time:=false)")
    up.add_argument("--init-controllers", default="",
                    help="GPS: start from these local controllers (.npz, checkpoint or trajectory-only output dir)")
    demo.set_defaults(robots=2)  # two simulated arms sample side by side: the lockstep loop waits on DDS, not CPU
    demo.add_argument("--iterations", type=iterations, default=5, help="trajectory-only iterations (phase 1)")
    demo.add_argument("--gps-experiment", default=DEMO_GPS_EXPERIMENT, help="phase 2 experiment")
    demo.add_argument("--gps-iterations", type=iterations, default=2, help="MDGPS iterations (phase 2)")
    demo.add_argument("--demo-trials", type=arg_int(1, MAX_TRIALS), default=None,
                      help="trials per set of the closing evaluation (default: the task's, 36 new positions, "
                           "40 distractor scenes)")
    from gps_core.tasks import CONDITION_SETS

    demo.add_argument("--demo-sets", nargs="+", default=list(DEMO_SETS), metavar="SET",
                      choices=[c for c in CONDITION_SETS if c != "train"],
                      help="reach's condition sets of the closing evaluation (development: validation "
                           "visual_validation)")
    demo.add_argument("--demo-workers", type=arg_int(1, 64), default=2,
                      help="processes of the closing evaluation (the same trials and results as one)")
    demo.add_argument("--vision-iterations", type=arg_int(0, 10_000_000), default=2000,
                      help="pose-pretraining steps of the conv layers (phase 0; 0 = none)")
    demo.add_argument("--seed", type=arg_int(0, 2**32 - 1), default=0,
                      help="seed of every phase: pose-pretraining images and network, the controllers' noise, "
                           "the policy's initialization (the demo's spread over seeds: README)")
    tr = sub.add_parser("train", help="run iterations with a live progress bar")
    tr.add_argument("--iterations", type=iterations, default=1)
    sub.add_parser("status", help="print the trainer status")
    sub.add_parser("down", help="stop the processes `gps up` started")
    ev = sub.add_parser("eval", help="success rates of a policy on the training / spatial / visual test conditions")
    ev.add_argument("--policy", required=True, help="policy.safetensors")
    ev.add_argument("--task", default="reach")
    ev.add_argument("--trials", type=arg_int(1, MAX_TRIALS), default=None,
                    help="trials per condition set (default: the task's per set, e.g. 27 / 36 / 40)")
    ev.add_argument("--seed", type=arg_int(0, MAX_SEED, "32 bits"), default=0)
    ev.add_argument("--sets", nargs="+", default=None,
                    help="condition sets (Table I's by default: train_perturbed spatial_test visual_test; validation "
                         "visual_validation train_validation for development; ood_<family>_<strength>_<split>)")
    ev.add_argument("--robustness", nargs="?", const="validation", default=None, choices=["validation", "test"],
                    help="robustness curves: every out-of-distribution family (lighting, camera, clutter, same_colour, "
                         "texture, image_noise) at strengths 1-3 and the nominal strength 0, a table per family and "
                         "robustness_<split>.json; validation families by default, test ones for final numbers only")
    ev.add_argument("--ablation", default=None, choices=["blank", "swap"],
                    help="vision ablation: the policy sees a black image or another condition's image")
    ev.add_argument("--image-size", type=arg_int(8, 1024), default=None, help="default: the policy's input size")
    ev.add_argument("--policy-obs", default="auto", choices=["auto", "state", "observation"])
    ev.add_argument("--method", default="", help="label for the report (end_to_end, pose_features, ...)")
    ev.add_argument("--pose-regressor", default="", metavar="VISION",
                    help="pose prediction: this pretrained CNN (vision.safetensors) predicts the target and --policy, "
                         "a state policy, acts on it (the Table I baseline; --method defaults to pose_prediction)")
    ev.add_argument("--out", default="", help="JSON path (default: eval.json next to the policy)")
    ev.add_argument("--threads", type=arg_int(1, 256), default=1)
    ev.add_argument("--workers", type=arg_int(1, 64), default=1,
                    help="processes the trials run in (each its own simulator, one torch thread); the result equals "
                         "one process's with --threads 1")
    ev.add_argument("--through-nodes", action="store_true",
                    help="run the trials through the running stack (`gps up` first): controller + lockstep sim")
    ev.add_argument("--namespace", default="", help="--through-nodes: the controller's namespace (robot1, ...)")
    ev.add_argument("--joint-limit-guard", type=arg_float(0.0, 1.0), default=None, metavar="MARGIN",
                    help="simulation API: also zero torque pushing a joint into its limit within MARGIN rad, as "
                         "the controller does (0.05 = config/controller.yaml; the same numbers as --through-nodes)")
    rep = sub.add_parser("report", help="write docs/results.md (tables, plots, GIF, reproduction)")
    rep.add_argument("--results", default="runs/results", help="folder with the result files")
    rep.add_argument("--out", default="docs/results.md")
    rep.add_argument("--images", default=None, help="image folder (default: <out dir>/images/results)")
    rep.add_argument("--gps-run", nargs="*", default=[], help="extra GPS run folders (metrics.json)")
    rep.add_argument("--no-gif", action="store_true")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    a.argv = argv
    return {"up": cmd_up, "down": cmd_down, "train": cmd_train, "status": cmd_status, "demo": cmd_demo,
            "eval": cmd_eval, "report": cmd_report}[a.command](a)


if __name__ == "__main__":
    sys.exit(main())
