#!/usr/bin/env bash
# Table I for one task or all five: pose pretraining, local controllers, the state policy (pose prediction's
# controller) and the three visuomotor methods, each evaluated on the task's Table I condition sets
# (train_perturbed 27 / spatial_test 36 / visual_test 40 trials). The recipe was chosen on the validation
# sets (docs/results-notes.md, issue 12): 9 training positions (the task's *_grid variant), a random
# distractor scene + table colour in every pose-pretraining image and in every GPS sample (*_grid_dr), the
# conv trunk pretrained on 2000 such images; S-step 5000 head steps (pose features) then 500 steps on every
# layer (end-to-end). coat_hanger, toy_hammer and bottle_cap (issue 21) train on their *_grid variants' 9
# positions too. These three keep the task's own scene in a quarter of the pretraining images and GPS samples,
# and their state policies sample themselves (on-policy MDGPS) for 12 iterations.
#   bash scripts/table1.sh reach|shape_sorting|coat_hanger|toy_hammer|bottle_cap [OUT]   (default OUT=runs/results/<task>)
#   bash scripts/table1.sh all [OUT]   (the five tasks, OUT/<task> each; default OUT=runs/results)
# At the end: OUT/summary.md, the three test-set rates of every method and the wall times (also printed).
#
# Both cores: the phases of a task are jobs with the inputs they need (pose pretraining and the controllers
# need nothing; the state policy the controllers; pose features and end-to-end the trunk and the controllers;
# pose prediction the trunk and the state policy), run TABLE1_SLOTS (2) at a time, each one process with one
# torch thread, the earliest ready job first (with `all`, the next task's pose pretraining fills a core the
# current task cannot use). A job that starts alone with nothing else ready takes both cores (`--workers 2`:
# its rollouts or evaluation trials in two processes). Why results equal the sequential script's: every phase
# is a separate process whose inputs are files the phases it depends on finished before it started, every
# random stream is seeded from the config and the trial index (not from time or order), one torch thread per
# process keeps each process's arithmetic the same, and `--workers N` gives the rollouts and trials of one
# process (tests: test_sim_sampler_workers.py, test_evaluation.py); where a job runs changes only when.
# Resumable: a finished phase leaves OUT/.table1/<phase>.done (its start and end) and is skipped on a rerun;
# an interrupted one starts again (pose pretraining afresh, a GPS run at its first missing iteration, an
# evaluation afresh). A job's output goes to OUT/logs/<phase>.log; a line at least every TABLE1_HEARTBEAT_S
# (60) s names each running job, its time so far and its log's last line. A failing job stops the script:
# the other jobs are ended and its log's tail printed.
# TABLE1_SEED=N (default 0): the training seed of every phase (pose pretraining's images and network, the
# controllers' and GPS runs' sampling noise, the policy's initialization); the test sets' trials stay the same
# (their evaluation seed is 0 for every training seed), so two seeds' rows are measured on the same situations.
# An OUT keeps the seed it was started with.
# TABLE1_BUDGET=smoke: tiny budgets (2 conditions, 1 iteration, 1 trial per set) to test the pipeline in
# minutes; its results mean nothing. An OUT keeps the budget it was started with.
# CPU, one core each (before the phases ran side by side): reach about 40 min, shape_sorting about 90 min;
# toy_hammer 50-75 min beside two other jobs, pose pretraining (15-20 min) not included; bottle_cap on its 9
# positions: one visuomotor GPS run alone about an hour (end-to-end, 5 iterations, 57 min beside one other
# job); coat_hanger's 12 iterations 86-100 min each beside one or two other jobs; so about 3-4 hours each
# with both cores (not yet timed whole). bottle_cap since its thread is not drawn (one job at a time, beside
# another run): pose 13 min, controllers 15, state policy 5.5, end-to-end 72 (12 iterations). toy_hammer whole,
# 2026-12-07, two slots with tests beside them: 45m46s wall (pose 14 min, controllers 6.5, state 3.5, pose
# features 16, end-to-end 32, pose prediction 4.5); its two visuomotor phases again with the recipe of the
# ninth session, side by side: pose features 13, end-to-end 24. toy_hammer on its 9 positions (eleventh
# session, two seeds): pose features 30-34 min beside end-to-end 43-50, state policy 6; about an hour whole.
set -eo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/table1.sh"
if [ "${GPS_ROOT:-}" != "$ROOT" ] || [ -z "${VIRTUAL_ENV:-}" ]; then   # (a job of the scheduler inherits it)
  # shellcheck disable=SC1091
  . "$ROOT/scripts/setup.sh" > /dev/null
fi
cd "$ROOT"
export OMP_NUM_THREADS=1   # one BLAS/torch thread per process was 5-10x faster than two on these machines
TASKS=(reach shape_sorting coat_hanger toy_hammer bottle_cap)
BUDGET=${TABLE1_BUDGET:-full}
case "$BUDGET" in full|smoke) ;; *) echo "table1.sh: TABLE1_BUDGET=$BUDGET: expected full or smoke" >&2; exit 2 ;; esac
SEED=${TABLE1_SEED:-0}
[[ "$SEED" =~ ^(0|[1-9][0-9]{0,8})$ ]] ||
  { echo "table1.sh: TABLE1_SEED=$SEED: expected a whole number in 0..999999999" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------- scheduler
# Phases in the order a free core takes them, and the phases each needs finished first.
PHASES=(pose controllers state end_to_end pose_features state_oracle pose_prediction)
declare -A NEEDS=([pose]="" [controllers]="" [state]="controllers" [state_oracle]="state"
                  [end_to_end]="pose controllers" [pose_features]="pose controllers" [pose_prediction]="pose state")

fmt_s() { local s=$1; if [ "$s" -ge 3600 ]; then printf '%dh%02dm' $((s / 3600)) $((s % 3600 / 60));
          else printf '%dm%02ds' $((s / 60)) $((s % 60)); fi; }
say() { echo "[$(date +%H:%M:%S)] table1 $*"; }

schedule() {  # schedule OUT TASK...: run every phase of the tasks (task dirs: OUT itself for one task, else OUT/<task>)
  local out=$1; shift
  local slots=${TABLE1_SLOTS:-2} heartbeat=${TABLE1_HEARTBEAT_S:-60} poll=${TABLE1_POLL_S:-1}
  [[ "$slots" =~ ^[1-9][0-9]*$ ]] || { echo "table1.sh: TABLE1_SLOTS=$slots: expected a positive integer" >&2; exit 2; }
  [[ "$heartbeat" =~ ^[1-9][0-9]*$ ]] && [ "$heartbeat" -le 60 ] ||
    { echo "table1.sh: TABLE1_HEARTBEAT_S=$heartbeat: expected whole seconds in 1..60" >&2; exit 2; }
  declare -gA DIR_OF=() STATUS=() PID=() STARTED=() STARTED_S=() WORKERS=()
  JOBS=()
  local task job phase dir lock_fd
  for task in "$@"; do
    if [ $# -eq 1 ]; then dir=$out; else dir=$out/$task; fi
    DIR_OF[$task]=$dir
    mkdir -p "$dir/.table1"
    # one script per folder: two would run the same phases into the same files (the lock goes with this
    # process and the jobs it starts)
    exec {lock_fd}>> "$dir/.table1/lock"
    flock -n "$lock_fd" || { echo "table1.sh: $dir is in use by another table1.sh; wait for it or stop it" >&2; exit 2; }
    mkdir -p "$dir/logs"
    # results of one budget only: a smoke run's files must never count as a full run's
    if [ -f "$dir/.table1/budget" ] && [ "$(cat "$dir/.table1/budget")" != "$BUDGET" ]; then
      echo "table1.sh: $dir holds a run with TABLE1_BUDGET=$(cat "$dir/.table1/budget"), not $BUDGET; use another OUT" >&2
      exit 2
    fi
    [ -f "$dir/.table1/budget" ] || echo "$BUDGET" > "$dir/.table1/budget"
    # one training seed per folder (folders from before TABLE1_SEED hold seed 0's phases)
    if [ -f "$dir/.table1/seed" ] && [ "$(cat "$dir/.table1/seed")" != "$SEED" ]; then
      echo "table1.sh: $dir holds a run with TABLE1_SEED=$(cat "$dir/.table1/seed"), not $SEED; use another OUT" >&2
      exit 2
    fi
    if [ ! -f "$dir/.table1/seed" ] && [ "$SEED" != 0 ] && compgen -G "$dir/.table1/*.done" > /dev/null; then
      echo "table1.sh: $dir holds phases of a run from before TABLE1_SEED (seed 0), not $SEED; use another OUT" >&2
      exit 2
    fi
    [ -f "$dir/.table1/seed" ] || echo "$SEED" > "$dir/.table1/seed"
    for phase in "${PHASES[@]}"; do
      job=$task/$phase
      JOBS+=("$job")
      rm -f "$dir/.table1/$phase.rc"
      if [ -f "$dir/.table1/$phase.done" ]; then
        STATUS[$job]=done; say "$task: $phase done before, skipped"
      else
        STATUS[$job]=pending
      fi
    done
  done
  trap 'stop_jobs; exit 130' INT
  trap 'stop_jobs; exit 143' TERM
  trap stop_jobs EXIT
  local t0=$EPOCHSECONDS last_beat=$EPOCHSECONDS busy pending running ready w j rc
  while :; do
    for job in "${JOBS[@]}"; do   # finished jobs
      [ "${STATUS[$job]}" = running ] || continue
      task=${job%%/*}; phase=${job#*/}; dir=${DIR_OF[$task]}
      [ -f "$dir/.table1/$phase.rc" ] || continue
      rc=$(cat "$dir/.table1/$phase.rc"); wait "${PID[$job]}" 2>/dev/null || true
      rm -f "$dir/.table1/$phase.rc"
      STATUS[$job]=done; unset "PID[$job]"
      if [ "$rc" != 0 ]; then
        say "$task: $phase FAILED (exit $rc); the last lines of $dir/logs/$phase.log:"
        tail -n 40 "$dir/logs/$phase.log" | sed 's/^/    /'
        exit 1   # (the EXIT trap ends the other jobs)
      fi
      printf '{"phase": "%s", "start": %s, "end": %s, "workers": %s, "budget": "%s", "seed": %s}\n' "$phase" \
        "${STARTED[$job]}" "$EPOCHREALTIME" "${WORKERS[$job]}" "$BUDGET" "$SEED" > "$dir/.table1/$phase.done.tmp"
      mv "$dir/.table1/$phase.done.tmp" "$dir/.table1/$phase.done"
      say "$task: $phase done in $(fmt_s $((EPOCHSECONDS - ${STARTED_S[$job]})))"
    done
    busy=0; pending=0; running=0
    for job in "${JOBS[@]}"; do
      case "${STATUS[$job]}" in running) busy=$((busy + ${WORKERS[$job]})); running=$((running + 1)) ;;
                                pending) pending=$((pending + 1)) ;; esac
    done
    while [ "$busy" -lt "$slots" ]; do   # start the earliest ready jobs
      ready=()
      for job in "${JOBS[@]}"; do
        [ "${STATUS[$job]}" = pending ] || continue
        task=${job%%/*}; w=1
        for j in ${NEEDS[${job#*/}]}; do [ "${STATUS[$task/$j]}" = done ] || w=0; done
        if [ $w = 1 ]; then ready+=("$job"); fi
      done
      [ ${#ready[@]} -gt 0 ] || break
      job=${ready[0]}
      # alone, with nothing else ready: both cores (pose pretraining stays one process, one thread)
      w=1
      if [ "$busy" -eq 0 ] && [ ${#ready[@]} -eq 1 ] && [ "$slots" -ge 2 ] && [ "${job#*/}" != pose ]; then w=2; fi
      start_job "$job" "$w"
      busy=$((busy + w)); running=$((running + 1)); pending=$((pending - 1))
    done
    if [ "$running" -eq 0 ]; then
      if [ "$pending" -eq 0 ]; then break; fi
      echo "table1.sh: $pending phases wait on phases that cannot finish" >&2; exit 1
    fi
    if [ $((EPOCHSECONDS - last_beat)) -ge "$heartbeat" ]; then
      last_beat=$EPOCHSECONDS
      for job in "${JOBS[@]}"; do
        [ "${STATUS[$job]}" = running ] || continue
        task=${job%%/*}; phase=${job#*/}
        say "$task: $phase running for $(fmt_s $((EPOCHSECONDS - ${STARTED_S[$job]}))) (all: $(fmt_s $((EPOCHSECONDS - t0)))):" \
          "$(tail -n 1 "${DIR_OF[$task]}/logs/$phase.log" | tr -d '\r' | cut -c1-160)"
      done
    fi
    sleep "$poll"
  done
  trap - INT TERM EXIT
  local args=()
  for task in "$@"; do args+=("$task=${DIR_OF[$task]}"); done
  say "all phases done; summary in $out/summary.md"
  python -m gps_trainer.paper.table1_summary --budget "$BUDGET" --out "$out/summary.md" "${args[@]}"
  if [ $# -eq 1 ]; then out=$(dirname "$out"); fi
  say "the report: gps report --results $out --out docs/results.md"
}

start_job() {  # start_job TASK/PHASE WORKERS: `table1.sh --phase` in the background, its exit status to .rc
  local job=$1 w=$2 task=${1%%/*} phase=${1#*/}
  local dir=${DIR_OF[$task]}
  STATUS[$job]=running; WORKERS[$job]=$w; STARTED[$job]=$EPOCHREALTIME; STARTED_S[$job]=$EPOCHSECONDS
  say "$task: $phase starts$([ "$w" -gt 1 ] && echo " (2 processes)"): $(bash "$SELF" --describe "$phase" "$task")"
  echo "== $(date '+%F %T') table1.sh --phase $phase $task $dir $w ($BUDGET, seed $SEED)" >> "$dir/logs/$phase.log"
  set -m   # the job in its own process group, so that stopping it stops the processes it started
  (
    rc=0
    bash "$SELF" --phase "$phase" "$task" "$dir" "$w" < /dev/null >> "$dir/logs/$phase.log" 2>&1 || rc=$?
    echo "$rc" > "$dir/.table1/$phase.rc.tmp" && mv "$dir/.table1/$phase.rc.tmp" "$dir/.table1/$phase.rc"
  ) &
  PID[$job]=$!
  set +m   # (on, a foreground command would take the terminal and its Ctrl-C)
}

stop_jobs() {  # end every running job's process group (the processes this script started), then reap them
  local job
  for job in "${!PID[@]}"; do kill -TERM -- "-${PID[$job]}" 2>/dev/null || true; done
  for job in "${!PID[@]}"; do wait "${PID[$job]}" 2>/dev/null || true; done
  PID=()
}

if [ "${1:-}" != --phase ] && [ "${1:-}" != --describe ]; then
  TASK=${1:?usage: table1.sh reach|shape_sorting|coat_hanger|toy_hammer|bottle_cap [OUT]  (or: table1.sh all [OUT])}
  if [ "$TASK" = all ]; then
    schedule "${2:-runs/results}" "${TASKS[@]}"
  elif [[ " ${TASKS[*]} " == *" $TASK "* ]]; then
    schedule "${2:-runs/results/$TASK}" "$TASK"
  else
    echo "table1.sh: no Table I recipe for task '$TASK' (reach, shape_sorting, coat_hanger, toy_hammer, bottle_cap; or all)" >&2
    exit 2
  fi
  exit 0
fi

# ------------------------------------------------------------------------------------ one phase of one task
# table1.sh --phase PHASE TASK OUT WORKERS (run by the scheduler) / --describe PHASE TASK (its start line)
MODE=$1; PHASE=${2:?}; TASK=${3:?}; OUT=${4:-}; W=${5:-1}
# The visuomotor GPS runs stop at the first iteration whose policy succeeds at every training position (MDGPS
# drifts after convergence on shape_sorting), at most 6, and the policy of the iteration with the highest
# success at the training positions is evaluated (the earliest of equals); reach runs its 5 iterations and
# evaluates the last, as validated; coat_hanger and bottle_cap run 12 with the reference's visuomotor trust
# region (their configs) and keep the iteration chosen on the validation sets; toy_hammer runs its 6 with a
# convex cost model (its config) and keeps the iteration chosen on the validation sets too.
GPS_LENGTH=(--stop-at-success 1.0 --select best iterations=6)
# The state policy stops at its first iteration with every training condition solved, except on coat_hanger,
# toy_hammer and bottle_cap: there it samples the policy itself (on-policy MDGPS) for its config's 12 iterations
# (toy_hammer validation 24/40 -> 38/40; coat_hanger 0-50 % -> 40/40 with the 9 positions)
STATE_LENGTH=(--stop-at-success 1.0)
SCENES=1.0   # share of pose-pretraining images with a random scene (the rest: the task's own scene)
APPEARANCE=()   # pose pretraining's training-time appearance levers (issue 24: scene_lighting, scene_texture)
case "$TASK" in
  reach)
    NPOS=9
    GPS_LENGTH=(iterations=5)
    CTRL=(--config config/experiments/reach_grid_traj_opt.yaml iterations=5)
    STATE=(--config config/experiments/reach_mdgps.yaml task=reach_grid conditions=9)
    VISUAL=(--config config/experiments/reach_grid_dr_mdgps_visual.yaml) ;;
  shape_sorting)
    NPOS=9
    CTRL=(--config config/experiments/shape_sorting_traj_opt.yaml task=shape_sorting_grid conditions=9)
    # 10 rollouts per condition in every GPS run (validation: end-to-end 18/24, 17/24, 18/24 with 5 ->
    # 24/24, 22/24, 24/24 with 10; docs/results-notes.md)
    STATE=(--config config/experiments/shape_sorting_mdgps.yaml task=shape_sorting_grid conditions=9
           samples_per_condition=10)
    # random lighting and textured tables in the pretraining images and the GPS samples' random scenes (issue 24;
    # development sets: 45/48 against 39/48, and the held-out lighting and texture families 17-24/24 against
    # 3-21/24; config/tasks/shape_sorting_grid_dr_appearance.yaml)
    APPEARANCE=(scene_lighting=3 scene_texture=3)
    VISUAL=(--config config/experiments/shape_sorting_mdgps_visual.yaml task=shape_sorting_grid_dr_appearance
            conditions=9 samples_per_condition=10 'algorithm.policy_opt.device=cpu') ;;
  coat_hanger)   # this and bottle_cap: 9 training positions (the *_grid variants: with the tasks' own 4 the
    # state policy reached 0-50 % of coat_hanger's validation positions, 100 % with 9) and a state policy that
    # samples itself for its config's 12 iterations; a quarter of the pretraining images (and, in *_grid_dr, of
    # the GPS samples) in the task's own scene; the visuomotor runs sample the CNN policy from their second
    # iteration (on-policy; the configuration measured on validation, docs/results-notes.md, issue 21)
    NPOS=9
    SCENES=0.75
    CTRL=(--config config/experiments/coat_hanger_traj_opt.yaml task=coat_hanger_grid conditions=9)
    STATE=(--config config/experiments/coat_hanger_mdgps.yaml task=coat_hanger_grid conditions=9)
    STATE_LENGTH=()
    VISUAL=(--config config/experiments/coat_hanger_mdgps_visual.yaml task=coat_hanger_grid_dr conditions=9
            algorithm.sample_on_policy=true)
    # 12 visuomotor iterations (the config's trust region keeps them learning), the iteration kept chosen on
    # the validation sets (the policy at the 9 positions peaked at 9/9 and swung 6-9 after it)
    GPS_LENGTH=(iterations=12 --validate validation:12,visual_validation:8 --select validation) ;;
  toy_hammer)   # 9 training positions, as coat_hanger and bottle_cap (toy_hammer_grid; validation, 12 drawn
    # positions and 24 scenes: end-to-end 33/36 against 22-24/36 with the task's own 4; docs/results-notes.md)
    NPOS=9
    # a quarter of the pretraining images (and, in toy_hammer_grid_dr, of the GPS samples) in the task's own scene:
    # with none the visuomotor policies failed at the training positions in it (validation: end-to-end 0/10
    # -> 8/10 plain, 10/24 -> 8/24 with distractors; docs/results-notes.md)
    SCENES=0.75
    CTRL=(--config config/experiments/toy_hammer_traj_opt.yaml task=toy_hammer_grid conditions=9)
    STATE=(--config config/experiments/toy_hammer_mdgps.yaml task=toy_hammer_grid conditions=9)
    STATE_LENGTH=()
    VISUAL=(--config config/experiments/toy_hammer_mdgps_visual.yaml task=toy_hammer_grid_dr conditions=9)
    # all 6 visuomotor iterations (its config's convex cost model keeps later ones learning), the iteration
    # kept chosen on the validation sets, as coat_hanger's and bottle_cap's (docs/results-notes.md)
    GPS_LENGTH=(iterations=6 --validate validation:12,visual_validation:8 --select validation) ;;
  bottle_cap)
    NPOS=9
    SCENES=0.75
    CTRL=(--config config/experiments/bottle_cap_traj_opt.yaml task=bottle_cap_grid conditions=9)
    STATE=(--config config/experiments/bottle_cap_mdgps.yaml task=bottle_cap_grid conditions=9)
    STATE_LENGTH=()
    VISUAL=(--config config/experiments/bottle_cap_mdgps_visual.yaml task=bottle_cap_grid_dr conditions=9
            algorithm.sample_on_policy=true)
    # as coat_hanger: the config's trust region, 12 iterations, the iteration kept chosen on validation
    GPS_LENGTH=(iterations=12 --validate validation:12,visual_validation:8 --select validation) ;;
  *) echo "table1.sh: no Table I recipe for task '$TASK' (reach, shape_sorting, coat_hanger, toy_hammer, bottle_cap)" >&2
     exit 2 ;;
esac
POSE=(image_size=64 num_train=2000 num_test=100 iterations=3000 "${APPEARANCE[@]}")
FEATURE_STEPS=(--fc-steps 5000 --e2e-steps 0)   # pose features: the head alone, 5000 steps per S-step
E2E_STEPS=(--fc-steps 5000 --e2e-steps 500)     # end-to-end: 5000 head steps, then 500 on every layer
TRIALS=()                                       # the task's trials per set (27 / 36 / 40)

override() {  # override ARRAY key=value...: the array's words for these keys replaced (an override given twice is an error)
  local -n words=$1; shift
  local kept=() w kv
  for w in "${words[@]}"; do
    for kv in "$@"; do if [[ "$w" == *=* && "${w%%=*}" == "${kv%%=*}" ]]; then continue 2; fi; done
    kept+=("$w")
  done
  words=("${kept[@]}" "$@")
}
# the training seed (TABLE1_SEED); the evaluations keep seed 0, so every training seed meets the same trials
override CTRL seed="$SEED"
override STATE seed="$SEED" algorithm.policy_seed="$SEED"
override VISUAL seed="$SEED" algorithm.policy_seed="$SEED"
if [ "$BUDGET" = smoke ]; then   # the pipeline end to end in minutes; the numbers mean nothing
  NPOS=2
  override POSE num_train=16 num_test=4 iterations=3 batch_size=4
  # 20 time steps in the GPS runs (the evaluation keeps the task's horizon); no loss passes over all samples
  for a in CTRL STATE; do override "$a" conditions=2 samples_per_condition=2 iterations=1 horizon=20; done
  override STATE algorithm.policy_opt.iterations=20
  override VISUAL conditions=2 samples_per_condition=2 horizon=20 algorithm.policy_opt.evaluate_full_loss=false
  GPS_LENGTH=(iterations=1)
  FEATURE_STEPS=(--fc-steps 5 --e2e-steps 0)
  E2E_STEPS=(--fc-steps 5 --e2e-steps 2)
  TRIALS=(--trials 1)
fi
# The visuomotor methods start from the same pretrained trunk and controllers.
V=("${VISUAL[@]}" --vision "$OUT/pose_pretrain/vision.safetensors" --controllers "$OUT/controllers" --out "$OUT"
   --eval-task "$TASK" "${GPS_LENGTH[@]}" "${TRIALS[@]}" --workers "$W")

if [ "$MODE" = --describe ]; then
  case "$PHASE" in
    pose) echo "pose pretraining (${POSE[*]}, a share $SCENES with random scenes)" ;;
    controllers) echo "phase 2: local controllers by trajectory optimization on the $NPOS training positions" ;;
    state) echo "state policy by MDGPS (sees the true target): pose prediction's controller" ;;
    state_oracle) echo "the state policy on the true target (reference)" ;;
    pose_features) echo "pose features (trunk frozen: ${FEATURE_STEPS[1]} head steps per S-step)" ;;
    end_to_end) echo "end-to-end (${E2E_STEPS[1]} head steps, then ${E2E_STEPS[3]} on every layer, per S-step)" ;;
    pose_prediction) echo "pose prediction (pretrained CNN -> predicted target -> state policy)" ;;
  esac
  exit 0
fi
case "$PHASE" in
  pose)   # an interrupted pretraining starts afresh (its metrics file is written last)
    [ -f "$OUT/pose_pretrain/vision.metrics.json" ] && exit 0
    rm -rf "$OUT/pose_pretrain"
    exec python -m gps_trainer.procedure pose --config config/policy/pose_pretrain.yaml --out "$OUT/pose_pretrain" \
      task="$TASK" "${POSE[@]}" scene_randomization="$SCENES" seed="$SEED" --threads 1 ;;
  controllers)   # (a stopped run resumes at its first missing iteration; a finished one returns at once)
    exec python -m gps_trainer.procedure controllers "${CTRL[@]}" --out "$OUT/controllers" --threads 1 --workers "$W" ;;
  state)
    exec python -m gps_trainer.procedure gps "${STATE[@]}" --controllers "$OUT/controllers" --out "$OUT/gps_mdgps_state" \
      --threads 1 --workers "$W" "${STATE_LENGTH[@]}" ;;
  state_oracle)
    [ -f "$OUT/eval_state_oracle.json" ] && exit 0
    exec gps eval --policy "$OUT/gps_mdgps_state" --task "$TASK" --seed 0 --threads 1 --workers "$W" "${TRIALS[@]}" \
      --method state_oracle --out "$OUT/eval_state_oracle.json" ;;
  pose_features)
    [ -f "$OUT/eval_pose_features.json" ] && exit 0
    exec python -m gps_trainer.paper.baselines --methods pose_features "${FEATURE_STEPS[@]}" "${V[@]}" ;;
  end_to_end)
    [ -f "$OUT/eval_end_to_end.json" ] && exit 0
    exec python -m gps_trainer.paper.baselines --methods end_to_end "${E2E_STEPS[@]}" "${V[@]}" ;;
  pose_prediction)
    [ -f "$OUT/eval_pose_prediction.json" ] && exit 0
    exec python -m gps_trainer.paper.baselines --methods pose_prediction \
      --state-policy "$OUT/gps_mdgps_state/policy.safetensors" "${V[@]}" ;;
  *) echo "table1.sh: no phase '$PHASE' (${PHASES[*]})" >&2; exit 2 ;;
esac
