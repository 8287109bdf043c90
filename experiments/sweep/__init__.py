"""Sweep sigma^2 x method x seed, on this machine, over its GPUs, or on a Slurm cluster.

    python -m experiments.sweep --color_vars 0.020 0.035 0.050 --methods baseline lnl blindeye gray \\
        --seeds 1 2 3 --out sweeps/fig4 --launcher local -- --max_step 100

Every run gets its own folder ``<out>/<method>_var<sigma^2>_seed<seed>`` (a normal run folder of train.py;
train.sh names its runs the same way). A run whose ``done`` marker and test record exist is skipped when the
sweep is relaunched; a half-finished one is resumed from its newest intact checkpoint. A method that starts
from another (``start_from`` in its class: LNL and BlindEye start from the baseline run of the same sigma^2
and seed, the authors' recipe) runs in the second phase, at its own learning rate (the class's ``lr``:
0.01 for the baseline and Gray, 0.001 for the unlearning) and, with ``--unlearn_max_step``, for its own number
of epochs. After training, each run is evaluated by test.py
(``--probe`` for the methods whose class says ``probed``), in the same child process (child.py: one start of
Python and one import of PyTorch per run, or per pack with ``--pack``; the run's sweep.log shows each step's
command). Arguments after
``--`` go to train.py.
``python -m experiments.collect_results <out>`` turns the folder into the Fig. 4 table and plot.
"""
# One module per concern, each importing only the ones above it: spec (what a run is) < devices (GPUs, without
# CUDA in this process) < state (where a run stands, its start) < runner (one run's steps, the signals) <
# child (a run's steps in one process) and launchers (where the runs run) < cli (the command line).
# ``python -m experiments.sweep`` runs __main__.py.
from experiments.sweep.spec import RESERVED, learning_rate, make_spec, make_specs, run_name
from experiments.sweep.devices import auto_precision, cuda_bf16, visible_gpus
from experiments.sweep.state import (check_start_file, describe, differences, has_test_record, requested_options,
                                     start_checkpoint, status)
from experiments.sweep.runner import (CHILDREN, STOP, execute, forward_signal, run_child, run_in_process,
                                      stop_in_process)
from experiments.sweep.launchers import (LAUNCHERS, SIGNAL_FORWARDING, launch_in_process, launch_local,
                                         launch_multi_gpu, launch_slots, launch_submitit, with_threads)
from experiments.sweep.cli import (EPILOG, SMOKE_DIR, build_parser, check_base_checkpoint, main, parse,
                                   refuse_real_runs)
from utils import DATA_DIR, REPO_ROOT, usable_cores
