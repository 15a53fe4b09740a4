"""``gps eval --through-nodes``: the evaluation of :mod:`gps_trainer.evaluation`, run by the ROS nodes.

The running stack (``gps up``: gps_sim in lockstep + gps_controller) executes the trials; this module
is a client of the controller only:

1. ``gps_controller/set_policy_weights`` with the policy (``serialize_policy``; this replaces the
   controller's neural policy, e.g. one the trainer pushed),
2. per condition set: the controller's ``condition_set`` parameter, set through its parameter service
   (``gps_controller/set_parameters``; the controller validates it and refuses a change while a
   trial runs; the original value is restored at the end), so ``run_trial`` resets gps_sim into that
   set (``gps_sim/reset`` with ``condition_set``),
3. per trial: ``gps_controller/run_trial`` (policy_type "neural", no noise, the same condition
   ``i mod n`` and reset seed as :func:`~gps_trainer.evaluation.evaluate_policy`; the seed reaches
   ``gps_sim/reset``, so the visual test's distractors are the same), and the Rollout it publishes on
   ``/gps/rollouts`` (matched by rollout id).

Success and final distance come from the Rollout's states: x's EE block (gps_core.layout) holds the EE points minus the
target points. A Rollout of T steps holds x_0 .. x_{T-1}, the states the T actions were computed
from; the state *after* the T-th action (what ``ArmSim.is_success()`` looks at in the simulation-API
evaluation) is not in it. The trial therefore runs T + 1 steps and reads x_T (the (T+1)-th action is
applied after the measurement and changes nothing that is measured). The eval rollouts have
horizon T + 1 and iteration :data:`EVAL_ITERATION`, so a trainer never stores them as training samples.

Success types: ``mean_distance`` (reach): mean EE-point distance < the task's tolerance, as
``ArmSim.is_success``. ``inside_hole`` (shape sorting) needs the tip in the target's frame; the state
has the tip relative to the first target point, and the target pose (static in the scene, placed by the
reset) is the condition's ``target_pose`` from the task file, so :func:`gps_core.tasks.task_success` computes
the same test. What acts differs from the simulation API's default in one point: the controller's
joint-limit guard (``EvalResult.joint_limit_margin`` records its margin); ``evaluate_policy(...,
joint_limit_margin=0.05)`` applies it too, and then the numbers are the same. The policy must observe o (``policy_obs: observation``): the controller feeds a neural
policy o, never the full state x.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from gps_core.layout import mean_ee_distance
from gps_core.tasks import task_success
from gps_trainer.paper.evaluation import (
    CONDITION_SETS,
    EvalResult,
    SetResult,
    count_situations,
    default_trials,
    load_policy_for_eval,
    trial_reset_seed,
    wilson_interval,
)

__all__ = ["EVAL_ITERATION", "evaluate_policy_through_nodes"]

EVAL_ITERATION = 2**32 - 1  # Rollout.iteration of evaluation trials (uint32 max: never a training iteration)


class _ControllerClient:
    """rclpy client of one controller (namespace ``ns``) in a private context (safe beside other rclpy users)."""

    def __init__(self, ns: str, timeout: float):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from gps_controller.qos import ROLLOUT_QOS
        from gps_msgs.msg import Rollout

        self.rclpy, self.timeout = rclpy, float(timeout)
        self.prefix = f"/{ns.strip('/')}" if ns.strip("/") else ""
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("gps_eval_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.rollouts: dict[str, Any] = {}
        self.node.create_subscription(Rollout, "/gps/rollouts", self._on_rollout, ROLLOUT_QOS)

    def _on_rollout(self, msg) -> None:
        if msg.iteration == EVAL_ITERATION:
            self.rollouts[msg.rollout_id] = msg

    def call(self, srv_type, name: str, request, timeout: float | None = None):
        timeout = self.timeout if timeout is None else timeout
        full = f"{self.prefix}/{name}"
        client = self.node.create_client(srv_type, full)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"{full} not available after {timeout:g} s (is the stack up? `gps up`)")
            future = client.call_async(request)
            self.executor.spin_until_future_complete(future, timeout_sec=timeout)
            if not future.done():
                raise TimeoutError(f"{full}: no answer within {timeout:g} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def wait_rollout(self, rollout_id: str, timeout: float):
        deadline = time.monotonic() + timeout
        while rollout_id not in self.rollouts:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rollout {rollout_id!r} not received on /gps/rollouts within {timeout:g} s")
            self.executor.spin_once(timeout_sec=0.05)
        return self.rollouts.pop(rollout_id)

    def get_parameters(self, names: list[str]) -> dict[str, Any]:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        res = self.call(GetParameters, "gps_controller/get_parameters", GetParameters.Request(names=names))
        return {n: parameter_value_to_python(v) for n, v in zip(names, res.values, strict=True)}

    def set_condition_set(self, value: str) -> None:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request(parameters=[Parameter("condition_set", Parameter.Type.STRING, value).to_parameter_msg()])
        res = self.call(SetParameters, "gps_controller/set_parameters", req)
        if not res.results or not res.results[0].successful:
            reason = res.results[0].reason if res.results else "no result"
            raise RuntimeError(f"the controller refused condition_set={value!r}: {reason}")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


def evaluate_policy_through_nodes(
    policy_or_path: Any,
    task: str | None = None,
    condition_sets: tuple[str, ...] | list[str] = CONDITION_SETS,
    trials_per_set: int | None = None,
    seed: int = 0,
    *,
    policy_obs: str = "auto",
    horizon: int | None = None,
    namespace: str = "",
    timeout: float = 60.0,
    progress: Any = None,
) -> EvalResult:
    """:func:`gps_trainer.evaluation.evaluate_policy`'s trials, run by the controller in ``namespace``
    (and its lockstep gps_sim). ``task``: None = the controller's; else it must be the controller's.
    ``timeout``: per service call and per trial (s); ``progress`` (a gps_core.progress.Progress): told
    each trial. Returns the same :class:`EvalResult`."""
    from gps_controller import conversions as conv
    from gps_controller.policies.serialization import serialize_policy
    from gps_core.tasks import load_task
    from gps_msgs.srv import RunTrial, SetPolicyWeights

    policy, policy_obs, name = load_policy_for_eval(policy_or_path, policy_obs)
    if policy_obs != "observation":
        raise ValueError("through the nodes the controller feeds a neural policy the observation o; this policy "
                         f"observes {policy_obs!r} (evaluate it with the simulation API instead)")
    if trials_per_set is not None and trials_per_set < 1:
        raise ValueError("trials_per_set must be >= 1")
    arch, weights, sha = serialize_policy(policy)
    cli = _ControllerClient(namespace, timeout)
    try:
        params = cli.get_parameters(["task", "condition_set", "image_size", "joint_limit_margin"])
        ctrl_task = load_task(params["task"])
        if task is not None and load_task(task).name != ctrl_task.name:
            raise ValueError(f"the controller runs task {ctrl_task.name!r}, not {load_task(task).name!r}")
        image_size = int(params["image_size"])
        T = int(horizon or ctrl_task.horizon)
        res = cli.call(SetPolicyWeights, "gps_controller/set_policy_weights",
                       SetPolicyWeights.Request(architecture=arch, weights=list(weights), sha256=sha,
                                                iteration=EVAL_ITERATION))
        if not res.success:
            raise RuntimeError(f"set_policy_weights refused: {res.message}")
        original_set = str(params["condition_set"])
        sets: dict[str, SetResult] = {}
        set_trials = [default_trials(ctrl_task, c) if trials_per_set is None else int(trials_per_set)
                      for c in condition_sets]
        if progress is not None:
            progress.restart(sum(set_trials), f"evaluating through the nodes: 0/{sum(set_trials)} trials")
        trials_done = 0
        try:
            for k, cset in enumerate(condition_sets):
                conds = ctrl_task.condition_list(cset)
                if not conds:
                    raise ValueError(f"task {ctrl_task.name!r} has no {cset!r} conditions")
                cli.set_condition_set(cset)
                n_trials = set_trials[k]
                out = SetResult(cset, n_trials, 0, 0.0, 1.0)
                for i in range(n_trials):
                    m = i % len(conds)
                    trial_seed = trial_reset_seed(seed, cset, i)
                    req = RunTrial.Request(condition=m, iteration=EVAL_ITERATION, sample_index=i, policy_type="neural",
                                           horizon=T + 1, use_noise=False, seed=trial_seed, record_images=False)
                    ans = cli.call(RunTrial, "gps_controller/run_trial", req, timeout=timeout + T)
                    if not ans.success or ans.aborted or ans.steps != T + 1:
                        raise RuntimeError(f"{cset} trial {i} (condition {m}): run_trial failed "
                                           f"(steps {ans.steps}/{T + 1}, aborted {ans.aborted}): {ans.message}")
                    states = conv.rollout_from_msg(cli.wait_rollout(ans.rollout_id, timeout)).states
                    if states.shape[0] != T + 1:
                        raise RuntimeError(f"rollout {ans.rollout_id!r} has {states.shape[0]} steps, not {T + 1}")
                    pose = np.asarray(conds[m].target_pose, dtype=np.float64)
                    out.success.append(task_success(ctrl_task, states[T], pose))
                    out.conditions.append(m)
                    out.reset_seeds.append(trial_seed)
                    out.initial_target_positions.append([float(v) for v in pose[:3]])
                    out.final_distance.append(mean_ee_distance(states[T]))
                    trials_done += 1
                    if progress is not None:
                        progress.update(trials_done, f"evaluating through the nodes: {trials_done}/{sum(set_trials)} "
                                                     f"trials ({cset} {i + 1}/{n_trials}, {sum(out.success)} successes)")
                out.successes = int(sum(out.success))
                out.ci_low, out.ci_high = wilson_interval(out.successes, out.trials)
                out.situations = count_situations(ctrl_task, cset, out.conditions, out.reset_seeds)
                sets[cset] = out
        finally:
            try:
                cli.set_condition_set(original_set)
            except (RuntimeError, TimeoutError):
                pass
    finally:
        cli.close()
    return EvalResult(task=ctrl_task.name, policy=name,
                      policy_obs=policy_obs, seed=int(seed),
                      trials_per_set=None if trials_per_set is None else int(trials_per_set), horizon=T,
                      image_size=image_size, sets=sets, joint_limit_margin=float(params["joint_limit_margin"]))
