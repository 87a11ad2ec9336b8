#!/usr/bin/env bash
# One GPU lease (docs/shared_training.md): continue SRResNet / DASR training from the published
# weights in .carry/lease, evaluate on the GPU, write the returned files into $OUT.
# Usage on the device: bash scripts/lease.sh [--set key=value ...]   ($OUT set by the device tool)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?OUT must name the folder whose files come back}"
python=${PYTHON:-python3}
"$python" - <<'PY'
import importlib.util, sys
need = ("torch", "numpy", "PIL", "safetensors", "yaml", "pandas")
missing = [m for m in need if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"lease: missing Python packages {missing} (Python {sys.version.split()[0]})")
PY
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m dasrlib.lease run --carry .carry/lease --out "$OUT" "$@"
