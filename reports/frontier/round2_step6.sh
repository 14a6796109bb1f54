#!/usr/bin/env bash
# Issue 33's step-6 sweep (round 2): the leads the first sweep did not try (issue 33's leads 1-3;
# each option is off by default and documented in tinymnist.recipes), screened on validation seeds 0-3 (a
# 10,000-image validation split, as round 1), ranked in reports/frontier/round2/step6/SWEEP.md. The finalists
# then get seeds 0-7 (rerun with --seeds 0-7 and only them listed). Resumable; hours of one core, so run it in
# the background with one thread per process:
#   OMP_NUM_THREADS=1 nohup bash reports/frontier/round2_step6.sh --population 1 > round2-6.log 2>&1 &
# The base recipe and round 1's top candidate (ema) on seeds 0-3 are round 1's own result files, copied
# byte for byte from reports/frontier/step6 (same recipe, split and seeds, so the sweep resumes them).
set -euo pipefail
# Lead 1, as published (9,994 params): conv 1->10->30 to 24x24, 1x1 to 10, pool, 3x 14, padded 14, GAP, 1x1;
# no dropout; rotation +-10 degrees only; SGD momentum 0.9, batch 32; one cycle to 0.1 with 30% warm-up, read
# once per epoch.
WIDE='model=step2 model_kwargs={"block1":[10,30],"transition":10,"block2":[14,14,14],"head":14,"dropout":0.0}'
PUBLISHED='batch_size=32 max_degrees=10.0 max_shift=0.0 warmup_frac=0.3 lr_per=epoch'
exec "${TINYMNIST:-tinymnist}" sweep --step 6 --seeds 0-3 --val-split 10000 --out reports/frontier/round2/step6 \
  --variant "ema: ema=0.999" \
  --variant "wide24: $WIDE $PUBLISHED" \
  --variant "per-epoch: warmup_frac=0.3 lr_per=epoch" \
  --variant "swa-bn: swa_epochs=3 bn_recalibrate=true" \
  --variant "elastic: elastic_alpha=34.0 elastic_sigma=4.0" \
  --variant "shear: max_shear=10.0" \
  --variant "brightness-contrast: max_brightness=0.2 max_contrast=0.2" \
  --variant "xavier: init=xavier" \
  "$@"
