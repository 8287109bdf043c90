#!/usr/bin/env bash
# Evaluate what train.sh produced (baseline and LNL of COLOR_VAR and SEED), or the checkpoint given:
#   bash test.sh                                  # runs/baseline_var0.020_seed1 and runs/lnl_var0.020_seed1
#   COLOR_VAR=0.035 SEED=2 bash test.sh
#   bash test.sh path/to/checkpoint.pth [--color_var 0.020 ...]   # any checkpoint, ours or the authors'
set -euo pipefail
cd "$(dirname "$0")"
COLOR_VAR=${COLOR_VAR:-0.020}
SEED=${SEED:-1}
DATA_DIR=${DATA_DIR:-./data}
SAVE_DIR=${SAVE_DIR:-./runs}
PYTHON=${PYTHON:-python}

if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  ckpt=$1; shift
  exec "$PYTHON" test.py --checkpoint "$ckpt" --data_dir "$DATA_DIR" "$@"
fi
CV=$(LC_ALL=C printf '%.3f' "$COLOR_VAR" 2>/dev/null) || { echo "error: COLOR_VAR=$COLOR_VAR is not a number (e.g. COLOR_VAR=0.035)" >&2; exit 2; }
for run in "baseline_var${CV}_seed${SEED}" "lnl_var${CV}_seed${SEED}"; do
  "$PYTHON" test.py -e "$run" --data_dir "$DATA_DIR" --save_dir "$SAVE_DIR" "$@"
done
