#!/usr/bin/env bash
# One prepared script for a short GPU allocation (one card, minutes, no package index):
#   1. the CUDA tests (tests/test_gpu.py, tests/test_gpu_path.py: every method's update on CUDA against the CPU, a
#      packed update against the runs' own; tests/test_pack.py);
#   2. benchmarks/gpu_check.sh (the speed benchmark on the GPU, a short run of each method);
#   2b. benchmarks/pack_speed.py on the GPU (K runs packed as one against K runs one after the other);
#   3. the Fig. 4 grid at the paper's budget (100 epochs per run, the four methods), seed by seed over the
#      variances whose records are not yet under docs/results/gpu_e100, the runs of each method packed PACK to
#      a network (train_pack.py), RUNS_AT_ONCE packs at a time on the card, until FIG_MIN minutes have passed:
#      then the running runs are stopped (SIGTERM, their state saved);
#   4. the finished runs' records copied into docs/results/gpu_e100 and their baselines' weights exported,
#      the table of what is there, and a throughput line (runs, epochs and wall time of this allocation).
# What comes back is in OUT as at most 8 archives: records.tgz (docs/results/gpu_e100), weights.tgz,
# checks.tgz (test output, speed tables, gpu_check runs' records), and summary.txt. Unpack records.tgz and
# weights.tgz in the repository and commit them: a later allocation trains only the variances still missing
# (a variance started and not finished is trained again from its baseline on).
#
# Usage: bash benchmarks/gpu_fig4.sh OUT
# Environment: FIG_MIN (default 6), PACK (7: a seed's seven variances of a method in one network), RUNS_AT_ONCE
#   (2 packs, or 12 runs with PACK=1), SEEDS ("1 2 3"), VARS (the seven, 0.025 ... 0.050 then 0.020),
#   METHODS ("baseline lnl blindeye gray"), STEPS (the steps to run, default "tests check pack fig"),
#   EPOCHS (100), DATA_DIR (a temporary folder: the data are generated there), PYTHON (python3),
#   TOY=1: the CPU check of this script: no CUDA steps, --dry_run runs of EPOCHS (default 1) epochs (packed with
#   --pack_on_cpu when PACK > 1, default 1), records under RECORDS (default a temporary folder, never
#   docs/results/gpu_e100).
# Carried files it uses when present: .whl/*.whl (packages the machine lacks, e.g. tensorboardX; installed with
# --no-index) and .mnist/mnist_uint8.npz (the verified MNIST cache: the machine reaches no package index).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bash benchmarks/gpu_fig4.sh OUT}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PYTHON=${PYTHON:-python3}
TOY=${TOY:-0}
FIG_MIN=${FIG_MIN:-6}
SEEDS=${SEEDS:-1 2 3}
METHODS=${METHODS:-baseline lnl blindeye gray}
STEPS=${STEPS:-tests check pack fig}
step() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
VARS_ARG=()
[ -n "${VARS:-}" ] && VARS_ARG=(--color_vars $VARS)
WORK=$(mktemp -d)
LOG="$OUT/summary.txt"
: > "$LOG"
say() { echo "gpu_fig4: $*" | tee -a "$LOG"; }

if ls .whl/*.whl > /dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl \
    && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}" || { say "could not install the carried wheels"; exit 2; }
fi
if [ -f .mnist/mnist_uint8.npz ]; then
  export XDG_CACHE_HOME="$WORK/cache"
  mkdir -p "$XDG_CACHE_HOME/learning-not-to-learn"
  cp .mnist/mnist_uint8.npz "$XDG_CACHE_HOME/learning-not-to-learn/"
fi
export PYTHONUNBUFFERED=1
DATA_DIR=${DATA_DIR:-$WORK/data}

if [ "$TOY" = 1 ]; then
  DEVICE=cpu; EPOCHS=${EPOCHS:-1}; PACK=${PACK:-1}; RUNS_AT_ONCE=${RUNS_AT_ONCE:-2}
  RECORDS=${RECORDS:-$WORK/records/gpu_e100}; TRAIN_EXTRA=(--dry_run); PACK_ARGS=(--pack "$PACK" --pack_on_cpu)
  say "TOY: the CPU check of this script (dry runs of $EPOCHS epoch(s)); records in $RECORDS"
else
  DEVICE=cuda; EPOCHS=${EPOCHS:-100}; PACK=${PACK:-7}
  if [ "$PACK" -gt 1 ]; then RUNS_AT_ONCE=${RUNS_AT_ONCE:-2}; else RUNS_AT_ONCE=${RUNS_AT_ONCE:-12}; fi
  RECORDS=${RECORDS:-docs/results/gpu_e100}; TRAIN_EXTRA=(); PACK_ARGS=(--pack "$PACK")
  "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_fig4.sh: PyTorch sees no CUDA \
device; run it on a GPU machine, or TOY=1 bash benchmarks/gpu_fig4.sh OUT for the CPU check')" || exit 2
fi
mkdir -p "$RECORDS" "$WORK/checks"
"$PYTHON" -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', \
platform.python_version(), 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor())" \
  | tee -a "$LOG"

if [ "$TOY" != 1 ] && step tests; then
  say "1. CUDA tests"
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_gpu_path.py tests/test_pack.py \
    > "$WORK/checks/cuda_tests.txt" 2>&1
  say "   $(tail -n 1 "$WORK/checks/cuda_tests.txt")"
fi
if [ "$TOY" != 1 ] && step check; then
  say "2. benchmarks/gpu_check.sh"
  EPOCHS=1 DATA_DIR="$DATA_DIR" PYTHON="$PYTHON" bash benchmarks/gpu_check.sh "$WORK/checks/gpu_check" \
    > "$WORK/checks/gpu_check.txt" 2>&1
  say "   exit $?; speed table: checks/gpu_check/speed.txt"
fi
if [ "$TOY" != 1 ] && step pack; then
  say "2b. benchmarks/pack_speed.py"
  "$PYTHON" benchmarks/pack_speed.py --device cuda --k 1 7 14 28 --json "$WORK/checks/pack_speed.json" \
    > "$WORK/checks/pack_speed.txt" 2>&1
  say "   exit $?"
  cat "$WORK/checks/pack_speed.txt" >> "$LOG"
fi
step fig || FIG_MIN=0

say "3. Fig. 4: $EPOCHS epochs per run, packs of $PACK, $RUNS_AT_ONCE at once, for $FIG_MIN min"
START=$(date +%s)
DEADLINE=$((START + FIG_MIN * 60))
while :; do
  PENDING=$("$PYTHON" -m experiments.campaign --out "$WORK/runs" --records "$RECORDS" --weights "$WORK/weights" \
            --seeds $SEEDS "${VARS_ARG[@]}" --methods $METHODS --pending -- "${TRAIN_EXTRA[@]}")
  [ -n "$PENDING" ] || { say "   every cell has its records"; break; }
  LEFT=$((DEADLINE - $(date +%s)))
  [ "$LEFT" -gt 30 ] || { say "   time is up; left: seed $PENDING"; break; }
  read -r SEED CELL_VARS <<< "$PENDING"
  ARGS=(--color_vars $CELL_VARS --seeds "$SEED" --methods $METHODS --out "$WORK/runs"
        --data_dir "$DATA_DIR" --runs_at_once "$RUNS_AT_ONCE" --no_probe "${PACK_ARGS[@]}"
        -- --precision bf16 --device "$DEVICE" --max_step "$EPOCHS" --no_progress "${TRAIN_EXTRA[@]}")
  say "   seed $SEED, sigma^2 $CELL_VARS: $LEFT s left"
  timeout --signal=TERM --kill-after=60 "$LEFT" "$PYTHON" -m experiments.sweep "${ARGS[@]}" \
    >> "$WORK/checks/sweep.txt" 2>&1
  RC=$?
  "$PYTHON" -m experiments.campaign --out "$WORK/runs" --records "$RECORDS" --weights "$WORK/weights" \
    --color_vars $CELL_VARS --seeds "$SEED" --methods $METHODS --harvest "python -m experiments.sweep ${ARGS[*]}" -- "${TRAIN_EXTRA[@]}" \
    | tee -a "$LOG"
  [ "$RC" = 0 ] || { say "   the sweep stopped (exit $RC)"; break; }
done
WALL=$(( $(date +%s) - START ))
EPOCHS_DONE=$(cat "$WORK"/runs/*/results.jsonl 2>/dev/null | grep -c '"epoch_time_s"' || true)
say "4. throughput: $EPOCHS_DONE epochs trained in $WALL s of wall time, packs of $PACK, $RUNS_AT_ONCE at once on $DEVICE"
if [ "$EPOCHS_DONE" -gt 0 ]; then
  FULL=$((7 * 3 * $(wc -w <<< "$METHODS") * EPOCHS))
  say "   the whole figure (7 sigma^2 x 3 seeds x $(wc -w <<< "$METHODS") methods x $EPOCHS epochs = $FULL epochs) at this rate: \
about $((FULL * WALL / EPOCHS_DONE / 60)) min (the methods mixed as they ran here)"
fi
"$PYTHON" -m experiments.collect_results "$RECORDS" --columns 0.020 0.025 0.030 0.035 0.040 0.045 0.050 \
  >> "$LOG" 2>&1 || say "   no finished run to tabulate yet"

tar czf "$OUT/records.tgz" -C "$(dirname "$RECORDS")" "$(basename "$RECORDS")"
[ -d "$WORK/weights" ] && tar czf "$OUT/weights.tgz" -C "$WORK" weights
tar czf "$OUT/checks.tgz" -C "$WORK" checks
say "archives: $(cd "$OUT" && ls)"
rm -rf "$WORK"
