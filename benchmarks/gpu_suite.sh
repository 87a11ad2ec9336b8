#!/usr/bin/env bash
# The GPU benchmark suite of issue 9, in one call on a lent GPU machine:
#
#   DASR_GIT_COMMIT=<commit> bash benchmarks/gpu_suite.sh "$OUT"
#
# Runs, each under `timeout` and within one overall deadline (SUITE_BUDGET_S, default 150 s),
# writing results/benchmarks/<name>_<gpu>.json (<gpu>: h100, h200, ... from nvidia-smi):
#   1. benchmarks/inference.py --device cuda           -> inference_<gpu>.json
#   2. benchmarks/inference.py --device cuda --large   -> inference_large_<gpu>.json
#   3. benchmarks/train_step.py --device cuda (L1; per-sample impls grouped, grouped_cl;
#      NCHW and channels-last; bmm and expert_sum ran at 0.2-0.25x on an H200, so not again)
#                                                      -> train_step_<gpu>.json
#   4. benchmarks/degradation.py --device cuda         -> degradation_<gpu>.json
#   5. only if time is left: torch.compile mode        -> inference_compile_<gpu>.json
# A failing or timed-out step is logged and the suite goes on. The JSONs and suite.log are
# copied into OUTDIR (at most 6 files) and a short summary is printed last.
# Needs python3 with torch (>= 2.4; written against 2.11) and the project's Python deps.
set -u
OUTDIR="${1:?usage: gpu_suite.sh OUTDIR}"
cd "$(dirname "$0")/.."
RESULTS="${SUITE_RESULTS:-results/benchmarks}"
mkdir -p "$OUTDIR" "$RESULTS"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
DASR_GIT_COMMIT="${DASR_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
export DASR_GIT_COMMIT
BUDGET="${SUITE_BUDGET_S:-150}"
# Dry run on a machine without a GPU: SUITE_DEVICE=cpu SUITE_TINY=1 (tiny networks and sizes).
DEVICE="${SUITE_DEVICE:-cuda}"
# File suffix: the GPU model (h100, h200, ...) so results of different cards do not overwrite
# each other (results/benchmarks/train_step_cuda.json came from an H200); cpu for a dry run.
KIND="${DEVICE%%:*}"
if [ "$KIND" = cuda ]; then
  GPU_WORD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 \
    | awk '{print tolower($2)}' | tr -cd 'a-z0-9')
  KIND="${GPU_WORD:-cuda}"
fi
TINY=()
TINY_TRAIN=()
TINY_DEG=()
if [ -n "${SUITE_TINY:-}" ]; then
  TINY=(--num-feat 8 --num-block 2 --predictor-feat 8 --size 24x32 --repeats 3 --warmup 1
        --large-size 96 --tile 32)
  TINY_TRAIN=(--num-feat 8 --num-block 2 --batch 2 --lr-size 8 --repeats 2 --warmup 1)
  TINY_DEG=(--batch 2 --hr-size 64 --batches 1 --warmup 1 --queue-size 4)
fi
LOG="$OUTDIR/suite.log"
START=$(date +%s)

left() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME CAP_S COMMAND...: run COMMAND under timeout min(CAP_S, time left); never fails.
step() {
  local name="$1" cap="$2"
  shift 2
  local limit
  limit=$(left)
  if [ "$limit" -gt "$cap" ]; then limit="$cap"; fi
  if [ "$limit" -lt 5 ]; then
    echo "== $name: skipped (suite budget of ${BUDGET}s spent)" | tee -a "$LOG"
    return 0
  fi
  echo "== $name (timeout ${limit}s, $(( $(date +%s) - START ))s elapsed): $*" | tee -a "$LOG"
  timeout --kill-after=5 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - START ))s" | tee -a "$LOG"
  return 0
}

{
  echo "commit $DASR_GIT_COMMIT"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu \
    --format=csv,noheader 2>&1 || true
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
    "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())' 2>&1
} >>"$LOG"

step inference 60 "$PY" benchmarks/inference.py --device "$DEVICE" --budget-s 40 \
  --out "$RESULTS/inference_$KIND.json" ${TINY[@]+"${TINY[@]}"}
step large 25 "$PY" benchmarks/inference.py --device "$DEVICE" --large \
  --out "$RESULTS/inference_large_$KIND.json" ${TINY[@]+"${TINY[@]}"}
step train_step 55 "$PY" benchmarks/train_step.py --device "$DEVICE" --objectives l1 \
  --impls grouped,grouped_cl --channels-last both --warmup 5 --repeats 20 --end-to-end 0 \
  --out "$RESULTS/train_step_$KIND.json" ${TINY_TRAIN[@]+"${TINY_TRAIN[@]}"}
step degradation 15 "$PY" benchmarks/degradation.py --device "$DEVICE" --batches 5 \
  --commit "$DASR_GIT_COMMIT" --out "$RESULTS/degradation_$KIND.json" \
  ${TINY_DEG[@]+"${TINY_DEG[@]}"}
if [ "$(left)" -ge 35 ] && [ "${DEVICE%%:*}" = cuda ]; then
  step compile "$(left)" "$PY" benchmarks/inference.py --device "$DEVICE" \
    --modes fp16_cl_graph,fp16_cl_compile --variants dasr --compile \
    --compile-mode reduce-overhead \
    --compile-reserve-s 0 --profile off --budget-s "$(( $(left) - 10 ))" \
    --out "$RESULTS/inference_compile_$KIND.json"
else
  echo "== compile: skipped ($(left)s left)" | tee -a "$LOG"
fi

for name in inference inference_large train_step degradation inference_compile; do
  file="$RESULTS/${name}_${KIND}.json"
  if [ -f "$file" ]; then cp "$file" "$OUTDIR/"; fi
done

"$PY" - "$OUTDIR" "$KIND" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
from pathlib import Path

out, kind = Path(sys.argv[1]), sys.argv[2]

def load(name):
    path = out / f"{name}_{kind}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        print(f"{name}: no result ({error})")
        return None

print("==== summary ====")
inf = load("inference")
if inf:
    env = inf["environment"]
    print(f"{env.get('device_name')} torch {env.get('torch')} commit {env.get('git_commit')}")
    for mode, record in inf["modes"].items():
        variants = record.get("variants", {})
        cells = []
        for name in ("srresnet", "dasr", "dasr_naive"):
            v = variants.get(name, {})
            if "median_ms" in v:
                ok = "" if v.get("correct") else "!"
                cells.append(f"{name} {v['median_ms']:.2f}ms{ok}")
            elif "error" in v:
                cells.append(f"{name} ERROR {v['error'][:60]}")
        extra = record.get("skipped") or record.get("error") or ""
        ratio = inf["latency_ratio"].get(mode)
        ratio_text = f"ratio {ratio:.3f}" if ratio is not None else ""
        print(f"  {mode:15s} {ratio_text:12s} {'; '.join(cells)} {extra}")
    print(f"  fastest: {inf.get('fastest')}; all correct: {inf.get('all_correct')}")
comp = load("inference_compile")
if comp:
    for mode, ratio in comp.get("latency_ratio", {}).items():
        d = comp["modes"][mode]["variants"].get("dasr", {})
        print(f"  {mode}: ratio {ratio:.3f}, dasr {d.get('median_ms', float('nan')):.2f} ms")
    for mode, record in comp["modes"].items():
        for name, v in record.get("variants", {}).items():
            if "error" in v:
                print(f"  {mode}/{name} ERROR {v['error'][:100]}")
large = load("inference_large")
if large:
    keys = ("seconds", "peak_gpu_mem_mb", "host_rss_extra_mb", "output", "ok", "error")
    print("large:", {k: large.get(k) for k in keys if k in large})
train = load("train_step")
if train:
    print(f"train_ratio {train.get('train_ratio')} ({train.get('train_ratio_best')})")
    for key, value in train.get("train_ratios", {}).items():
        print(f"  {key}: {value:.3f}")
deg = load("degradation")
if deg:
    rows = deg.get("results", {})
    print("degradation x training:", {k: round(v["ratio_to_training"], 2) for k, v in rows.items()})
EOF
echo "suite done in $(( $(date +%s) - START ))s; files in $OUTDIR: $(ls "$OUTDIR" | tr '\n' ' ')"
