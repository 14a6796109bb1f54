#!/usr/bin/env bash
# The step-6 sweep of issue 21 (< 10,000 parameters, mean final >= 99.60): candidates x seeds 0-7 on a 10,000-image
# validation split, ranked on validation only (reports/frontier/step6/SWEEP.md). About 9 x 8 seeds x 5-9 min of
# one core each (over 6 hours of this machine), so it runs in the background across sessions, resumably:
#   nohup bash reports/frontier/sweep_step6.sh > sweep6.log 2>&1 &
# and `bash reports/frontier/sweep_step6.sh --rank-only` ranks what is there. The candidates are the step-5
# sweep's cheap changes that did not lose on validation there (batch 32, zoom, zoom on half the images), the
# standard regularisers the registered recipe does not use yet (EMA of the weights, label smoothing, weight
# decay, Nesterov), and the anchor's block network widened to the budget (8,986 parameters).
set -euo pipefail
source "$(dirname "$0")/_checkout.sh"
exec "$TINYMNIST" sweep --step 6 --seeds 0-7 --val-split 10000 --out reports/frontier/step6 \
  --variant "bs32: batch_size=32" \
  --variant "zoom: max_scale=0.09" \
  --variant "half-aug-zoom: aug_prob=0.5 max_scale=0.09" \
  --variant "ema: ema=0.999" \
  --variant "smooth: label_smoothing=0.1" \
  --variant "wd: weight_decay=0.0001" \
  --variant "nesterov: nesterov=true" \
  --variant "blocks-wide: model=blocks model_kwargs={\"blocks\":[[8,8,8],[12,12,12],[12,12,12]]}" \
  "$@"
