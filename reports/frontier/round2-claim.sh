#!/usr/bin/env bash
# Issue 33's round-2 claims, `round2-claim.sh 5|6 [train options]`: the recipe each step's finals leave registered
# (reports/frontier/round2/stepN-final/SWEEP.md; a candidate resolved better than the base is registered as stepN
# first), trained once on fresh seeds 300-315 (never used before), on the full training set (no validation split),
# judged on test by its own gate; the README's claim2-stepN block says whether issue 33's target is reached. Then
# the TTA rows, on the claims' own weights (TTA was chosen on validation for both steps, reports/frontier/round2/
# TTA.md):
#   OMP_NUM_THREADS=1 nohup bash reports/frontier/round2-claim.sh 6 --population 1 --threads 1 > claim-6.log 2>&1 &
#   python -m tools.tta --claim reports/frontier/round2/claim --out reports/frontier/round2/tta-claim.json \
#     --markdown reports/frontier/round2/TTA-claim.md
set -euo pipefail
source "$(dirname "$0")/_checkout.sh"
STEP=${1:?usage: round2-claim.sh 5|6 [train options]}
shift
FINAL="reports/frontier/round2/step$STEP-final/SWEEP.md"
case "$STEP" in 5|6) ;; *) echo "round2-claim.sh: step $STEP has no round-2 finals; give 5 or 6" >&2; exit 2 ;; esac
# The claim comes after the decision: a finals table with a candidate short of its 8 seeds has made none yet.
if [ ! -f "$FINAL" ] || grep -q -e "(unfinished)" -e "not trained" "$FINAL"; then
  echo "round2-claim.sh: $FINAL: the finals have not finished; run reports/frontier/round2-final.sh $STEP first" >&2
  exit 2
fi
exec "$TINYMNIST" train --step "$STEP" --seeds 300-315 --out reports/frontier/round2/claim "$@"
