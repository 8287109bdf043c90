#!/usr/bin/env bash
# The GPU checks in one go, for a machine with a CUDA device and the requirements installed:
#   1. benchmarks/speed.py on cuda: fp32 and bfloat16 autocast side by side, then with torch.compile;
#      the first table goes into the speed_gpu section of docs/speed.md (with the card's name);
#   2. one short training run per method (baseline, gray; lnl and blindeye from the baseline) and
#      test.py on each, with their epoch times.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]   (default runs/gpu_check; EPOCHS=2, DATA_DIR=./data)
# Raw MNIST must be reachable (pip, IDX files via MNIST_DIR, or a verified cache under XDG_CACHE_HOME).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu_check}
DATA_DIR=${DATA_DIR:-./data}
EPOCHS=${EPOCHS:-2}
PYTHON=${PYTHON:-python}
MNIST_ARGS=()
[ -n "${MNIST_DIR:-}" ] && MNIST_ARGS=(--mnist_dir "$MNIST_DIR")

"$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
'gpu_check.sh: PyTorch sees no CUDA device; run this on a GPU machine (CPU figures: python benchmarks/speed.py --quick)')"
mkdir -p "$OUT"
"$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0), torch.__version__, torch.version.cuda)" | tee "$OUT/gpu.txt"
"$PYTHON" -m dataset.colored_mnist --color_var 0.020 --data_dir "$DATA_DIR" "${MNIST_ARGS[@]}"

"$PYTHON" benchmarks/speed.py --device cuda --data_dir "$DATA_DIR" --json "$OUT/speed.json" \
  --readme docs/speed.md --section speed_gpu | tee "$OUT/speed.txt"
"$PYTHON" benchmarks/speed.py --device cuda --data_dir "$DATA_DIR" --compile --json "$OUT/speed_compile.json" \
  | tee "$OUT/speed_compile.txt"

# the four methods for a few epochs through the sweep (baseline and Gray, then LNL and BlindEye from the baseline),
# then the table, which also prints the seconds per epoch of each method
"$PYTHON" -m experiments.sweep --color_vars 0.020 --seeds 1 --out "$OUT/runs" --data_dir "$DATA_DIR" --launcher local \
  -- --max_step "$EPOCHS" --device cuda
"$PYTHON" -m experiments.collect_results "$OUT/runs" --no_plot | tee "$OUT/short_runs.txt"
