#!/usr/bin/env bash
# The real-model comparison as it was run (docs/real_model/SETTING.md), one job after another in
# multirun/real_model; every step is a resumable `python -m irpo -m sweep=real_model ...`, so
# running this script again after an interruption picks up where it stopped.
#   nohup nice -n 19 bash docs/real_model/run.sh > multirun/real_model.log 2>&1 &
# 1. each arm's learning-rate grid, one iteration from M_0 (the first job evaluates M_0 and
#    samples iteration 0's completions; the others reuse both);
# 2. each arm's learning rate = its grid point with the highest validation accuracy of M_1
#    (a tie goes to the smaller rate), chosen by the rule below from the jobs' metrics;
# 3. M_0's arm (its evaluation reused); IRPO's chosen job extended to its second iteration
#    (last, so that the one-iteration comparison of every arm is complete first).
# STaR and DPO stop at one iteration (SETTING.md: the cut that fits the compute).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
SWEEP=${SWEEP:-multirun/real_model}
irpo() { echo "== $(date -u +%FT%TZ) python -m irpo -m sweep=real_model $*"; $PY -m irpo -m sweep=real_model "$@" $EXTRA; }
EXTRA=${EXTRA:-}  # more overrides for every command (a reduced smoke run)

irpo experiment=real_model/irpo iterations=1 model.lr=3e-6,1e-5
chosen() {  # chosen <method name>: the grid's learning rate with the best validation accuracy of M_1
  $PY - "$SWEEP" "$1" <<'PY'
import json, sys
from pathlib import Path
import yaml
sweep, arm = Path(sys.argv[1]), sys.argv[2]
rows = []
for d in sorted(sweep.glob(f"{arm}_lr*_seed0")):
    lr = float(yaml.safe_load((d / ".hydra" / "config.yaml").read_text())["model"]["lr"])
    rows.append((json.loads((d / "iter_0" / "metrics.json").read_text())["val_accuracy_selected"], -lr, lr))
best = max(rows)
print(f"{best[2]:g}")
print(arm, "validation accuracy of M_1 by lr:", ", ".join(f"{lr:g} {acc:.3f}" for acc, _, lr in sorted(rows, key=lambda r: r[2])), "->", f"{best[2]:g}", file=sys.stderr)
PY
}
irpo experiment=real_model/dpo iterations=1 model.lr=3e-6,1e-5
irpo experiment=real_model/star iterations=1 model.lr=1e-5,3e-5
IRPO_LR=$(chosen irpo)
DPO_LR=$(chosen dpo)
STAR_LR=$(chosen sft_chosen)
irpo experiment=real_model/zero_shot
irpo experiment=real_model/irpo model.lr="$IRPO_LR"
echo "== $(date -u +%FT%TZ) done; chosen: irpo $IRPO_LR, dpo $DPO_LR, sft_chosen $STAR_LR"
