#!/usr/bin/env bash
# One campaign budget on a lent accelerator machine that returns only what is written under $OUT.
# The shared data folder is not there: carry the training and evaluation images in a folder of
# the working tree (for example data/shared/train and data/shared/eval) and name them below.
# Usage on the device:
#   BUDGET=9m bash scripts/device_budget.sh --set data_root=data/shared/train --set eval_root=data/shared/eval
# Then, here: copy "$files_at"/models/* over results/models/ and commit them.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?OUT must name the folder whose files come back}"
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$python" -m dasrlib.campaign run --budget "${BUDGET:-9m}" "$@"
mkdir -p "$OUT/models"
# The published files only (weights are fp16: DASR ~16 MB, SRResNet ~3 MB).
cp -r results/models/. "$OUT/models/"
