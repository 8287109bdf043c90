#!/usr/bin/env bash
# The paper's recipe for one colour variance: data (made if missing) -> baseline (lr 0.01) -> LNL from the finished
# baseline (lr 0.001) -> evaluation of both on the unbiased test set, through the sweep (one sigma^2, one seed), so
# that the same command resumes an interrupted run and skips finished ones. Run folders are named as the sweep names
# them: runs/baseline_var0.020_seed1 and runs/lnl_var0.020_seed1.
#   bash train.sh                          # sigma^2 = 0.020, seed 1, 100 epochs each
#   COLOR_VAR=0.035 SEED=2 bash train.sh   # another variance or seed
#   bash train.sh --max_step 2             # extra arguments go to both train.py calls
#   bash train.sh --overwrite ...          # train again the runs whose options differ from an earlier call's
#   BASELINE=pretrained bash train.sh      # LNL only, from the shipped baseline (pretrained/, sigma^2 = 0.020)
#   BASELINE=path/to/checkpoint.pth bash train.sh   # LNL only, from that finished baseline checkpoint
set -euo pipefail
case "${BASELINE:-train}" in train|pretrained) ;; *) BASELINE=$(realpath -m -- "$BASELINE") ;; esac
cd "$(dirname "$0")"
COLOR_VAR=${COLOR_VAR:-0.020}
SEED=${SEED:-1}
DATA_DIR=${DATA_DIR:-./data}
SAVE_DIR=${SAVE_DIR:-./runs}
PYTHON=${PYTHON:-python}
CV=$(LC_ALL=C printf '%.3f' "$COLOR_VAR" 2>/dev/null) || { echo "error: COLOR_VAR=$COLOR_VAR is not a number (e.g. COLOR_VAR=0.035)" >&2; exit 2; }
sweep_args=()
train_args=()
for arg in "$@"; do
  if [ "$arg" = "--overwrite" ]; then sweep_args+=(--overwrite); else train_args+=("$arg"); fi
done
methods=(baseline lnl)
case "${BASELINE:-train}" in
  train) ;;
  pretrained) sweep_args+=(--base_checkpoint pretrained/baseline_var0.020_seed2.pth); methods=(lnl) ;;
  *) sweep_args+=(--base_checkpoint "$BASELINE"); methods=(lnl) ;;
esac
exec "$PYTHON" -m experiments.sweep --color_vars "$CV" --methods "${methods[@]}" --seeds "$SEED" --out "$SAVE_DIR" \
  --data_dir "$DATA_DIR" --launcher local --show_output --no_probe ${sweep_args[@]+"${sweep_args[@]}"} \
  -- ${train_args[@]+"${train_args[@]}"}
