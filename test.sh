#!/usr/bin/env bash
# Evaluate what train.sh produced (baseline and LNL of COLOR_VAR), or the checkpoint given:
#   bash test.sh                                  # runs/baseline_var_0.020 and runs/lnl_var_0.020
#   COLOR_VAR=0.035 bash test.sh
#   bash test.sh path/to/checkpoint.pth [--color_var 0.020 ...]   # any checkpoint, ours or the authors'
set -euo pipefail
cd "$(dirname "$0")"
COLOR_VAR=${COLOR_VAR:-0.020}
DATA_DIR=${DATA_DIR:-./data}
SAVE_DIR=${SAVE_DIR:-./runs}
PYTHON=${PYTHON:-python}

if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  ckpt=$1; shift
  exec "$PYTHON" test.py --checkpoint "$ckpt" --data_dir "$DATA_DIR" "$@"
fi
for run in "baseline_var_${COLOR_VAR}" "lnl_var_${COLOR_VAR}"; do
  "$PYTHON" test.py -e "$run" --data_dir "$DATA_DIR" --save_dir "$SAVE_DIR" "$@"
done
