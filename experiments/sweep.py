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
import checkpoint as C
import run_folder
from experiments import records
from utils import (DATA_DIR, REPO_ROOT, Parser, RunLock, UserError, existing_or_new_folder, native_bf16, open_no_follow,
                   positive_float, positive_int, resolve_device, run_main, sha256_file, usable_cores)


def run_name(method, color_var, seed):
    """The run folder's name; train.sh names its runs the same way."""
    return f'{method}_var{float(color_var):.3f}_seed{seed}'


def make_spec(args, m, cv, seed, out):
    """The run of method ``m`` at ``cv`` and ``seed`` in folder ``out``: its train.py and test.py arguments."""
    cls = methods.get(m)
    name = run_name(m, cv, seed)
    train = ['-e', name, '--method', m, '--color_var', f'{cv:.3f}', '--random_seed', str(seed),
             '--lr', str(learning_rate(cls, args)), '--save_dir', out, '--data_dir', args.data_dir,
             '--palette', args.palette] + ([] if args.show_output else ['--no_progress']) + list(args.train_args)
    if cls.start_from and args.unlearn_max_step is not None:
        train += ['--max_step', str(args.unlearn_max_step)]  # the last --max_step counts
    test = ['-e', name, '--save_dir', out, '--data_dir', args.data_dir] + ([] if args.show_output else ['--no_progress'])
    if cls.probed and not args.no_probe:
        test += ['--probe']
    spec = {'name': name, 'method': m, 'color_var': cv, 'seed': seed, 'phase': int(bool(cls.start_from)),
            'run_dir': os.path.join(out, name), 'train': train, 'test': test}
    if cls.start_from and getattr(args, 'base_checkpoint', None):
        spec['base_file'] = args.base_checkpoint  # a finished baseline's weights given as a file (pretrained/)
    elif cls.start_from:
        # the run it starts from (in --base_dir, default --out); --checkpoint is added when it starts
        spec['base'] = make_spec(args, cls.start_from, cv, seed, args.base_dir or out)
    return spec


def make_specs(args):
    """One dict per run, in an order where every pretrained start comes after its baseline."""
    chosen = list(dict.fromkeys(args.methods))
    specs = [make_spec(args, m, cv, seed, args.out) for cv in args.color_vars for seed in args.seeds for m in chosen]
    return sorted(specs, key=lambda s: s['phase'])  # stable: the order above within each phase


def learning_rate(cls, args):
    """The run's learning rate: the method's own (its class's ``lr``) unless the sweep overrides it."""
    override = args.unlearn_lr if cls.start_from else args.baseline_lr
    return cls.lr if override is None else override


def has_test_record(spec):
    """Whether the run holds a test record of its last trained epoch on its sigma^2 (for a grey-input
    method: of the grey view the tables report)."""
    view = records.gray_view_of_tag('test') if methods.get(spec['method']).gray else None
    return records.current_test(run_folder.read_results(spec['run_dir']), spec['color_var'], gray_view=view)[0] \
        is not None


def requested_options(train_argv):
    """train.py's options for ``train_argv``: the defaults and the sweep's arguments, as the run will see them."""
    from option import get_option
    return vars(get_option(train_argv))


def differences(spec, train_argv=None, recorded=None):
    """How a run in ``spec['run_dir']`` differs from what the sweep asks of it: ``(diffs, extend)``, where
    ``diffs`` lists ``(option, recorded, requested)`` over the run-defining options (a run that trained more
    epochs than asked included) and ``extend`` is true when the run trained fewer epochs than asked (it is
    resumed to the requested number; the schedule does not depend on the total). ``(None, False)`` when the
    folder holds no readable options.json. ``recorded``: the run's options when the caller has read them."""
    if recorded is None:
        recorded = run_folder.read_options(spec['run_dir'])
    if not recorded:
        return None, False
    asked = requested_options(spec['train'] if train_argv is None else train_argv)
    from option import COMMON_DEFAULTS, build_parser, method_default
    parser = build_parser()

    def default(k):
        return method_default(asked['method'], k) if k in COMMON_DEFAULTS else parser.get_default(k)
    keys = [k for k in methods.run_defining(asked['method']) if k not in ('amp', 'precision')]
    diffs = [(k, recorded.get(k, default(k)), asked.get(k)) for k in keys if recorded.get(k, default(k)) != asked.get(k)]
    # precision: 'auto' matches a run that asked for 'auto' too; otherwise the arithmetic must be the same
    if not (asked['precision'] == 'auto' and recorded.get('precision_requested', 'auto') == 'auto'):
        wanted = asked['precision']
        if wanted == 'auto':
            wanted = 'bf16' if native_bf16(resolve_device('auto')) else 'fp32'
        if recorded.get('precision') != wanted:
            diffs.append(('precision', recorded.get('precision'), wanted))
    done_epochs, asked_epochs = recorded.get('max_step'), asked['max_step']
    if isinstance(done_epochs, int) and done_epochs > asked_epochs:
        diffs.append(('max_step', done_epochs, asked_epochs))
    return diffs, isinstance(done_epochs, int) and done_epochs < asked_epochs


def describe(diffs):
    return ', '.join(f'--{k} {new} (run: {old})' for k, old, new in diffs)


def status(spec):
    """'running' (another process trains in the folder), 'done', 'trained' (no test record yet),
    'partial' (checkpoints but no done marker) or 'new'."""
    found = run_folder.state(spec['run_dir'])
    if found == 'finished':
        return 'done' if has_test_record(spec) else 'trained'
    return found


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
    """``script``'s ``main(argv)`` in this process, its output into ``log``; returns an exit status. Ctrl-C
    (or SIGTERM) stops the sweep as it stops the other launchers: training saves its state and exits 130,
    elsewhere the signal ends the step; either way nothing further starts."""
    module = importlib.import_module(os.path.splitext(script)[0])
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            module.main(argv)
            return 0
        except UserError as exc:
            print(f'error: {exc}', file=log)
            return 2
        except KeyboardInterrupt:
            STOP['signal'] = STOP['signal'] or signal.SIGINT
            return 130
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            if code == 130:  # train.py saved its state after a signal
                STOP['signal'] = STOP['signal'] or signal.SIGINT
            return code


def stop_in_process(signum, frame):
    """SIGINT/SIGTERM to the in-process launcher outside training: stop the sweep (training installs its
    own handler, which saves the state first)."""
    STOP['signal'] = signum
    raise KeyboardInterrupt


def start_checkpoint(spec):
    """``(path, sha256)`` of the finished state of the run ``spec`` starts from, or ``(None, reason)`` when
    that run is not finished or does not match what the sweep asks of it. A start given as a file
    (``--base_checkpoint``) is that file."""
    if spec.get('base_file'):
        return spec['base_file'], sha256_file(spec['base_file'])
    base = spec['base']
    path = run_folder.finished_checkpoint(base['run_dir'])
    if path is None:
        return None, f'{base["name"]} is not finished'
    diffs, extend = differences(base)
    if diffs or extend:
        return None, f'{base["name"]} does not match this request ({describe(diffs) or "fewer epochs"})'
    return path, sha256_file(path)


def run_child(cmd, log, env=None, show=False):
    """Run one step in a child process (output to ``log``, and to this terminal with ``show``); its exit
    status. A signal to the sweep is passed on to it (see :func:`forward_signal`)."""
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE if show else log, stderr=subprocess.STDOUT,
                             cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL)
    CHILDREN.add(child)
    try:
        if STOP['signal'] is not None:  # the signal came between the caller's check and the start
            child.send_signal(STOP['signal'])
        if show:
            for chunk in iter(lambda: child.stdout.read1(1 << 14), b''):
                text = chunk.decode('utf-8', errors='replace')
                log.write(text)
                log.flush()
                sys.stderr.write(text)
                sys.stderr.flush()
        return child.wait()
    finally:
        CHILDREN.discard(child)


def execute(spec, env=None, in_process=False, fresh=False, overwrite=False, show=False):
    """Train (or resume) and evaluate one run; returns its status. Runs in a subprocess so that one
    run's failure or memory does not affect the others (``in_process``: in this one, for the seconds-long
    smoke run); output goes to ``<run_dir>/sweep.log``. ``fresh`` trains again over a finished run.

    A run that starts from another (``spec['base']``) starts only from that run's finished checkpoint (the
    one its ``done`` marker names), records its SHA-256, and is trained again when that start has changed.
    A run already in the folder is compared with the request (:func:`differences`): one that differs is
    refused, or trained again with ``overwrite``; one that trained fewer epochs than asked is extended."""
    if STOP['signal'] is not None:
        return 'not started (sweep interrupted)'
    state = status(spec)
    if state == 'running':
        return f'skipped (process {RunLock.holder(spec["run_dir"])} is training in {spec["run_dir"]})'
    train = list(spec['train'])
    note = ''
    if spec.get('base') or spec.get('base_file'):
        start, digest = start_checkpoint(spec)
        if start is None:
            return f'not started ({digest}: it starts once that run has finished as this request asks)'
        train += ['--use_pretrain', '--checkpoint', start]
    if fresh and state in ('done', 'trained', 'partial'):
        state = 'new'  # --overwrite below replaces it
    if state in ('done', 'trained', 'partial'):
        recorded = run_folder.read_options(spec['run_dir'])
        diffs, extend = differences(spec, train, recorded)
        if (spec.get('base') or spec.get('base_file')) and recorded.get('pretrain_sha256') != digest:
            changed = spec['base']['name'] if spec.get('base') else f'its start ({spec["base_file"]})'
            state, note = 'new', f' (trained again: {changed} changed since this run started from it)'
        elif diffs:
            if not overwrite:
                return (f'refused (the run in {spec["run_dir"]} differs from this request: {describe(diffs)}; '
                        'relaunch with --overwrite to train it again)')
            state, note = 'new', f' (trained again, --overwrite: {describe(diffs)})'
        elif extend:
            state, note = 'partial', ' (extended to the requested epochs)'
    if state == 'done':
        return 'skipped'
    os.makedirs(spec['run_dir'], exist_ok=True)
    log = run_folder.file(spec['run_dir'], run_folder.SWEEP_LOG)
    steps = []
    if state in ('new', 'partial'):
        # a 'new' folder holds no checkpoint: whatever an earlier start left there is replaced
        steps.append(['train.py'] + train + (['--resume'] if state == 'partial' else ['--overwrite']))
    steps.append(['test.py'] + spec['test'])
    with open_no_follow(log, 'a') as fh:
        for script, *rest in steps:
            cmd = [sys.executable, os.path.join(REPO_ROOT, script)] + rest
            fh.write(f'$ {shlex.join(cmd)}\n')
            fh.flush()
            rc = run_in_process(script, rest, fh) if in_process else run_child(cmd, fh, env, show)
            if STOP['signal'] is not None:
                return f'interrupted ({script} exit {rc}; relaunch the sweep to resume)'
            if rc != 0:
                return f'failed ({script} exit {rc}, see {log})'
    return 'finished' + note


# -- launchers -------------------------------------------------------------------------------------

def with_threads(spec, threads):
    """``spec`` with train.py's ``--threads`` set, unless the sweep's train.py arguments set it already."""
    if threads is None or any(a == '--threads' or a.startswith('--threads=') for a in spec['train']):
        return spec
    return dict(spec, train=spec['train'] + ['--threads', str(threads)])


def launch_slots(phases, bar, args, slots):
    """Runs on ``slots``, a list of ``(environment, train.py --threads)``: as many runs at once as slots, each
    slot one run at a time, in the phases' order. A run that starts from another run of this sweep waits for
    that run (LNL for its baseline), not for the whole first phase: a slot that would idle until the last
    baseline finishes trains the LNL of a finished one meanwhile. Runs are taken in order, so a waiting run
    waits only for runs that already hold a slot or have finished."""
    from concurrent.futures import ThreadPoolExecutor
    import queue
    free = queue.Queue()
    for slot in slots:
        free.put(slot)
    futures = {}

    def on_slot(spec):
        base = spec.get('base')
        if base is not None and base['name'] in futures:
            futures[base['name']].result()  # its base's run ends first (execute checks that it finished)
        env, threads = free.get()
        try:
            return execute(with_threads(spec, threads), env=env, overwrite=args.overwrite)
        finally:
            free.put((env, threads))

    ordered = [spec for phase in phases for spec in phase]
    results = {}
    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        for spec in ordered:  # a base is submitted (and its future stored) before any run that starts from it
            futures[spec['name']] = pool.submit(on_slot, spec)
        for spec in ordered:
            results[spec['name']] = futures[spec['name']].result()
            bar.update()
    return results


def launch_local(phases, bar, args, in_process=False):
    """One run after another on this machine, each in its own process; with ``--runs_at_once K``, K runs at
    once, the cores split between them (train.py ``--threads``)."""
    if args.runs_at_once > 1 and not in_process:
        threads = max(1, usable_cores() // args.runs_at_once)
        return launch_slots(phases, bar, args, [(None, threads)] * args.runs_at_once)
    results = {}
    for phase in phases:
        for spec in phase:
            bar.set_postfix_str(spec['name'])
            results[spec['name']] = execute(spec, in_process=in_process, fresh=args.smoke, overwrite=args.overwrite,
                                             show=args.show_output)
            bar.update()
    return results


def launch_in_process(phases, bar, args):
    """One run after another in this process (the smoke run; methods registered only in this process).
    The smoke run starts every run afresh; otherwise finished runs are skipped and others resumed, as with
    the local launcher."""
    return launch_local(phases, bar, args, in_process=True)


def launch_multi_gpu(phases, bar, args):
    """``--runs_at_once`` runs per visible GPU at a time (default one); a run that starts from another waits for it."""
    gpus = visible_gpus()
    if not gpus:
        raise UserError('--launcher multi_gpu found no GPU (set CUDA_VISIBLE_DEVICES or use --launcher local)')
    threads = max(1, usable_cores() // (len(gpus) * args.runs_at_once))  # the CPU work of each run (data, logging)
    slots = [(dict(os.environ, CUDA_VISIBLE_DEVICES=str(g)), threads) for g in gpus for _ in range(args.runs_at_once)]
    return launch_slots(phases, bar, args, slots)


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
        jobs = [(spec['name'], executor.submit(execute, spec, overwrite=args.overwrite)) for spec in phase]
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
    'local': (launch_local, 'one run after another on this machine (--runs_at_once K: K at a time)'),
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
    grid = [m for m in names if methods.METHODS[m].in_default_grid]
    p.add_argument('--methods', nargs='+', default=grid, choices=names, metavar='METHOD',
                   help=f'methods: {", ".join(names)} ({starting}; default: the paper\'s, {" ".join(grid)})')
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3], metavar='SEED',
                   help='values of train.py --random_seed, one run per seed')
    p.add_argument('--out', default=None, type=existing_or_new_folder,
                   help='folder of the run folders (required, except with --smoke)')
    p.add_argument('--data_dir', default=DATA_DIR, type=existing_or_new_folder,
                   help='folder of the data files, generated when missing (default: data/ in this repository)')
    add_palette_argument(p)
    p.add_argument('--launcher', choices=list(LAUNCHERS), default='local',
                   help='; '.join(f'{k}: {v[1]}' for k, v in LAUNCHERS.items()))
    p.add_argument('--base_dir', default=None, metavar='DIR',
                   help='folder of the finished runs that LNL and BlindEye start from (default: --out); e.g. '
                        'two variants of LNL from the same baselines, each in its own --out')
    p.add_argument('--base_checkpoint', default=None, metavar='FILE',
                   help='LNL and BlindEye start from this finished baseline checkpoint instead of a baseline run, '
                        'e.g. the shipped pretrained/baseline_var0.020_seed2.pth (one sigma^2: the one it was '
                        'trained on; BASELINE=pretrained bash train.sh)')
    p.add_argument('--baseline_lr', type=positive_float, default=None,
                   help='lr of the runs that start from scratch (default: each method\'s own, 0.01)')
    p.add_argument('--unlearn_lr', type=positive_float, default=None,
                   help='lr of the runs that start from a baseline (default: each method\'s own, 0.001)')
    p.add_argument('--unlearn_max_step', type=positive_int, default=None, metavar='EPOCHS',
                   help='train.py --max_step of the runs that start from a baseline (default: the --max_step '
                        'given to train.py after --, as for the other runs)')
    p.add_argument('--runs_at_once', type=positive_int, default=1, metavar='K',
                   help='local: K runs at once, the cores split between them (train.py --threads cores/K, unless '
                        'given after --); multi_gpu: K runs per GPU. On the 2-core CPU of docs/speed.md two runs '
                        'of one thread each finish a grid faster than one run of two threads (its throughput table)')
    p.add_argument('--no_probe', action='store_true', help='skip the bias-leakage probe after training')
    p.add_argument('--overwrite', action='store_true',
                   help='train again the runs in --out whose options differ from this request (without it they '
                        'are refused and named); runs that match are still skipped or resumed')
    p.add_argument('--timeout_min', type=positive_int, default=24 * 60, help='submitit: time limit of one job')
    p.add_argument('--partition', default=None, help='slurm partition')
    p.add_argument('--gpus_per_job', type=positive_int, default=1, help='slurm: GPUs per job')
    p.add_argument('--cpus_per_job', type=positive_int, default=4, help='slurm: CPU cores per job')
    p.add_argument('--list', action='store_true', help='print the runs and their state, run nothing')
    p.add_argument('--show_output', action='store_true',
                   help='local launcher: show what each run prints (progress bars included) here as well as in its '
                        'sweep.log (what train.sh uses)')
    p.add_argument('--smoke', action='store_true',
                   help='the install check: sigma^2 = 0.020, every method, seed 1, train.py --dry_run '
                        '--max_step 2 in this process, test.py, then the table and figures of collect_results '
                        '(default --out: smoke/ in this repository, apart from real runs; replaced on every call, '
                        'and refused in a folder that holds runs that are not smoke runs)')
    return p


SMOKE_DIR = os.path.join(REPO_ROOT, 'smoke')  # the smoke run's runs, apart from real ones

# train.py options the sweep sets for every run itself, and where to ask for them instead.
RESERVED = {
    '-e': 'the run folder is named <method>_var<sigma^2>_seed<seed> under --out',
    '--exp_name': 'the run folder is named <method>_var<sigma^2>_seed<seed> under --out',
    '--method': 'give --methods before -- (train.sh: baseline then LNL)',
    '--train_baseline': 'give --methods before -- (train.sh: baseline then LNL)',
    '--color_var': 'give --color_vars before -- (train.sh: COLOR_VAR=0.035 bash train.sh)',
    '--random_seed': 'give --seeds before -- (train.sh: SEED=2 bash train.sh)',
    '--save_dir': 'give --out before -- (train.sh: SAVE_DIR=...)',
    '--data_dir': 'give --data_dir before -- (train.sh: DATA_DIR=...)',
    '--palette': 'give --palette before --',
    '--lr': 'give --baseline_lr or --unlearn_lr before --',
    '--use_pretrain': 'LNL and BlindEye start from their baseline run (--base_dir to take it from another sweep)',
    '--checkpoint': 'LNL and BlindEye start from their baseline run (--base_dir to take it from another sweep)',
    '--resume': 'a relaunch resumes unfinished runs by itself',
    '--overwrite': 'give --overwrite before -- (it trains again the runs whose options differ)',
}


def check_base_checkpoint(args):
    """``--base_checkpoint``: a readable checkpoint of the method the chosen methods start from, trained on the
    one sigma^2 asked for; not combined with training that method or with --base_dir."""
    path = args.base_checkpoint
    if not os.path.isfile(path):
        raise UserError(f'--base_checkpoint {path}: no such file (the shipped baseline is '
                        'pretrained/baseline_var0.020_seed2.pth)')
    starts = {methods.get(m).start_from for m in args.methods}
    if None in starts or len(starts) != 1:
        raise UserError('--base_checkpoint goes with methods that start from a baseline only (e.g. --methods lnl), '
                        f'not with {" ".join(m for m in args.methods if not methods.get(m).start_from)}')
    if args.base_dir is not None:
        raise UserError('give --base_checkpoint or --base_dir, not both')
    ckpt = C.read_checkpoint(path)
    C.check_fields(ckpt, path)
    opts = ckpt.get('options') or {}
    base = starts.pop()
    if opts.get('method') != base:
        raise UserError(f'--base_checkpoint {path} is a {opts.get("method")} checkpoint; the methods asked for start '
                        f'from a {base} one')
    trained = opts.get('color_var')
    if trained is None or any(f'{cv:.3f}' != f'{float(trained):.3f}' for cv in args.color_vars):
        raise UserError(f'--base_checkpoint {path} was trained on sigma^2 = {trained}; give --color_vars {trained} '
                        '(train a baseline for the other variances)')
    args.base_checkpoint = os.path.abspath(path)


def parse(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = []
    if '--' in argv:
        cut = argv.index('--')
        argv, train_args = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.color_vars, args.methods, args.seeds = [0.020], methods.method_names(), [1]
        args.out = args.out or SMOKE_DIR
        args.launcher = 'inprocess'
        train_args = ['--dry_run', '--max_step', '2'] + train_args
    elif args.out is None:
        raise UserError('--out FOLDER is required (where the run folders go), e.g. --out sweeps/fig4')
    if args.base_checkpoint is not None:
        check_base_checkpoint(args)
    for m in args.methods:
        base = methods.get(m).start_from
        if base and base not in args.methods and args.base_dir is None and args.base_checkpoint is None:
            raise UserError(f'{m} starts from the {base} run: add {base} to --methods, or give --base_dir (a '
                            f'folder holding finished {base} runs)')
    if args.base_dir is not None:
        if not os.path.isdir(args.base_dir):
            raise UserError(f'--base_dir {args.base_dir} is not a folder; give the --out of the sweep that '
                            'trained the runs to start from')
        args.base_dir = os.path.abspath(args.base_dir)
    reserved = sorted({a.split('=', 1)[0] for a in train_args} & set(RESERVED))
    if reserved:
        raise UserError(f'{reserved[0]} after -- would override what the sweep sets for each run: '
                        f'{RESERVED[reserved[0]]}')
    if args.show_output and args.launcher not in ('local',):
        raise UserError('--show_output goes with --launcher local')
    if args.runs_at_once > 1 and args.show_output:
        raise UserError('--show_output shows one run at a time; drop it with --runs_at_once (each run writes its '
                        'output to its sweep.log)')
    if args.runs_at_once > 1 and args.launcher not in ('local', 'multi_gpu'):
        raise UserError(f'--runs_at_once goes with --launcher local or multi_gpu, not {args.launcher}')
    if args.launcher == 'local' and args.runs_at_once > usable_cores():
        raise UserError(f'--runs_at_once {args.runs_at_once} on {usable_cores()} core(s): each run needs a core of '
                        f'its own; give at most {usable_cores()}')
    args.train_args = train_args
    args.out = os.path.abspath(args.out)
    args.data_dir = os.path.abspath(args.data_dir)
    return args



def refuse_real_runs(out):
    """--smoke replaces the runs in --out: refuse a folder that holds runs that are not smoke runs."""
    if not os.path.isdir(out):
        return
    for name in sorted(os.listdir(out)):
        opts = run_folder.read_options(os.path.join(out, name))
        if opts and not opts.get('dry_run'):
            raise UserError(f'--smoke would replace the runs in {out}, and {name} is a real run (not --dry_run); '
                            'give the smoke run another --out (default: smoke/ in this repository)')


def main(argv=None):
    args = parse(argv)
    if args.smoke:
        refuse_real_runs(args.out)
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
    if args.launcher in SIGNAL_FORWARDING or args.launcher == 'inprocess':
        handler = forward_signal if args.launcher in SIGNAL_FORWARDING else stop_in_process
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tqdm(total=len(specs), desc='sweep', unit='run', dynamic_ncols=True, disable=args.show_output) as bar:
            try:
                results = LAUNCHERS[args.launcher][0](phases, bar, args)
            except KeyboardInterrupt:  # the in-process launcher, stopped between two steps
                STOP['signal'] = STOP['signal'] or signal.SIGINT
                results = {}
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = {k: v for k, v in results.items() if v.startswith(('failed', 'refused', 'not started'))}
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
