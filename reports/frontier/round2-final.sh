#!/usr/bin/env bash
# Issue 33's round-2 finals, `round2-final.sh 5|6 [sweep options]`: the screen's leaders (reports/frontier/round2/
# stepN/SWEEP.md, validation seeds 0-3) and the base recipe on validation seeds 0-7, ranked in
# reports/frontier/round2/stepN-final/SWEEP.md. Seeds 0-3 of each screened candidate are the screen's own result
# files, copied byte for byte (same recipe, split and seeds: resumed, not retrained); seeds 4-7 are new.
#   OMP_NUM_THREADS=1 nohup bash reports/frontier/round2-final.sh 6 --population 1 --threads 1 > final-6.log 2>&1 &
# Step 6's finalists: the screen's top three (shear 99.454, brightness-contrast 99.452, per-epoch 99.442, all
# within noise of one another at n = 4), and "combo", the three together (chosen before any of its own runs).
set -euo pipefail
STEP=${1:?usage: round2-final.sh 5|6 [sweep options]}
shift
SCREEN="reports/frontier/round2/step$STEP"
OUT="reports/frontier/round2/step$STEP-final"
case "$STEP" in
  6)
    FINALISTS=(shear brightness-contrast per-epoch)
    VARIANTS=(
      --variant "shear: max_shear=10.0"
      --variant "brightness-contrast: max_brightness=0.2 max_contrast=0.2"
      --variant "per-epoch: warmup_frac=0.3 lr_per=epoch"
      --variant "combo: max_shear=10.0 max_brightness=0.2 max_contrast=0.2 warmup_frac=0.3 lr_per=epoch"
    )
    ;;
  *)
    echo "round2-final.sh: step $STEP's finalists are not chosen yet: its screen ($SCREEN/SWEEP.md) comes first" >&2
    exit 2
    ;;
esac
for key in "step$STEP" "${FINALISTS[@]/#/step$STEP.}"; do
  mkdir -p "$OUT/$key"
  for seed in 0 1 2 3; do
    [ -e "$OUT/$key/seed$seed.json" ] || cp "$SCREEN/$key/seed$seed.json" "$OUT/$key/"
  done
done
exec "${TINYMNIST:-tinymnist}" sweep --step "$STEP" --seeds 0-7 --val-split 10000 --out "$OUT" "${VARIANTS[@]}" "$@"
