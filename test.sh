#!/usr/bin/env bash
# Evaluate what train.sh produced (baseline and LNL of COLOR_VAR and SEED), or the checkpoint given:
#   bash test.sh                                  # runs/baseline_var0.020_seed1 and runs/lnl_var0.020_seed1
#   COLOR_VAR=0.035 SEED=2 bash test.sh
#   bash test.sh path/to/checkpoint.pth [--color_var 0.020 ...]   # any checkpoint, ours or the authors'
set -euo pipefail
# paths given relative to the folder the command runs in (the script itself works from the repository folder)
[ -z "${DATA_DIR:-}" ] || DATA_DIR=$(realpath -m -- "$DATA_DIR")
[ -z "${SAVE_DIR:-}" ] || SAVE_DIR=$(realpath -m -- "$SAVE_DIR")
HERE=$PWD
cd "$(dirname "$0")"
COLOR_VAR=${COLOR_VAR:-0.020}
SEED=${SEED:-1}
DATA_DIR=${DATA_DIR:-./data}
SAVE_DIR=${SAVE_DIR:-./runs}
PYTHON=${PYTHON:-python}

usage() {
  cat <<'USAGE'
usage: [COLOR_VAR=0.020] [SEED=1] bash test.sh [TEST.PY OPTIONS]
       bash test.sh CHECKPOINT.pth [TEST.PY OPTIONS]

Evaluates on the unbiased test set the runs train.sh made for COLOR_VAR and SEED
($SAVE_DIR/baseline_var<COLOR_VAR>_seed<SEED> and $SAVE_DIR/lnl_var<COLOR_VAR>_seed<SEED>; after
BASELINE=pretrained or BASELINE=FILE bash train.sh there is no baseline run and LNL alone is evaluated), or the
checkpoint file given (ours or the authors').

Environment variables:
  COLOR_VAR   colour variance sigma^2 of the runs (default 0.020)
  SEED        seed of the runs (default 1)
  DATA_DIR    folder of the data files (default: data/ of the repository; a relative path is taken from the
              current folder, as are SAVE_DIR and a checkpoint path)
  SAVE_DIR    parent folder of the run folders (default: runs/ of the repository)
  PYTHON      the Python interpreter (default python)

Extra arguments go to every test.py call; test.py's options:

USAGE
}
for arg in "$@"; do
  case "$arg" in -h|--help) usage; exec "$PYTHON" test.py --help ;; esac
done

if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  ckpt=$(cd "$HERE" && realpath -m -- "$1"); shift
  exec "$PYTHON" test.py --checkpoint "$ckpt" --data_dir "$DATA_DIR" "$@"
fi
CV=$(LC_ALL=C printf '%.3f' "$COLOR_VAR" 2>/dev/null) || { echo "error: COLOR_VAR=$COLOR_VAR is not a number (e.g. COLOR_VAR=0.035)" >&2; exit 2; }
[ "$(LC_ALL=C printf '%.9f' "$COLOR_VAR")" = "$(LC_ALL=C printf '%.9f' "$CV")" ] || { echo "error: COLOR_VAR=$COLOR_VAR has more than three decimals; the data files are made for sigma^2 in steps of 0.001 (e.g. COLOR_VAR=$CV)" >&2; exit 2; }
# the train.sh command of these runs: the variables that differ from the defaults, then bash train.sh
train_cmd=""
[ "$CV" = 0.020 ] || train_cmd+="COLOR_VAR=$COLOR_VAR "
[ "$SEED" = 1 ] || train_cmd+="SEED=$SEED "
[ "$DATA_DIR" = ./data ] || train_cmd+="DATA_DIR=$DATA_DIR "
[ "$SAVE_DIR" = ./runs ] || train_cmd+="SAVE_DIR=$SAVE_DIR "
train_cmd+="bash train.sh"
trained() { compgen -G "$SAVE_DIR/$1/checkpoint_*.pth" > /dev/null; }
base="baseline_var${CV}_seed${SEED}"
lnl="lnl_var${CV}_seed${SEED}"
runs=()
if trained "$base"; then
  runs+=("$base")
elif trained "$lnl"; then
  echo "note: no baseline run in $SAVE_DIR/$base (BASELINE=pretrained or BASELINE=FILE trains LNL alone); evaluating $lnl" >&2
else
  echo "error: no trained run of COLOR_VAR=$CV SEED=$SEED in $SAVE_DIR ($base, $lnl); train first: $train_cmd" >&2
  exit 2
fi
if trained "$lnl"; then
  runs+=("$lnl")
else
  echo "note: $SAVE_DIR/$lnl holds no checkpoint yet (LNL trains after the baseline: $train_cmd); evaluating $base" >&2
fi
for run in "${runs[@]}"; do
  "$PYTHON" test.py -e "$run" --data_dir "$DATA_DIR" --save_dir "$SAVE_DIR" "$@"
done
