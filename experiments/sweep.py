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
(``--probe`` for the methods whose class says ``probed``). Arguments after ``--`` go to train.py.
``python -m experiments.collect_results <out>`` turns the folder into the Fig. 4 table and plot.
"""
import contextlib
import importlib
import os
import shlex
import signal
import subprocess
import sys
import time

import methods
from dataset.colored_mnist import PAPER_VARIANCES, add_palette_argument, color_variance
from utils import (DATA_DIR, REPO_ROOT, RUNS_DIR, Parser, RunLock, UserError, positive_float, positive_int,
                   read_jsonl, run_main)


def run_name(method, color_var, seed):
    """The run folder's name; train.sh names its runs the same way."""
    return f'{method}_var{float(color_var):.3f}_seed{seed}'


def make_specs(args):
    """One dict per run, in an order where every pretrained start comes after its baseline."""
    specs = []
    chosen = list(dict.fromkeys(args.methods))
    for phase in (0, 1):
        for cv in args.color_vars:
            for seed in args.seeds:
                for m in chosen:
                    cls = methods.get(m)
                    if bool(cls.start_from) != bool(phase):
                        continue
                    name = run_name(m, cv, seed)
                    lr = learning_rate(cls, args)
                    train = ['-e', name, '--method', m, '--color_var', f'{cv:.3f}', '--random_seed', str(seed),
                             '--lr', str(lr), '--save_dir', args.out, '--data_dir', args.data_dir,
                             '--no_progress', '--palette', args.palette]
                    if cls.start_from:
                        base = os.path.join(args.out, run_name(cls.start_from, cv, seed), 'checkpoint_last.pth')
                        train += ['--use_pretrain', '--checkpoint', base]
                    test = ['-e', name, '--save_dir', args.out, '--data_dir', args.data_dir]
                    if cls.probed and not args.no_probe:
                        test += ['--probe']
                    train += list(args.train_args)
                    if cls.start_from and args.unlearn_max_step is not None:
                        train += ['--max_step', str(args.unlearn_max_step)]  # the last --max_step counts
                    specs.append({'name': name, 'method': m, 'color_var': cv, 'seed': seed, 'phase': phase,
                                  'run_dir': os.path.join(args.out, name), 'train': train, 'test': test})
    return specs


def learning_rate(cls, args):
    """The run's learning rate: the method's own (its class's ``lr``) unless the sweep overrides it."""
    override = args.unlearn_lr if cls.start_from else args.baseline_lr
    return cls.lr if override is None else override


def has_test_record(run_dir):
    path = os.path.join(run_dir, 'results.jsonl')
    return os.path.exists(path) and any('test_acc' in rec for rec in read_jsonl(path))


def status(spec):
    """'running' (another process trains in the folder), 'done', 'trained' (no test record yet),
    'partial' (checkpoints but no done marker) or 'new'."""
    run_dir = spec['run_dir']
    if RunLock.holder(run_dir) is not None:
        return 'running'
    if os.path.exists(os.path.join(run_dir, 'done')):
        return 'done' if has_test_record(run_dir) else 'trained'
    if os.path.isdir(run_dir) and any(f.startswith('checkpoint_') for f in os.listdir(run_dir)):
        return 'partial'
    return 'new'


# The training and test processes running now, and the signal that stops the sweep (None while it runs).
CHILDREN = set()
STOP = {'signal': None}


def forward_signal(signum, frame):
    """SIGINT/SIGTERM to the sweep: pass it to every running child (train.py saves a checkpoint and exits),
    start nothing new, and exit once they have."""
    STOP['signal'] = signum
    for child in list(CHILDREN):
        try:
            child.send_signal(signum)
        except OSError:
            pass


def run_in_process(script, argv, log):
    """``script``'s ``main(argv)`` in this process, its output into ``log``; returns an exit status."""
    module = importlib.import_module(os.path.splitext(script)[0])
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            module.main(argv)
            return 0
        except UserError as exc:
            print(f'error: {exc}', file=log)
            return 2
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1


def execute(spec, env=None, in_process=False, fresh=False):
    """Train (or resume) and evaluate one run; returns its status. Runs in a subprocess so that one
    run's failure or memory does not affect the others (``in_process``: in this one, for the seconds-long
    smoke run); output goes to ``<run_dir>/sweep.log``. ``fresh`` trains again over a finished run."""
    if STOP['signal'] is not None:
        return 'not started (sweep interrupted)'
    state = status(spec)
    if fresh and state in ('done', 'trained', 'partial'):
        state = 'new'  # --overwrite below replaces it
    if state == 'done':
        return 'skipped'
    if state == 'running':
        return f'skipped (process {RunLock.holder(spec["run_dir"])} is training in {spec["run_dir"]})'
    os.makedirs(spec['run_dir'], exist_ok=True)
    log = os.path.join(spec['run_dir'], 'sweep.log')
    steps = []
    if state in ('new', 'partial'):
        # a 'new' folder holds no checkpoint: whatever an earlier start left there is replaced
        steps.append(['train.py'] + spec['train'] + (['--resume'] if state == 'partial' else ['--overwrite']))
    steps.append(['test.py'] + spec['test'])
    with open(log, 'a') as fh:
        for script, *rest in steps:
            cmd = [sys.executable, os.path.join(REPO_ROOT, script)] + rest
            fh.write(f'$ {shlex.join(cmd)}\n')
            fh.flush()
            if in_process:
                rc = run_in_process(script, rest, fh)
                if rc != 0:
                    return f'failed ({script} exit {rc}, see {log})'
                continue
            child = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
                                     stdin=subprocess.DEVNULL)
            CHILDREN.add(child)
            try:
                if STOP['signal'] is not None:  # the signal came between the check above and the start
                    child.send_signal(STOP['signal'])
                rc = child.wait()
            finally:
                CHILDREN.discard(child)
            if STOP['signal'] is not None:
                return f'interrupted ({script} exit {rc}; relaunch the sweep to resume)'
            if rc != 0:
                return f'failed ({script} exit {rc}, see {log})'
    return 'finished'


# -- launchers -------------------------------------------------------------------------------------

def launch_local(phases, bar, args, in_process=False):
    """One run after another on this machine, each in its own process."""
    results = {}
    for phase in phases:
        for spec in phase:
            bar.set_postfix_str(spec['name'])
            results[spec['name']] = execute(spec, in_process=in_process, fresh=args.smoke)
            bar.update()
    return results


def launch_in_process(phases, bar, args):
    """One run after another in this process (the smoke run; methods registered only in this process).
    The smoke run starts every run afresh; otherwise finished runs are skipped and others resumed, as with
    the local launcher."""
    return launch_local(phases, bar, args, in_process=True)


def launch_multi_gpu(phases, bar, args):
    """One run per visible GPU at a time; a phase finishes before the next starts."""
    gpus = visible_gpus()
    if not gpus:
        raise UserError('--launcher multi_gpu found no GPU (set CUDA_VISIBLE_DEVICES or use --launcher local)')
    from concurrent.futures import ThreadPoolExecutor
    import queue
    free = queue.Queue()
    for g in gpus:
        free.put(g)
    results = {}

    def on_gpu(spec):
        gpu = free.get()
        try:
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu))
            return spec['name'], execute(spec, env=env)
        finally:
            free.put(gpu)

    with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
        for phase in phases:
            for name, res in pool.map(on_gpu, phase):
                results[name] = res
                bar.update()
    return results


def launch_submitit(phases, bar, args):
    """Through submitit: Slurm on a cluster, or its local executor (``--launcher submitit_local``)."""
    import submitit
    folder = os.path.join(args.out, '_submitit')
    if args.launcher == 'slurm':
        executor = submitit.AutoExecutor(folder=folder, cluster='slurm')
        params = dict(timeout_min=args.timeout_min, gpus_per_node=args.gpus_per_job, tasks_per_node=1,
                      cpus_per_task=args.cpus_per_job, name='lnl-sweep')
        if args.partition:
            params['slurm_partition'] = args.partition
        executor.update_parameters(**params)
    else:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=args.timeout_min)
    results = {}
    for phase in phases:
        jobs = [(spec['name'], executor.submit(execute, spec)) for spec in phase]
        for name, job in jobs:
            try:
                results[name] = job.result()
            except Exception as exc:  # a job that crashed or was killed: report it, keep the sweep going
                results[name] = f'failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})'
            bar.update()
    return results


def visible_gpus():
    env = os.environ.get('CUDA_VISIBLE_DEVICES')
    if env is not None:
        return [g for g in env.split(',') if g.strip()]
    try:
        import torch
        return list(range(torch.cuda.device_count()))
    except ImportError:
        return []


LAUNCHERS = {
    'local': (launch_local, 'one run after another on this machine'),
    'inprocess': (launch_in_process, 'one run after another inside this process (what --smoke uses)'),
    'multi_gpu': (launch_multi_gpu, 'one run per visible GPU at a time'),
    'slurm': (launch_submitit, 'one Slurm job per run through submitit'),
    'submitit_local': (launch_submitit, 'submitit\'s local executor'),
}
SIGNAL_FORWARDING = ('local', 'multi_gpu')  # launchers whose children the sweep stops itself

EPILOG = ('Arguments after a lone -- go to every train.py call, e.g. `-- --max_step 10 --precision bf16`. '
          'python -m experiments.sweep --smoke checks the whole pipeline (data, four methods, test.py, table, figures) in '
          'seconds.')


def build_parser():
    p = Parser(description='Train and evaluate sigma^2 x method x seed (the Fig. 4 grid); relaunching the same '
                           'command skips finished runs and resumes interrupted ones.',
               epilog=EPILOG, epilog_hint='options for train.py go after a lone --, e.g. experiments.sweep ... -- --dry_run')
    p.add_argument('--color_vars', type=color_variance, nargs='+', default=list(PAPER_VARIANCES), metavar='SIGMA2',
                   help='colour variances sigma^2 (the paper: 0.020 0.025 ... 0.050)')
    names = methods.method_names()
    starting = ', '.join(f'{m} starts from the {methods.METHODS[m].start_from} run' for m in names
                         if methods.METHODS[m].start_from)
    p.add_argument('--methods', nargs='+', default=names, choices=names, metavar='METHOD',
                   help=f'methods: {", ".join(names)} ({starting})')
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3], metavar='SEED',
                   help='values of train.py --random_seed, one run per seed')
    p.add_argument('--out', default=None, help='folder of the run folders (required, except with --smoke)')
    p.add_argument('--data_dir', default=DATA_DIR,
                   help='folder of the data files, generated when missing (default: data/ in this repository)')
    add_palette_argument(p)
    p.add_argument('--launcher', choices=list(LAUNCHERS), default='local',
                   help='; '.join(f'{k}: {v[1]}' for k, v in LAUNCHERS.items()))
    p.add_argument('--baseline_lr', type=positive_float, default=None,
                   help='lr of the runs that start from scratch (default: each method\'s own, 0.01)')
    p.add_argument('--unlearn_lr', type=positive_float, default=None,
                   help='lr of the runs that start from a baseline (default: each method\'s own, 0.001)')
    p.add_argument('--unlearn_max_step', type=positive_int, default=None, metavar='EPOCHS',
                   help='train.py --max_step of the runs that start from a baseline (default: the --max_step '
                        'given to train.py after --, as for the other runs)')
    p.add_argument('--no_probe', action='store_true', help='skip the bias-leakage probe after training')
    p.add_argument('--timeout_min', type=positive_int, default=24 * 60, help='submitit: time limit of one job')
    p.add_argument('--partition', default=None, help='slurm partition')
    p.add_argument('--gpus_per_job', type=positive_int, default=1, help='slurm: GPUs per job')
    p.add_argument('--cpus_per_job', type=positive_int, default=4, help='slurm: CPU cores per job')
    p.add_argument('--list', action='store_true', help='print the runs and their state, run nothing')
    p.add_argument('--smoke', action='store_true',
                   help='the install check: sigma^2 = 0.020, every method, seed 1, train.py --dry_run '
                        '--max_step 2 in this process, test.py, then the table and figures of collect_results '
                        '(default --out: runs/smoke in this repository; replaced on every call)')
    return p


def parse(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = []
    if '--' in argv:
        cut = argv.index('--')
        argv, train_args = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.color_vars, args.methods, args.seeds = [0.020], methods.method_names(), [1]
        args.out = args.out or os.path.join(RUNS_DIR, 'smoke')
        args.launcher = 'inprocess'
        train_args = ['--dry_run', '--max_step', '2'] + train_args
    elif args.out is None:
        raise UserError('--out FOLDER is required (where the run folders go), e.g. --out sweeps/fig4')
    for m in args.methods:
        base = methods.get(m).start_from
        if base and base not in args.methods:
            raise UserError(f'{m} starts from the {base} run: add {base} to --methods')
    args.train_args = train_args
    args.out = os.path.abspath(args.out)
    args.data_dir = os.path.abspath(args.data_dir)
    return args


def main(argv=None):
    args = parse(argv)
    specs = make_specs(args)
    if args.list:
        for s in specs:
            print(f'{status(s):8s} {s["name"]}')
        return {}
    os.makedirs(args.out, exist_ok=True)
    # Generate the data once, before runs start in parallel and race to write the same file.
    from dataset import colored_mnist
    for cv in args.color_vars:
        colored_mnist.ensure(args.data_dir, cv, palette=args.palette)
    phases = [[s for s in specs if s['phase'] == p] for p in (0, 1)]
    from tqdm import tqdm
    t0 = time.time()
    STOP['signal'] = None
    previous = {}
    if args.launcher in SIGNAL_FORWARDING:
        previous = {sig: signal.signal(sig, forward_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tqdm(total=len(specs), desc='sweep', unit='run', dynamic_ncols=True) as bar:
            results = LAUNCHERS[args.launcher][0](phases, bar, args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = {k: v for k, v in results.items() if v.startswith('failed')}
    for name, res in results.items():
        print(f'{res:10s} {name}')
    if STOP['signal'] is not None:
        print(f'sweep interrupted by signal {STOP["signal"]}; the running runs saved their state: relaunch the '
              'same command to resume', file=sys.stderr)
        sys.exit(128 + STOP['signal'])
    if args.smoke and not failed:
        from experiments import collect_results
        prefix = os.path.join(args.out, 'fig4')
        collect_results.main([args.out, '--out_prefix', prefix, '--confusion', '0.020'])
        print(f'smoke run: {len(results)} runs and the table in {time.time() - t0:.0f} s. Table {prefix}.md, '
              f'figures {prefix}.png, {prefix}_curves.png, {prefix}_confusion.png; runs in {args.out} '
              '(--dry_run: they check the pipeline, the numbers are not results)')
    else:
        print(f'{len(results)} runs in {time.time() - t0:.0f} s, {len(failed)} failed; '
              f'table: python -m experiments.collect_results {shlex.quote(args.out)}')
    if failed:
        sys.exit(1)
    return results


if __name__ == '__main__':
    run_main(main)
