"""Grid throughput: does a sweep finish sooner running K runs at once, the cores split between them?

For each K of ``--k``, the same small grid (``--methods`` x ``--seeds`` at sigma^2 = 0.020, ``--max_step``
epochs each, no probe) runs through ``python -m experiments.sweep --runs_at_once K`` into a fresh temporary
folder, one K after the other (never two at once). Reported per K: train.py threads per run, the grid's
wall-clock time (process start, data loading, training and test.py included) and its speed-up over K = 1,
and, from the runs' own records, the mean training time of one epoch per method and the epochs per hour
the machine trains over all K runs together (K / epoch time): the figure that decides long grids, where
start-up is small beside the epochs.

    python benchmarks/throughput.py --data_dir data --k 1 2 --json docs/results/throughput/throughput.json \\
        --readme docs/speed.md

Run it alone on the machine (nothing else training): it measures how the cores are shared.
"""
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as ``python benchmarks/throughput.py``
    sys.path.insert(0, ROOT)

import run_folder  # noqa: E402
from dataset import colored_mnist  # noqa: E402
from utils import (Parser, add_data_dir, add_precision, UserError, atomic_write_text, format_table, markdown_table,  # noqa: E402
                   positive_int, read_jsonl, replace_readme_section, run_main, usable_cores,
                   without_options)

COLOR_VAR = 0.020


def sweep_command(args, k, out):
    return [sys.executable, '-m', 'experiments.sweep', '--color_vars', f'{COLOR_VAR:.3f}', '--methods', *args.methods,
            '--seeds', *map(str, args.seeds), '--out', out, '--data_dir', args.data_dir, '--launcher', 'local',
            '--runs_at_once', str(k), '--no_probe', '--', '--max_step', str(args.max_step),
            '--precision', args.precision, *args.train_args]


def run_names(args):
    from experiments.sweep import run_name
    return [run_name(m, COLOR_VAR, seed) for m in args.methods for seed in args.seeds]


def epoch_times(out):
    """``{method: [seconds of each trained epoch, over every run]}`` from the runs' records."""
    times = {}
    for name in sorted(os.listdir(out)):
        path = run_folder.file(os.path.join(out, name), run_folder.RESULTS)
        if not os.path.isfile(path):
            continue
        method = name.split('_var')[0]
        times.setdefault(method, []).extend(r['epoch_time_s'] for r in read_jsonl(path)
                                            if 'epoch_time_s' in r and 'test_acc' not in r)
    return times


def measure(args, k, log):
    with tempfile.TemporaryDirectory(prefix=f'throughput_k{k}_') as out:
        cmd = sweep_command(args, k, out)
        log(f'K = {k}: {shlex.join(cmd[1:])}')
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not all(os.path.isfile(run_folder.file(os.path.join(out, run), run_folder.DONE))
                                           for run in run_names(args)):
            raise UserError(f'the sweep with --runs_at_once {k} failed (exit {proc.returncode}): '
                            f'{(proc.stdout + proc.stderr).strip().splitlines()[-1:]}')
        times = epoch_times(out)
    runs = len(args.methods) * len(args.seeds)
    return {'k': k, 'threads_per_run': max(1, usable_cores() // k), 'runs': runs, 'wall_s': wall,
            'epoch_s': {m: sum(v) / len(v) for m, v in times.items() if v}}


def summarise(results):
    base = next(r for r in results if r['k'] == min(x['k'] for x in results))
    methods = sorted({m for r in results for m in r['epoch_s']})
    header = ['runs at once', 'threads/run', 'runs', 'grid wall s', 'speed-up'] + \
        [f'{m} s/epoch (each run)' for m in methods] + [f'{m} epochs/hour (all runs)' for m in methods]
    rows = [[r['k'], r['threads_per_run'], r['runs'], f'{r["wall_s"]:.0f}', f'{base["wall_s"] / r["wall_s"]:.2f}x']
            + [f'{r["epoch_s"][m]:.1f}' if m in r['epoch_s'] else '—' for m in methods]
            + [f'{3600 * r["k"] / r["epoch_s"][m]:.0f}' if m in r['epoch_s'] else '—' for m in methods]
            for r in results]
    return header, rows


def build_parser():
    p = Parser(description='Grid throughput of the sweep with K runs at once (the cores split between them).')
    p.add_argument('--k', type=positive_int, nargs='+', default=[1, 2], help='values of --runs_at_once to compare')
    p.add_argument('--methods', nargs='+', default=['baseline', 'lnl'], help='methods of the small grid')
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2], help='seeds of the small grid')
    p.add_argument('--max_step', type=positive_int, default=2, help='epochs per run')
    add_precision(p)
    add_data_dir(p, help='folder of the data files (sigma^2 = 0.020 generated when missing)')
    p.add_argument('--json', default=None, help='write the results to this JSON file')
    p.add_argument('--readme', default=None, help='write the table into this file\'s <!-- throughput:begin/end --> section')
    p.add_argument('--section', default='throughput', help='with --readme: the section to write')
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.train_args = []
    too_many = [k for k in args.k if k > usable_cores()]
    if too_many:
        raise UserError(f'--k {too_many[0]} on {usable_cores()} core(s): give at most {usable_cores()} runs at once')
    args.data_dir = os.path.abspath(args.data_dir)
    colored_mnist.ensure(args.data_dir, COLOR_VAR)
    results = [measure(args, k, print) for k in args.k]
    header, rows = summarise(results)
    title = (f'Grid of {len(args.methods)} methods x {len(args.seeds)} seeds at sigma^2 = {COLOR_VAR:.3f}, '
             f'{args.max_step} epochs per run, {usable_cores()} cores, --precision {args.precision}')
    print(format_table(header, rows, title=title))
    record = {'title': title, 'argv': argv, 'cores': usable_cores(), 'results': results}
    print(json.dumps(record))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic_write_text(args.json, json.dumps(record, indent=2) + '\n')
    if args.readme:
        shown = ['python', 'benchmarks/throughput.py'] + without_options(argv, ('--readme', '--section'))
        replace_readme_section(args.readme, args.section,
                               f'Produced by `{shlex.join(shown)}`:\n\n{title}\n\n' + markdown_table(header, rows))
    return record


if __name__ == '__main__':
    run_main(main)
