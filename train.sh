#!/usr/bin/env bash
# The paper's recipe for one colour variance: data (train.py makes it if missing) -> baseline (lr 0.01) -> LNL from the
# baseline (lr 0.001) -> evaluation of both on the unbiased test set.
#   bash train.sh                          # sigma^2 = 0.020, 100 epochs each
#   COLOR_VAR=0.035 bash train.sh          # another variance
#   bash train.sh --max_step 2             # extra arguments go to both train.py calls
set -euo pipefail
cd "$(dirname "$0")"
COLOR_VAR=${COLOR_VAR:-0.020}
DATA_DIR=${DATA_DIR:-./data}
SAVE_DIR=${SAVE_DIR:-./runs}
PYTHON=${PYTHON:-python}
BASE=baseline_var_${COLOR_VAR}
LNL=lnl_var_${COLOR_VAR}

"$PYTHON" train.py -e "$BASE" --method baseline --color_var "$COLOR_VAR" --lr 0.01 \
  --data_dir "$DATA_DIR" --save_dir "$SAVE_DIR" "$@"
"$PYTHON" train.py -e "$LNL" --method lnl --color_var "$COLOR_VAR" --lr 0.001 \
  --use_pretrain --checkpoint "$SAVE_DIR/$BASE/checkpoint_last.pth" \
  --data_dir "$DATA_DIR" --save_dir "$SAVE_DIR" "$@"
"$PYTHON" test.py -e "$BASE" --data_dir "$DATA_DIR" --save_dir "$SAVE_DIR"
"$PYTHON" test.py -e "$LNL" --data_dir "$DATA_DIR" --save_dir "$SAVE_DIR"
