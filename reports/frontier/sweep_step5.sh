#!/usr/bin/env bash
# The step-5 sweep of issue 21: candidates x seeds 0-7 on a 10,000-image validation split, ranked on validation
# only (reports/frontier/step5/SWEEP.md). Resumable: rerun it and completed seeds are kept; add --rank-only to
# rank what is there without training. Hours of CPU: run it in the background, e.g.
#   nohup bash reports/frontier/sweep_step5.sh > sweep5.log 2>&1 &
set -euo pipefail
source "$(dirname "$0")/_checkout.sh"
# The public anchor's training (issue 21): batch 32, no momentum, the piecewise-linear schedule 0.05 -> 0.1 at
# epoch 3 -> 0.01 at epoch 9 -> 0 at 15, shift-scale-rotate (0.09, 0.09, 7 degrees) on half the images.
ANCHOR='batch_size=32 momentum=0 schedule=piecewise lr_points=[[0,0.5],[3,1],[9,0.1],[15,0]] max_shift=0.09 max_scale=0.09 aug_prob=0.5'
exec "$TINYMNIST" sweep --step 5 --seeds 0-7 --val-split 10000 --out reports/frontier/step5 \
  --variant "anchor: model=blocks $ANCHOR" \
  --variant "blocks: model=blocks" \
  --variant "anchor-wide3: model=blocks model_kwargs={\"blocks\":[[4,4,4],[8,8,8],[10,10,10]]} $ANCHOR" \
  --variant "bs32: batch_size=32" \
  --variant "half-aug-zoom: aug_prob=0.5 max_scale=0.09" \
  --variant "piecewise: schedule=piecewise lr_points=[[0,0.5],[3,1],[9,0.1],[15,0]]" \
  --variant "zoom: max_scale=0.09" \
  "$@"
# Listed once and dropped untrained: "anchor-momentum" (the anchor with momentum 0.9 at lr 0.01). The anchor's
# family (anchor, blocks, anchor-wide3) ranked last on validation, 0.19-0.39 points below the top candidate
# (each resolved, SWEEP.md), so a fourth member was not worth its 1-2 hours of CPU. A sweep decides only once
# every listed candidate has its seeds, so a dropped one leaves the list.
