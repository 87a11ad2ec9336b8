#!/usr/bin/env bash
# Issue 10: train on one GPU with the library's training code and the shared_*.yaml parameters.
#   1. SRResNet pretrain (pixel loss);
#   2. two DASR (N = 5) runs from it, side by side on the same GPU: the plain recipe, and one that
#      first fits the predictor alone (predictor_warmup_iters) and breaks the experts' symmetry
#      (expert_init_noise);
#   3. the SRResNet baseline continued from the same pretrain for as many iterations as the longer
#      DASR run reached.
# Usage: [RUNS=results/runs] scripts/train_shared.sh DATA_ROOT [--set key=value ...]
# (extra --set go to every run; RUNS is the folder of run folders)
set -uo pipefail
data=${1:?usage: scripts/train_shared.sh DATA_ROOT [--set key=value ...]}
shift
runs=${RUNS:-results/runs}
mkdir -p "$runs"
train() { "${PYTHON:-python3}" -m dasrlib.train --set "data_root=$data" --set "out_dir=$runs" "$@"; }
from_pretrain="init_from=$runs/shared_pretrain"

train --params notebooks/params/shared_pretrain.yaml "$@" || exit 1
train --params notebooks/params/shared_dasr.yaml --set "$from_pretrain" "$@" > "$runs/shared_dasr.log" 2>&1 &
plain=$!
train --params notebooks/params/shared_dasr.yaml --set "$from_pretrain" --set name=shared_dasr_warm \
    --set predictor_warmup_iters=500 --set expert_init_noise=0.01 "$@" \
    > "$runs/shared_dasr_warm.log" 2>&1 &
warm=$!
wait $plain; rc_plain=$?
wait $warm; rc_warm=$?
tail -n 8 "$runs/shared_dasr.log" "$runs/shared_dasr_warm.log"
iterations=$(RUNS=$runs "${PYTHON:-python3}" - <<'PY'
import os
import pandas as pd
runs = [os.path.join(os.environ["RUNS"], n) for n in ("shared_dasr", "shared_dasr_warm")]
print(max(int(pd.read_csv(f"{r}/val.csv")["iteration"].max()) for r in runs))
PY
) || exit 1
echo "baseline iterations: $iterations (DASR exit codes $rc_plain, $rc_warm)"
train --params notebooks/params/shared_baseline.yaml --set "$from_pretrain" \
    --set "iterations=$iterations" "$@"
