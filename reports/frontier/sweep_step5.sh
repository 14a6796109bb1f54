#!/usr/bin/env bash
# The step-5 sweep of issue 21: candidates x seeds 0-7 on a 10,000-image validation split, ranked on validation
# only (reports/frontier/step5/SWEEP.md). Resumable: rerun it and completed seeds are kept. Hours of CPU: run it
# in the background, e.g. `nohup bash reports/frontier/sweep_step5.sh > sweep5.log 2>&1 &`.
set -euo pipefail
ANCHOR='batch_size=32 momentum=0 schedule=piecewise lr_points=[[0,0.5],[3,1],[9,0.1],[15,0]] max_shift=0.09 max_scale=0.09 aug_prob=0.5'
exec "${TINYMNIST:-tinymnist}" sweep --step 5 --seeds 0-7 --val-split 10000 --out reports/frontier/step5 \
  --variant "model=blocks $ANCHOR" \
  --variant "model=blocks" \
  --variant "model=blocks model_kwargs={\"blocks\":[[4,4,4],[8,8,8],[10,10,10]]} $ANCHOR" \
  --variant "batch_size=32" \
  --variant "aug_prob=0.5 max_scale=0.09" \
  --variant "schedule=piecewise lr_points=[[0,0.5],[3,1],[9,0.1],[15,0]]" \
  --variant "max_scale=0.09" \
  --variant "model=blocks ${ANCHOR/momentum=0/momentum=0.9} lr=0.01" \
  "$@"
