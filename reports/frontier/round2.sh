#!/usr/bin/env bash
# Issue 33's sweeps (round 2), `round2.sh 5|6 [sweep options]`: the leads the first sweeps did not try (issue 33's
# leads 1-3; each option is off by default and documented in tinymnist.recipes), screened on validation seeds 0-3
# (a 10,000-image validation split, as round 1), ranked in reports/frontier/round2/stepN/SWEEP.md. The
# finalists then get seeds 0-7. Resumable; hours of one core, so run it in the background with one thread
# per process and one job at a time, leaving a core free:
#   OMP_NUM_THREADS=1 nohup bash reports/frontier/round2.sh 6 --population 1 --threads 1 > round2-6.log 2>&1 &
# The base recipe and round 1's top candidate (bs32 for step 5, ema for step 6) on seeds 0-3 are round 1's own
# result files, copied byte for byte from reports/frontier/stepN (same recipe, split and seeds: resumed).
set -euo pipefail
source "$(dirname "$0")/_checkout.sh"
STEP=${1:?usage: round2.sh 5|6 [sweep options]}
shift
# Lead 1 as published (9,994 params): conv 1->10->30 to 24x24, 1x1 to 10, pool, 3x 14, padded 14, GAP, 1x1;
# no dropout; rotation +-10 degrees only; SGD momentum 0.9, batch 32; one cycle to 0.1 with 30% warm-up, read
# once per epoch. For step 5 scaled down (4,962 params): 1->6->20, 1x1 to 8, 3x 10, padded 10.
PUBLISHED='batch_size=32 max_degrees=10.0 max_shift=0.0 warmup_frac=0.3 lr_per=epoch'
# Lead 2, the 3,762-param anchor as published (adilsammar/woolly-of-cv): dropout 0.01 only after the first two
# blocks, random brightness and contrast (albumentations' defaults, 0.2 each), Xavier-uniform weights, the
# learning rate set once per epoch on the knots [0, 2, 8, 12, 15] -> [0.05, 0.1, 0.01, 0.0025, 0], momentum 0,
# batch 32; its ShiftScaleRotate on half the images as round 1's replica.
ANCHOR='model=blocks model_kwargs={"dropout_at":"block"} init=xavier max_brightness=0.2 max_contrast=0.2 batch_size=32 momentum=0 schedule=piecewise lr_points=[[0,0.5],[2,1],[8,0.1],[12,0.025],[15,0]] lr_per=epoch max_shift=0.09 max_scale=0.09 aug_prob=0.5'
case "$STEP" in
  5)
    WIDE='model=step2 model_kwargs={"block1":[6,20],"transition":8,"block2":[10,10,10],"head":10,"dropout":0.0}'
    TOP=(--variant "bs32: batch_size=32")
    ONLY=(--variant "anchor-published: $ANCHOR")
    ;;
  6)
    WIDE='model=step2 model_kwargs={"block1":[10,30],"transition":10,"block2":[14,14,14],"head":14,"dropout":0.0}'
    TOP=(--variant "ema: ema=0.999")
    ONLY=()
    ;;
  *)
    echo "round2.sh: step $STEP has no round-2 sweep; give 5 or 6" >&2
    exit 2
    ;;
esac
exec "$TINYMNIST" sweep --step "$STEP" --seeds 0-3 --val-split 10000 \
  --out "reports/frontier/round2/step$STEP" \
  "${TOP[@]}" \
  --variant "wide24: $WIDE $PUBLISHED" \
  --variant "per-epoch: warmup_frac=0.3 lr_per=epoch" \
  "${ONLY[@]}" \
  --variant "swa-bn: swa_epochs=3 bn_recalibrate=true" \
  --variant "elastic: elastic_alpha=34.0 elastic_sigma=4.0" \
  --variant "shear: max_shear=10.0" \
  --variant "brightness-contrast: max_brightness=0.2 max_contrast=0.2" \
  --variant "xavier: init=xavier" \
  "$@"
