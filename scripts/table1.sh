#!/usr/bin/env bash
# Table I for one task: pose pretraining, local controllers, the state policy (pose prediction's controller)
# and the three visuomotor methods, each evaluated on the task's Table I condition sets
# (train_perturbed 27 / spatial_test 36 / visual_test 40 trials). The recipe was chosen on the validation
# sets (docs/results-notes.md, issue 12): 9 training positions (the task's *_grid variant), a random
# distractor scene + table colour in every pose-pretraining image and in every GPS sample (*_grid_dr), the
# conv trunk pretrained on 2000 such images; S-step 5000 head steps (pose features) then 500 steps on every
# layer (end-to-end). coat_hanger, toy_hammer and bottle_cap train on their own 4 training conditions instead
# (their trajectory optimization is tuned on those; *_dr: the same conditions with randomized sample scenes;
# toy_hammer keeps the task's own scene in a quarter of the pretraining images and GPS samples).
# Resumable: a finished phase is skipped, a stopped GPS run goes on at its first missing iteration.
#   bash scripts/table1.sh reach|shape_sorting|coat_hanger|toy_hammer|bottle_cap [OUT]   (default OUT=runs/results/<task>)
# CPU (one core of this 2-core machine): reach about 40 min, shape_sorting about 90 min; coat_hanger,
# toy_hammer, bottle_cap 50-75 min each beside two other jobs, pose pretraining (15-20 min) not included.
set -eo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
. "$ROOT/scripts/setup.sh" > /dev/null
cd "$ROOT"
TASK=${1:?usage: table1.sh reach|shape_sorting|coat_hanger|toy_hammer|bottle_cap [OUT]}
OUT=${2:-runs/results/$TASK}
export OMP_NUM_THREADS=1   # one BLAS/torch thread per process was 5-10x faster than two on these machines
# The visuomotor GPS runs stop at the first iteration whose policy succeeds at every training position (MDGPS
# drifts after convergence on shape_sorting), at most 6, and the policy of the iteration with the highest
# success at the training positions is evaluated (the earliest of equals); reach runs its 5 iterations and
# evaluates the last, as validated.
GPS_LENGTH=(--stop-at-success 1.0 --select best iterations=6)
# The state policy stops at its first iteration with every training condition solved, except toy_hammer's: it
# samples the policy itself (on-policy MDGPS) for its config's 12 iterations (validation 24/40 -> 38/40)
STATE_LENGTH=(--stop-at-success 1.0)
SCENES=1.0   # share of pose-pretraining images with a random scene (the rest: the task's own scene)
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
    VISUAL=(--config config/experiments/shape_sorting_mdgps_visual.yaml task=shape_sorting_grid_dr conditions=9
            samples_per_condition=10 'algorithm.policy_opt.device=cpu') ;;
  coat_hanger)   # this and the next two: the task's own 4 training conditions (its traj opt is tuned on them)
    NPOS=4
    CTRL=(--config config/experiments/coat_hanger_traj_opt.yaml)
    STATE=(--config config/experiments/coat_hanger_mdgps.yaml)
    VISUAL=(--config config/experiments/coat_hanger_mdgps_visual.yaml) ;;
  toy_hammer)
    NPOS=4
    # a quarter of the pretraining images (and, in toy_hammer_dr, of the GPS samples) in the task's own scene:
    # with none the visuomotor policies failed at the training positions in it (validation: end-to-end 0/10
    # -> 8/10 plain, 10/24 -> 8/24 with distractors; docs/results-notes.md)
    SCENES=0.75
    CTRL=(--config config/experiments/toy_hammer_traj_opt.yaml)
    STATE=(--config config/experiments/toy_hammer_mdgps.yaml)
    STATE_LENGTH=()
    VISUAL=(--config config/experiments/toy_hammer_mdgps_visual.yaml) ;;
  bottle_cap)
    NPOS=4
    CTRL=(--config config/experiments/bottle_cap_traj_opt.yaml)
    STATE=(--config config/experiments/bottle_cap_mdgps.yaml)
    VISUAL=(--config config/experiments/bottle_cap_mdgps_visual.yaml) ;;
  *) echo "table1.sh: no Table I recipe for task '$TASK' (reach, shape_sorting, coat_hanger, toy_hammer, bottle_cap)" >&2
     exit 2 ;;
esac
mkdir -p "$OUT"
log() { echo "[$(date +%H:%M:%S)] table1 $TASK: $*"; }

log "phase 1: pose pretraining (2000 images, a share $SCENES with random scenes, 3000 Adam steps)"
[ -f "$OUT/pose_pretrain/vision.safetensors" ] ||
  python -m gps_trainer.procedure pose --config config/policy/pose_pretrain.yaml --out "$OUT/pose_pretrain" \
    task="$TASK" image_size=64 num_train=2000 num_test=100 iterations=3000 scene_randomization="$SCENES" seed=0 --threads 1
log "phase 2: local controllers by trajectory optimization on the $NPOS training positions"
python -m gps_trainer.procedure controllers "${CTRL[@]}" --out "$OUT/controllers" --threads 1
log "state policy by MDGPS (sees the true target): pose prediction's controller"
python -m gps_trainer.procedure gps "${STATE[@]}" --controllers "$OUT/controllers" --out "$OUT/gps_mdgps_state" \
  --threads 1 "${STATE_LENGTH[@]}"
[ -f "$OUT/eval_state_oracle.json" ] ||
  gps eval --policy "$OUT/gps_mdgps_state" --task "$TASK" --seed 0 --threads 1 \
    --method state_oracle --out "$OUT/eval_state_oracle.json"
# The visuomotor methods start from the same pretrained trunk and controllers.
V=("${VISUAL[@]}" --vision "$OUT/pose_pretrain/vision.safetensors" --controllers "$OUT/controllers" --out "$OUT"
   --eval-task "$TASK" "${GPS_LENGTH[@]}")
log "pose features (trunk frozen: 5000 head steps per S-step)"
[ -f "$OUT/eval_pose_features.json" ] ||
  python -m gps_trainer.paper.baselines --methods pose_features --fc-steps 5000 --e2e-steps 0 "${V[@]}"
log "end-to-end (5000 head steps, then 500 on every layer, per S-step)"
[ -f "$OUT/eval_end_to_end.json" ] ||
  python -m gps_trainer.paper.baselines --methods end_to_end --fc-steps 5000 --e2e-steps 500 "${V[@]}"
log "pose prediction (pretrained CNN -> predicted target -> state policy)"
[ -f "$OUT/eval_pose_prediction.json" ] ||
  python -m gps_trainer.paper.baselines --methods pose_prediction \
    --state-policy "$OUT/gps_mdgps_state/policy.safetensors" "${V[@]}"
log "done; write the report with: gps report --results $(dirname "$OUT") --out docs/results.md"
