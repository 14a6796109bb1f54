#!/usr/bin/env bash
# Issue 33's step-5 sweep (round 2): the leads the first sweep did not try (issue 33's leads 1-3;
# each option is off by default and documented in tinymnist.recipes), screened on validation seeds 0-3 (a
# 10,000-image validation split, as round 1), ranked in reports/frontier/round2/step5/SWEEP.md. The finalists
# then get seeds 0-7. Resumable; run it in the background with one thread per process:
#   OMP_NUM_THREADS=1 nohup bash reports/frontier/round2_step5.sh --population 1 > round2-5.log 2>&1 &
# The base recipe and round 1's top candidate (bs32) on seeds 0-3 are round 1's own result files, copied
# byte for byte from reports/frontier/step5.
set -euo pipefail
# Lead 1 scaled down (4,962 params): conv 1->6->20 to 24x24, 1x1 to 8, pool, 3x 10, padded 10; trained as the
# published 9,994-param net (step 6's script says how).
WIDE='model=step2 model_kwargs={"block1":[6,20],"transition":8,"block2":[10,10,10],"head":10,"dropout":0.0}'
PUBLISHED='batch_size=32 max_degrees=10.0 max_shift=0.0 warmup_frac=0.3 lr_per=epoch'
# Lead 2, the 3,762-param anchor as published (adilsammar/woolly-of-cv): dropout 0.01 only after the first two
# blocks, random brightness and contrast (albumentations' defaults, 0.2 each), Xavier-uniform weights, the learning
# rate set once per epoch on the knots [0, 2, 8, 12, 15] -> [0.05, 0.1, 0.01, 0.0025, 0], momentum 0, batch 32;
# its ShiftScaleRotate on half the images as round 1's replica.
ANCHOR='model=blocks model_kwargs={"dropout_at":"block"} init=xavier max_brightness=0.2 max_contrast=0.2 batch_size=32 momentum=0 schedule=piecewise lr_points=[[0,0.5],[2,1],[8,0.1],[12,0.025],[15,0]] lr_per=epoch max_shift=0.09 max_scale=0.09 aug_prob=0.5'
exec "${TINYMNIST:-tinymnist}" sweep --step 5 --seeds 0-3 --val-split 10000 --out reports/frontier/round2/step5 \
  --variant "bs32: batch_size=32" \
  --variant "wide24: $WIDE $PUBLISHED" \
  --variant "per-epoch: warmup_frac=0.3 lr_per=epoch" \
  --variant "anchor-published: $ANCHOR" \
  --variant "swa-bn: swa_epochs=3 bn_recalibrate=true" \
  --variant "elastic: elastic_alpha=34.0 elastic_sigma=4.0" \
  --variant "shear: max_shear=10.0" \
  --variant "brightness-contrast: max_brightness=0.2 max_contrast=0.2" \
  --variant "xavier: init=xavier" \
  "$@"
