#!/usr/bin/env bash
# Issue 33's round-2 finals, `round2-final.sh 5|6 [sweep options]`: the screen's leaders (reports/frontier/round2/
# stepN/SWEEP.md, validation seeds 0-3) and the base recipe on validation seeds 0-7, ranked in
# reports/frontier/round2/stepN-final/SWEEP.md. Seeds 0-3 of each screened candidate are the screen's own result
# files, copied byte for byte (same recipe, split and seeds: resumed, not retrained); seeds 4-7 are new.
#   OMP_NUM_THREADS=1 nohup bash reports/frontier/round2-final.sh 6 --population 1 --threads 1 > final-6.log 2>&1 &
# Step 6's finalists: the screen's top three (shear 99.454, brightness-contrast 99.452, per-epoch 99.442, all
# within noise of one another at n = 4), and "combo", the three together (chosen before any of its own runs).
set -euo pipefail
source "$(dirname "$0")/_checkout.sh"
STEP=${1:?usage: round2-final.sh 5|6 [sweep options]}
shift
SCREEN="reports/frontier/round2/step$STEP"
OUT="reports/frontier/round2/step$STEP-final"
case "$STEP" in
  5)
    # Step 5's finalists: the screen's top three (xavier 99.306, bs32 99.267, wide24 99.266, against the base's
    # 99.259: all within noise at n = 4) and "xavier-bs32", the two changes to the registered net together
    # (chosen before any run of its own; wide24 changes the net and the whole recipe, so it stays alone).
    FINALISTS=(xavier bs32 wide24)
    WIDE='model=step2 model_kwargs={"block1":[6,20],"transition":8,"block2":[10,10,10],"head":10,"dropout":0.0}'
    VARIANTS=(
      --variant "xavier: init=xavier"
      --variant "bs32: batch_size=32"
      --variant "wide24: $WIDE batch_size=32 max_degrees=10.0 max_shift=0.0 warmup_frac=0.3 lr_per=epoch"
      --variant "xavier-bs32: init=xavier batch_size=32"
    )
    ;;
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
exec "$TINYMNIST" sweep --step "$STEP" --seeds 0-7 --val-split 10000 --out "$OUT" "${VARIANTS[@]}" "$@"
