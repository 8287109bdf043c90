"""The sweep's command line: its options, their checks, the smoke run, and the summary of what the runs did."""
import contextlib
import io
import os
import shlex
import signal
import sys
import time

import methods
import run_folder
from dataset.colored_mnist import PAPER_VARIANCES, add_palette_argument, color_variance
from experiments.sweep.launchers import LAUNCHERS, SIGNAL_FORWARDING
from experiments.sweep.runner import STOP, forward_signal, stop_in_process
from experiments.sweep.spec import RESERVED, base_file, make_specs
from experiments.sweep.state import check_start_file, requested_options, status
from utils import (REPO_ROOT, Parser, add_data_dir, UserError, existing_or_new_folder, positive_float, positive_int,
                   seed_number, usable_cores)

EPILOG = ('Arguments after a lone -- go to every train.py call, e.g. `-- --max_step 10 --precision bf16`. '
          'python -m experiments.sweep --smoke checks the whole pipeline (data, four methods, test.py, table, figures) in '
          'seconds.')


def build_parser():
    # python -m experiments.sweep runs __main__.py: the usage line names the sweep
    prog = os.path.basename(sys.argv[0])
    p = Parser(prog='sweep.py' if prog == '__main__.py' else prog,
               description='Train and evaluate sigma^2 x method x seed (the Fig. 4 grid); relaunching the same '
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
    p.add_argument('--seeds', type=seed_number, nargs='+', default=[1, 2, 3], metavar='SEED',
                   help='values of train.py --random_seed, one run per seed')
    p.add_argument('--out', default=None, type=existing_or_new_folder,
                   help='folder of the run folders (required, except with --smoke)')
    add_data_dir(p)
    add_palette_argument(p)
    p.add_argument('--launcher', choices=list(LAUNCHERS), default='local',
                   help='; '.join(f'{k}: {v[1]}' for k, v in LAUNCHERS.items()))
    p.add_argument('--base_dir', default=None, metavar='DIR',
                   help='folder of the finished runs that LNL and BlindEye start from (default: --out); e.g. '
                        'two variants of LNL from the same baselines, each in its own --out')
    p.add_argument('--base_checkpoint', default=None, metavar='FILE|DIR',
                   help='LNL and BlindEye start from this finished baseline checkpoint instead of a baseline run, '
                        'e.g. the shipped pretrained/baseline_var0.020_seed2.pth (one sigma^2: the one it was '
                        'trained on; BASELINE=pretrained bash train.sh); or from a folder of such files named as '
                        'pretrained/ names them, <method>_var<sigma^2>_seed<seed>.pth: each run starts from the '
                        'file of its sigma^2 and seed (e.g. --base_checkpoint pretrained --seeds 1)')
    p.add_argument('--baseline_lr', type=positive_float, default=None,
                   help='lr of the runs that start from scratch (default: each method\'s own, 0.01)')
    p.add_argument('--unlearn_lr', type=positive_float, default=None,
                   help='lr of the runs that start from a baseline (default: each method\'s own, 0.001)')
    p.add_argument('--unlearn_max_step', type=positive_int, default=None, metavar='EPOCHS',
                   help='train.py --max_step of the runs that start from a baseline (default: the --max_step '
                        'given to train.py after --, as for the other runs)')
    p.add_argument('--runs_at_once', type=positive_int, default=1, metavar='K',
                   help='local: K runs at once, the cores split between them (train.py --threads cores/K, unless '
                        'given after --) and the visible GPUs, if any, dealt round-robin (one per run where there are '
                        'K); multi_gpu: K runs per GPU. On the 2-core CPU of docs/speed.md two runs '
                        'of one thread each finish a grid faster than one run of two threads (its throughput table)')
    p.add_argument('--pack', type=positive_int, default=1, metavar='K',
                   help='train up to K runs of one method as one network (train_pack.py; the same numbers as alone): '
                        'for a GPU, where one small run leaves the card idle. Runs on the CPU train one by one '
                        'unless --pack_on_cpu (packing measured no faster there: docs/speed.md)')
    p.add_argument('--pack_on_cpu', action='store_true', help='pack (--pack K) runs that train on the CPU too')
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


def check_base_checkpoint(args, train_args):
    """``--base_checkpoint``: a readable checkpoint of the method the chosen methods start from, a start the sweep
    would take from a run of its own (finished, on the sigma^2, palette and data seed of the runs asked for, not a
    dry run unless they are; see state.check_start_file); or a folder holding such a file for every sigma^2 and
    seed asked for (:func:`spec.base_file`); not combined with training that method or with --base_dir."""
    path = args.base_checkpoint
    if not os.path.exists(path):
        raise UserError(f'--base_checkpoint {path}: no such file or folder (the shipped baselines are in '
                        'pretrained/, e.g. pretrained/baseline_var0.020_seed2.pth)')
    starts = {m: methods.get(m).start_from for m in dict.fromkeys(args.methods)}
    if None in starts.values():
        raise UserError('--base_checkpoint goes with methods that start from a baseline only (e.g. --methods lnl), '
                        f'not with {" ".join(m for m, base in starts.items() if not base)}')
    if len(set(starts.values())) != 1:
        named = ', '.join(f'{m} from a {base} run' for m, base in starts.items())
        raise UserError(f'--base_checkpoint gives one start, and the methods asked for start from different runs '
                        f'({named}); run one sweep per kind of start')
    if args.base_dir is not None:
        raise UserError('give --base_checkpoint or --base_dir, not both')
    method = next(iter(starts))
    request = requested_options(['-e', 'start', '--method', method, '--palette', args.palette] + list(train_args))
    args.base_checkpoint = os.path.abspath(path)
    if not os.path.isdir(path):
        check_start_file(path, starts[method], args.color_vars, request)
        return
    for cv in args.color_vars:
        for seed in args.seeds:
            found = base_file(args.base_checkpoint, starts[method], cv, seed)
            if not os.path.isfile(found):
                raise UserError(f'--base_checkpoint {path}: the folder has no {os.path.basename(found)}, the start of '
                                f'the runs at sigma^2 {cv:.3f} seed {seed}; train that {starts[method]} first, or '
                                'leave that sigma^2 or seed out')
            check_start_file(found, starts[method], [cv], request, seed=seed)


def check_train_args(asked, train_args):
    """The train.py arguments after ``--`` as each method's runs will parse them, refused here in one line rather
    than by every run's process (its usage in each sweep.log, a run folder left behind)."""
    from option import get_option
    for method in dict.fromkeys(asked):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                get_option(['-e', 'check', '--method', method] + list(train_args))
        except SystemExit as exc:
            if not exc.code:  # --help after --
                continue
            message = (err.getvalue().strip().splitlines() or ['error: invalid'])[-1].split('error: ', 1)[-1]
            raise UserError(f'train.py refuses the arguments after -- ({message}); see python train.py --help') \
                from None


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
    check_train_args(args.methods, train_args)
    if args.base_checkpoint is not None:
        check_base_checkpoint(args, train_args)
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
    if args.pack > 1:
        check_pack(args, train_args)
    args.train_args = train_args
    args.out = os.path.abspath(args.out)
    args.data_dir = os.path.abspath(args.data_dir)
    return args


def check_pack(args, train_args):
    """--pack K: with a launcher that runs here or on this machine's GPUs; on a CPU only with --pack_on_cpu (else
    one note, and the runs train one by one)."""
    if args.launcher not in ('local', 'multi_gpu'):
        raise UserError(f'--pack goes with --launcher local or multi_gpu, not {args.launcher}')
    unpackable = [m for m in dict.fromkeys(args.methods) if not methods.get(m).packable]
    if unpackable:
        raise UserError(f'--pack: {" ".join(unpackable)} does not train packed; run it in a sweep without --pack')
    device = 'auto'
    for i, a in enumerate(train_args):
        if a == '--device' and i + 1 < len(train_args):
            device = train_args[i + 1]
        elif a.startswith('--device='):
            device = a.split('=', 1)[1]
    from experiments.sweep import devices
    on_cpu = device == 'cpu' or (device == 'auto' and not devices.visible_gpus())
    if on_cpu and not args.pack_on_cpu:
        print(f'note: --pack {args.pack}: the runs train on the CPU, where packing measured no faster (docs/speed.md); '
              'they train one by one (--pack_on_cpu to pack them all the same)', file=sys.stderr)
        args.pack = 1


def refuse_real_runs(out):
    """--smoke replaces the runs in --out: refuse a folder that holds runs that are not smoke runs."""
    if not os.path.isdir(out):
        return
    for name in sorted(os.listdir(out)):
        opts = run_folder.read_options(os.path.join(out, name))
        if opts and not opts.get('dry_run'):
            raise UserError(f'--smoke would replace the runs in {out}, and {name} is a real run (not --dry_run); '
                            'give the smoke run another --out (default: smoke/ in this repository)')


def main(argv=None, on_run_end=None):
    """The sweep; ``on_run_end``, where given, is called with ``{name: status}`` as each run (or pack) ends (not
    with the Slurm launchers, whose runs end elsewhere)."""
    args = parse(argv)
    args.on_run_end = on_run_end
    if args.smoke:
        refuse_real_runs(args.out)
    specs = make_specs(args)
    if args.list:
        for s in specs:
            print(f'{status(s):8s} {s["name"]}')
        return {}
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise UserError(f'cannot make --out {args.out} ({exc.strerror}); give a folder you can write to') from None
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
