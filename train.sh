#!/usr/bin/env bash
# The paper's recipe for one colour variance: data (train.py makes it if missing) -> baseline (lr 0.01) -> LNL from the
# baseline (lr 0.001) -> evaluation of both on the unbiased test set. Run folders are named as the sweep names them:
# runs/baseline_var0.020_seed1 and runs/lnl_var0.020_seed1.
#   bash train.sh                          # sigma^2 = 0.020, seed 1, 100 epochs each
#   COLOR_VAR=0.035 SEED=2 bash train.sh   # another variance or seed
#   bash train.sh --max_step 2             # extra arguments go to both train.py calls
set -euo pipefail
cd "$(dirname "$0")"
COLOR_VAR=${COLOR_VAR:-0.020}
SEED=${SEED:-1}
DATA_DIR=${DATA_DIR:-./data}
SAVE_DIR=${SAVE_DIR:-./runs}
PYTHON=${PYTHON:-python}
CV=$(LC_ALL=C printf '%.3f' "$COLOR_VAR" 2>/dev/null) || { echo "error: COLOR_VAR=$COLOR_VAR is not a number (e.g. COLOR_VAR=0.035)" >&2; exit 2; }
BASE=baseline_var${CV}_seed${SEED}
LNL=lnl_var${CV}_seed${SEED}

"$PYTHON" train.py -e "$BASE" --method baseline --color_var "$COLOR_VAR" --random_seed "$SEED" --lr 0.01 \
  --data_dir "$DATA_DIR" --save_dir "$SAVE_DIR" "$@"
"$PYTHON" train.py -e "$LNL" --method lnl --color_var "$COLOR_VAR" --random_seed "$SEED" --lr 0.001 \
  --use_pretrain --checkpoint "$SAVE_DIR/$BASE/checkpoint_last.pth" \
  --data_dir "$DATA_DIR" --save_dir "$SAVE_DIR" "$@"
"$PYTHON" test.py -e "$BASE" --data_dir "$DATA_DIR" --save_dir "$SAVE_DIR"
"$PYTHON" test.py -e "$LNL" --data_dir "$DATA_DIR" --save_dir "$SAVE_DIR"
