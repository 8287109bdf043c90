#!/usr/bin/env bash
# The paper's recipe for one colour variance: data (made if missing) -> baseline (lr 0.01) -> LNL from the finished
# baseline (lr 0.001) -> evaluation of both on the unbiased test set, through the sweep (one sigma^2, one seed), so
# that the same command resumes an interrupted run and skips finished ones. Run folders are named as the sweep names
# them: runs/baseline_var0.020_seed1 and runs/lnl_var0.020_seed1.
#   bash train.sh                          # sigma^2 = 0.020, seed 1, 100 epochs each
#   COLOR_VAR=0.035 SEED=2 bash train.sh   # another variance or seed
#   bash train.sh --max_step 2             # extra arguments go to both train.py calls
#   bash train.sh --overwrite ...          # train again the runs whose options differ from an earlier call's
#   BASELINE=pretrained bash train.sh      # LNL only, from the shipped baseline of COLOR_VAR (pretrained/)
#   BASELINE=path/to/checkpoint.pth bash train.sh   # LNL only, from that finished baseline checkpoint
set -euo pipefail
usage() {
  cat <<'USAGE'
usage: [COLOR_VAR=0.020] [SEED=1] [BASELINE=train|pretrained|FILE] bash train.sh [TRAIN.PY OPTIONS] [--overwrite]

The paper's recipe for one colour variance: the baseline (lr 0.01), then LNL from it (lr 0.001), both evaluated
on the unbiased test set, through python -m experiments.sweep (the same command resumes an interrupted run and
skips finished ones). Run folders: $SAVE_DIR/baseline_var<COLOR_VAR>_seed<SEED>, $SAVE_DIR/lnl_var<COLOR_VAR>_seed<SEED>.

Environment variables:
  COLOR_VAR   colour variance sigma^2 of the data (default 0.020)
  SEED        random seed of the runs, also in their names (default 1)
  BASELINE    train (default): train the baseline, then LNL from it
              pretrained: LNL only, from the shipped baseline of COLOR_VAR and SEED, pretrained/baseline_var<COLOR_VAR>_seed<SEED>.pth
              (or of another seed where that one is not shipped, with a note)
              FILE: LNL only, from that finished baseline checkpoint
  DATA_DIR    folder of the data files, made there when missing (default: data/ of the repository; a relative
              path is taken from the current folder, as are SAVE_DIR and BASELINE=FILE)
  SAVE_DIR    parent folder of the run folders (default: runs/ of the repository)
  PYTHON      the Python interpreter (default python)

Extra arguments go to both train.py calls (python train.py --help lists them), e.g. --max_step 2, --precision fp32,
--dry_run; --overwrite trains again the runs whose options differ from an earlier call's. The options the recipe
sets itself (the run's name, method, colour variance, seed, folders, palette, learning rate, start and resume) are
refused with where to set them instead.
Evaluate again later with: bash test.sh (same COLOR_VAR and SEED).
USAGE
}
for arg in "$@"; do
  case "$arg" in -h|--help) usage; exit 0 ;; --) break ;; esac
done
case "${BASELINE:-train}" in train|pretrained) ;; *) BASELINE=$(realpath -m -- "$BASELINE") ;; esac
# paths given relative to the folder the command runs in (the script itself works from the repository folder)
[ -z "${DATA_DIR:-}" ] || DATA_DIR=$(realpath -m -- "$DATA_DIR")
[ -z "${SAVE_DIR:-}" ] || SAVE_DIR=$(realpath -m -- "$SAVE_DIR")
cd "$(dirname "$0")"
COLOR_VAR=${COLOR_VAR:-0.020}
SEED=${SEED:-1}
DATA_DIR=${DATA_DIR:-./data}
SAVE_DIR=${SAVE_DIR:-./runs}
PYTHON=${PYTHON:-python}
CV=$(LC_ALL=C printf '%.3f' "$COLOR_VAR" 2>/dev/null) || { echo "error: COLOR_VAR=$COLOR_VAR is not a number (e.g. COLOR_VAR=0.035)" >&2; exit 2; }
[ "$(LC_ALL=C printf '%.9f' "$COLOR_VAR")" = "$(LC_ALL=C printf '%.9f' "$CV")" ] || { echo "error: COLOR_VAR=$COLOR_VAR has more than three decimals; the data files are made for sigma^2 in steps of 0.001 (e.g. COLOR_VAR=$CV)" >&2; exit 2; }
sweep_args=()
train_args=()
for arg in "$@"; do
  if [ "$arg" = "--overwrite" ]; then sweep_args+=(--overwrite); else train_args+=("$arg"); fi
done
methods=(baseline lnl)
case "${BASELINE:-train}" in
  train) ;;
  pretrained)
    shipped=pretrained/baseline_var${CV}_seed${SEED}.pth
    if [ ! -f "$shipped" ]; then
      others=(pretrained/baseline_var${CV}_seed*.pth)
      if [ ! -f "${others[0]}" ]; then
        have=$(ls pretrained/baseline_var*_seed*.pth 2>/dev/null | sed 's/.*_var\([0-9.]*\)_seed.*/\1/' | sort -u | tr '\n' ' ' | sed 's/ $//')
        echo "error: BASELINE=pretrained: no baseline is shipped for COLOR_VAR=$CV (pretrained/ has sigma^2 ${have:-none}); give one of those, or BASELINE=train to train it" >&2
        exit 2
      fi
      shipped=${others[0]}
      other=${shipped##*_seed}
      echo "note: BASELINE=pretrained: the run lnl_var${CV}_seed${SEED} carries SEED=$SEED in its name (its own training's seed), but starts from the shipped seed-${other%.pth} baseline $shipped (none of seed $SEED is shipped for sigma^2 $CV)" >&2
    fi
    sweep_args+=(--base_checkpoint "$shipped"); methods=(lnl) ;;
  *) sweep_args+=(--base_checkpoint "$BASELINE"); methods=(lnl) ;;
esac
exec "$PYTHON" -m experiments.sweep --color_vars "$CV" --methods "${methods[@]}" --seeds "$SEED" --out "$SAVE_DIR" \
  --data_dir "$DATA_DIR" --launcher local --show_output --no_probe ${sweep_args[@]+"${sweep_args[@]}"} \
  -- ${train_args[@]+"${train_args[@]}"}
