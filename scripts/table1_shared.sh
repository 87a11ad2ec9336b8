#!/usr/bin/env bash
# Table 1 on Set5, Set14 and B100 of ../shared/data/eval, an optional external data folder beside
# the repository holding the HR images of Set5, Set14 and B100 (results/tables/{set5,set14,b100}/).
# Each data set is a separate run, so a finished one is complete on its own.
# Usage: [PYTHON=python] scripts/table1_shared.sh set5 set14 b100
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python}" -m dasrlib.data fetch imagenet-features
"${PYTHON:-python}" -m dasrlib.data fetch realesrgan-x4plus
mkdir -p results/runs
for name in "$@"; do
    "${PYTHON:-python}" -m papermill notebooks/table1.ipynb "results/runs/table1_shared_${name}.ipynb" \
        -f "notebooks/params/table1_shared_${name}.yaml" --log-output
done
