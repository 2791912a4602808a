#!/usr/bin/env bash
# The paper's central claim on real data: does a foreground generator trained
# with person masks make FPR beat DSR on occluded people?
#
#   scripts/foreground_experiment.sh DATA_ROOT WEIGHTS WORKDIR [EPOCHS_FROZEN] [EPOCHS_FINETUNE]
#
# DATA_ROOT holds CUHK03_pair1/, Partial-REID_Dataset/ and Partial_iLIDS/;
# WEIGHTS is torchreid's osnet_x0_25 Market-1501 state dict. Steps (each one
# resumes or is skipped when its output exists):
#   1. person masks for CUHK03 pair 1's training crops (mediapipe-pose, offline);
#   2. (a) a foreground generator trained on the frozen OSNet trunk;
#   3. (b) the whole network fine-tuned with the FPR triplet and foreground losses;
#   4. Baseline / DSR / FPR on Partial-REID and Partial-iLIDS for (a) and (b),
#      with the paired FPR - DSR difference (scripts/table3_real.py), and on
#      CUHK03 pair 1's held-out 100 people;
#   5. the report with the foreground figures on the real occluded probes.
# Needs the masks extra (pip install -e ".[masks]"). Not run in CI: about an
# hour on a 2-core CPU, minutes on a GPU.
set -euo pipefail
DATA=${1:?DATA_ROOT}; WEIGHTS=${2:?WEIGHTS}; WORK=${3:?WORKDIR}
EPOCHS_FROZEN=${4:-2}; EPOCHS_FINETUNE=${5:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
RE=${REID_EVAL:-reid-eval}
mkdir -p "$WORK"
OSNET="$WORK/osnet_market1501.pt"
[ -f "$OSNET" ] || $RE checkpoint convert --from torchreid "$WEIGHTS" --out "$OSNET" --name "OSNet x0.25, Market-1501, torchreid"

MASKS="$WORK/cuhk03_masks"
$RE masks --dataset cuhk03_pair1 --data-root "$DATA" --model mediapipe-pose --out "$MASKS"

FROZEN="$WORK/fg_frozen"
if [ ! -f "$FROZEN/model.pt" ]; then
  RESUME=(); [ -f "$FROZEN/checkpoint.pt" ] && RESUME=(--resume)
  $RE train --dataset cuhk03_pair1 --data-root "$DATA" --masks "$MASKS" --init "$OSNET" --freeze-trunk \
    --epochs "$EPOCHS_FROZEN" --warmup-epochs 0 --lr 1e-2 --out "$FROZEN" "${RESUME[@]}"
fi
FINETUNED="$WORK/finetuned"
if [ ! -f "$FINETUNED/model.pt" ]; then
  RESUME=(); [ -f "$FINETUNED/checkpoint.pt" ] && RESUME=(--resume)
  $RE train --dataset cuhk03_pair1 --data-root "$DATA" --masks "$MASKS" --init "$FROZEN/model.pt" \
    --epochs "$EPOCHS_FINETUNE" --warmup-epochs 0 --lr 3.5e-5 --out "$FINETUNED" "${RESUME[@]}"
fi

PY=${PYTHON:-python}
"$PY" "$HERE/table3_real.py" --data-root "$DATA" --weights "$WEIGHTS" --workdir "$WORK/table3" --all-rows \
  --fpr-checkpoint "$FROZEN/model.pt" --fpr-checkpoint "$FINETUNED/model.pt" --variants

for CKPT in "$FROZEN/model.pt" "$FINETUNED/model.pt"; do
  $RE extract --dataset cuhk03_pair1 --data-root "$DATA" --checkpoint "$CKPT" --cache-dir "$WORK/table3/cache"
  for METRIC in euclidean dsr fpr; do
    $RE match --dataset cuhk03_pair1 --metric "$METRIC" --checkpoint "$CKPT" --ap market1501 \
      --cache-dir "$WORK/table3/cache" --results-dir "$WORK/table3/results"
  done
done
$RE report --results-dir "$WORK/table3/results" --cache-dir "$WORK/table3/cache" --out-dir "$WORK/table3/report"
