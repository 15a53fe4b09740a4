#!/usr/bin/env bash
# Table I on shape_sorting (the paper's shape-sorting cube), every phase as run for docs/results.md.
# Resumable: a finished phase is skipped, a stopped GPS run goes on at its first missing iteration.
# CPU: about 1-1.5 h on 2 shared cores.
#   bash scripts/table1_shape_sorting.sh [OUT]      (default OUT=runs/results/shape_sorting)
set -eo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
. "$ROOT/scripts/setup.sh" > /dev/null
cd "$ROOT"
OUT=${1:-runs/results/shape_sorting}
export OMP_NUM_THREADS=1   # one BLAS/torch thread per process was 5-10x faster than two on these machines
mkdir -p "$OUT"

# Phase 1: pose pretraining of the conv layers (predict the cube's position), 400 images, 2000 Adam steps.
[ -f "$OUT/pose_pretrain/vision.safetensors" ] ||
  python -m gps_trainer.procedure pose --config config/policy/pose_pretrain.yaml --out "$OUT/pose_pretrain" \
    task=shape_sorting image_size=64 num_train=400 num_test=100 iterations=2000 seed=0 --threads 1
# Phase 2: local controllers by trajectory optimization (30 iterations, 4 cube positions x 5 rollouts).
# (A run directory: the command resumes a stopped run and returns at once for a finished one.)
python -m gps_trainer.procedure controllers --config config/experiments/shape_sorting_traj_opt.yaml \
    --out "$OUT/controllers" --threads 1
# State-based MDGPS policy (sees the true cube position): the pose-prediction baseline's controller.
python -m gps_trainer.procedure gps --config config/experiments/shape_sorting_mdgps.yaml \
    --controllers "$OUT/controllers" --out "$OUT/gps_mdgps_state" --threads 1 --stop-at-success 1.0
gps eval --policy "$OUT/gps_mdgps_state" --task shape_sorting --seed 0 \
  --method state_oracle --out "$OUT/eval_state_oracle.json"
# Phase 3 and the baselines: the same pretrained conv layers and controllers, the same S-step budget
# (2000 minibatch steps per iteration): pose features trains the control layers only, end-to-end
# 1000 steps on them and then 1000 on every layer.
V=(--config config/experiments/shape_sorting_mdgps_visual.yaml --vision "$OUT/pose_pretrain/vision.safetensors"
   --controllers "$OUT/controllers" --out "$OUT" --stop-at-success 1.0
   iterations=6 algorithm.policy_opt.device=cpu)
python -m gps_trainer.paper.baselines --methods pose_features --fc-steps 2000 "${V[@]}"
python -m gps_trainer.paper.baselines --methods end_to_end --fc-steps 1000 --e2e-steps 1000 "${V[@]}"
python -m gps_trainer.paper.baselines --methods pose_prediction --state-policy "$OUT/gps_mdgps_state/policy.safetensors" "${V[@]}"
echo "Table I inputs in $OUT; write the report with: gps report --results runs/results --out docs/results.md"
