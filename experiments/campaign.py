"""The Fig. 4 campaign at the paper's budget: the sweep, one seed at a time, resumable on any machine.

    python -m experiments.campaign --out ~/campaign/paper_e100          # train what is not committed yet
    python -m experiments.campaign --out ~/campaign/paper_e100 --list   # what is committed, what is left

It trains the cells of the grid whose records are not yet under ``--records`` (docs/results/paper_e100), in the
order that gives the whole curve with one seed first: seed 1 at every sigma^2 of ``--color_vars``, then seed 2,
then seed 3, the variances of a seed in one sweep with two runs at a time (one thread each), so that a core a
finished run frees takes the next run at once (variances with other methods left, or another kind of start, in
sweeps of their own).
As each run ends, and when it is stopped (SIGTERM or Ctrl-C: the running runs save their state), it copies the
records (``options.json``, ``results.jsonl``) of every finished run into ``--records`` and the weights of every
finished baseline (and of seed 1's LNL) into ``--weights`` (pretrained/, with provenance), so that committing
those two folders is all a move to another machine needs: the relaunch skips the committed cells and starts LNL
and BlindEye from the committed baseline weights when the baseline's run folder is not on this machine.

Precision: ``auto`` (the default) trains in bf16 autocast where the machine computes bfloat16 natively (the
headline runs: a CPU with AVX512-BF16) and in fp32 elsewhere, where emulated bf16 takes about ten times as long
as fp32; every run records the precision it used, and paired fp32/bf16 runs agree within the spread between seeds
(docs/speed.md). The choice is made here, once, and passed to every run as fp32 or bf16.
"""
import os
import sys
import tempfile
import threading

import methods
import run_folder
from dataset.colored_mnist import color_variance
from experiments import pretrained, records, sweep
from experiments.campaign_eta import Estimate, epochs_done, hours
from experiments.sweep.devices import auto_precision
from utils import (DATA_DIR, REPO_ROOT, Parser, UserError, add_data_dir, add_precision, atomic_write_text,
                   existing_or_new_folder, positive_int, run_main, seed_number)
from utils.runtime import repository_commit

# The curve's order: the six variances without a paper-budget run, then 0.020 (where only Gray seed 1 is missing).
CAMPAIGN_VARIANCES = (0.025, 0.030, 0.035, 0.040, 0.045, 0.050, 0.020)
RECORD_FILES = (run_folder.OPTIONS, run_folder.RESULTS)
SHIPPED = {'baseline': None, 'lnl': (1,)}  # methods whose weights are exported: every seed (None) or these seeds


def committed(records_dir, name, method, color_var, dry_run=False):
    """Whether ``records_dir/name`` holds a finished run's test record of its last epoch (a grey-input method: of
    the view the tables report), and a dry run only when the campaign is one."""
    run_dir = os.path.join(records_dir, name)
    opts = run_folder.read_options(run_dir)
    if not opts or bool(opts.get('dry_run')) != dry_run:
        return False
    view = records.gray_view_of_tag('test') if methods.get(method).gray else None
    return records.current_test(run_folder.read_results(run_dir), color_var, gray_view=view)[0] is not None


def weights_file(weights_dir, name):
    return os.path.join(weights_dir, name + '.pth')


def plan(args):
    """One step per (seed, sigma^2): ``(color_var, seed, [methods still to train])``, in the campaign's order."""
    steps = []
    for seed in args.seeds:
        for cv in args.color_vars:
            todo = [m for m in args.methods
                    if not committed(args.records, sweep.run_name(m, cv, seed), m, cv, args.dry_run)]
            steps.append((cv, seed, todo))
    return steps


def trains_base_here(args, cv, seed, todo):
    """Whether the runs of ``todo`` at (cv, seed) start from baselines of ``--out`` (trained in the same sweep, or
    finished there), rather than from the committed baseline weights."""
    bases = {methods.get(m).start_from for m in todo} - {None}
    return all(b in todo or run_folder.finished_checkpoint(os.path.join(args.out, sweep.run_name(b, cv, seed)))
               for b in bases)


def seed_sweeps(args, seed, steps):
    """The steps ``[(cv, todo)]`` of one seed as ``[(cvs, todo, base_here)]`` (:func:`trains_base_here`): the
    variances with the same methods left and the same kind of start trained by the same sweeps, so that a core
    that a short run frees takes a run of the next variance instead of idling until the longest run of its
    variance ends (BlindEye ends before LNL). In the order of ``steps``."""
    groups = {}
    for cv, todo in steps:
        groups.setdefault((tuple(todo), trains_base_here(args, cv, seed, todo)), []).append(cv)
    return [(cvs, list(todo), base_here) for (todo, base_here), cvs in groups.items()]


def sweep_calls(args, cvs, seed, todo, base_here):
    """The sweep command lines that train ``todo`` at each of ``cvs`` and ``seed`` (alike: :func:`seed_sweeps`):
    one when the baselines are trained here or their run folders are finished in ``--out``; otherwise the
    from-scratch methods, then the others from the committed baseline weights (``--base_checkpoint`` of the
    ``--weights`` folder: each run from the file of its sigma^2 and seed). ``base_here``: as :func:`seed_sweeps`
    found it for these variances."""
    common = ['--color_vars', *[f'{cv:.3f}' for cv in cvs], '--seeds', str(seed), '--out', args.out, '--runs_at_once',
              str(args.runs_at_once)] + (['--data_dir', args.data_dir] if args.data_dir != DATA_DIR else [])
    after = ['--', '--precision', args.precision] + args.train_args
    starting = [m for m in todo if methods.get(m).start_from]
    scratch = [m for m in todo if not methods.get(m).start_from]
    bases = sorted({methods.get(m).start_from for m in starting})
    if not starting or base_here:
        chosen = [m for m in args.methods if m in todo or m in bases]
        return [common + ['--methods'] + chosen + after]
    calls = [common + ['--methods'] + scratch + after] if scratch else []
    for base in bases:
        for cv in cvs:
            path = weights_file(args.weights, sweep.run_name(base, cv, seed))
            if not os.path.isfile(path):
                raise UserError(f'{sweep.run_name(base, cv, seed)} is committed under {args.records} but its weights '
                                f'{path} are not: export them (python -m experiments.pretrained --export) or delete '
                                'its records to train it again')
        mine = [m for m in starting if methods.get(m).start_from == base]
        calls.append(common + ['--methods'] + mine + ['--base_checkpoint', args.weights] + after)
    return calls


def harvest(args, cv, seed, command):
    """Copy the records of the finished runs of (cv, seed) into ``--records`` and export the weights of those
    ``SHIPPED`` names; returns the names copied."""
    copied = []
    for m in args.methods:
        name = sweep.run_name(m, cv, seed)
        run_dir = os.path.join(args.out, name)
        spec = {'run_dir': run_dir, 'method': m, 'color_var': cv}
        if run_folder.finished_checkpoint(run_dir) is None or not sweep.has_test_record(spec):
            continue
        if committed(args.records, name, m, cv, args.dry_run) and not _newer(run_dir, os.path.join(args.records, name)):
            continue
        dest = os.path.join(args.records, name)
        there = run_folder.read_options(dest)
        if args.dry_run and there and not there.get('dry_run'):
            print(f'campaign: {dest} holds a real run\'s records: the dry run {name} is not copied over them',
                  file=sys.stderr)
            continue
        os.makedirs(dest, exist_ok=True)
        for f in RECORD_FILES:
            with open(os.path.join(run_dir, f), encoding='utf-8') as fh:
                atomic_write_text(os.path.join(dest, f), fh.read())
        copied.append(name)
        seeds = SHIPPED.get(m, ())
        if m in SHIPPED and (seeds is None or seed in seeds) and not args.dry_run:  # dry runs are not shipped
            pretrained.export([run_dir], args.weights, args.records, args.commit, command)
    if copied:
        print(f'campaign: records of {", ".join(copied)} -> {args.records}', flush=True)
    return copied


def here(args, name):
    """Where run ``name`` stands in ``--out`` on this machine: '' (not there, or nothing saved), 'training now at
    epoch N/M', 'finished' (not yet copied: the relaunch copies it) or 'at epoch N/M' (its state saved: the relaunch
    resumes it)."""
    run_dir = os.path.join(args.out, name)
    state = run_folder.state(run_dir) if os.path.isdir(run_dir) else 'new'
    if state == 'finished':
        return 'finished'
    at = f'at epoch {epochs_done(run_dir)}/{run_folder.read_options(run_dir).get("max_step", "?")}'
    return {'running': f'training now {at}', 'partial': at}.get(state, '')


def list_runs(args, steps, left):
    """--list: what is committed, what is left (and of that, what --out holds), and about how long the rest takes."""
    def asked_epochs(method):
        return sweep.requested_options(['-e', 'x', '--method', method] + args.train_args)['max_step']
    eta = Estimate(args.out, args.records, run_precision(args.precision)[0], asked_epochs)
    for cv, seed, todo in steps:
        found = []
        for m in todo:
            name = sweep.run_name(m, cv, seed)
            where = here(args, name)
            seconds = eta.add(m, name) if where != 'finished' else None
            if seconds is not None and where:
                where += f', about {hours(seconds)} left'
            if where:
                found.append(f'{m} {where}')
        print(f'sigma^2 {cv:.3f} seed {seed}: ' + (f'to train: {" ".join(todo)}' if todo else 'committed')
              + (f' (in --out: {", ".join(found)})' if found else ''))
    summary = eta.summary(args.runs_at_once)
    line = f'{sum(len(t) for _, _, t in left)} runs left at {len(left)} (sigma^2, seed)'
    print(line + (f'; {summary}' if summary else ''))


def _newer(run_dir, rec_dir):
    """Whether the run's results.jsonl differs from the committed one (a run trained or tested again)."""
    a, b = run_folder.file(run_dir, run_folder.RESULTS), run_folder.file(rec_dir, run_folder.RESULTS)
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        return fa.read() != fb.read()


def check_writable_folder(flag, folder):
    """``folder`` can be written (made, where it is missing: its nearest existing folder can be written)."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserError(f'cannot write into {flag} {folder} ({exc.strerror}); the finished runs are copied there: '
                        'give a folder you can write to') from None


def check_no_real_records(folder):
    """A dry-run campaign copies its records into a folder of its own: never over the records of real runs."""
    real = sorted(name for name in (os.listdir(folder) if os.path.isdir(folder) else ())
                  if (opts := run_folder.read_options(os.path.join(folder, name))) and not opts.get('dry_run'))
    if real:
        raise UserError(f'--records {folder} holds the records of real runs ({real[0]}, ...); a dry-run campaign '
                        '(-- --dry_run) copies its records there: give --records and --weights folders of its own')


def build_parser():
    p = Parser(description='Train the paper-budget Fig. 4 grid one seed at a time, skipping the cells '
                           'whose records are committed; records and baseline weights are copied into the '
                           'repository as runs finish.')
    p.add_argument('--out', required=True, type=existing_or_new_folder,
                   help='folder of the run folders (outside the work tree, e.g. ~/campaign/paper_e100)')
    p.add_argument('--records', default=os.path.join(REPO_ROOT, 'docs', 'results', 'paper_e100'),
                   type=existing_or_new_folder, help='folder of the committed records (default: docs/results/paper_e100)')
    p.add_argument('--weights', default=pretrained.PRETRAINED_DIR, type=existing_or_new_folder,
                   help='folder of the committed weights (default: pretrained/)')
    add_data_dir(p)
    p.add_argument('--color_vars', type=color_variance, nargs='+', default=list(CAMPAIGN_VARIANCES),
                   metavar='SIGMA2', help='in the order to train them (default: 0.025 ... 0.050, then 0.020)')
    p.add_argument('--seeds', type=seed_number, nargs='+', default=[1, 2, 3], metavar='SEED')
    p.add_argument('--methods', nargs='+', default=['baseline', 'lnl', 'blindeye', 'gray'],
                   choices=methods.method_names(), metavar='METHOD')
    p.add_argument('--runs_at_once', type=positive_int, default=2, help='runs at once (one core each on a 2-core machine)')
    add_precision(p, default='auto', help='train.py --precision of every run; auto: bf16 autocast where this '
                                         'machine computes it natively (the headline runs), else fp32')
    p.add_argument('--list', action='store_true',
                   help='print what is committed and what is left (and of that, which runs --out holds saved part-way '
                        'or finished: a relaunch here resumes or copies them), train nothing')
    p.add_argument('--commit', default=None,
                   help='with --harvest: the commit the runs were trained from (default: this checkout\'s)')
    p.add_argument('--pending', action='store_true',
                   help='print the variances (of --color_vars) with a cell left to train at the first seed of --seeds '
                        'that has any, as "SEED SIGMA2 ...", train nothing (benchmarks/gpu_fig4.sh)')
    p.add_argument('--harvest', default=None, metavar='COMMAND',
                   help='train nothing: copy the finished runs in --out into --records and --weights, recording '
                        'COMMAND as the command that trained them')
    p.epilog = ('Arguments after a lone -- go to every train.py call (a toy check of the campaign: '
                '-- --dry_run --max_step 1 with --records and --weights elsewhere).')
    return p


def portable(args, arg):
    """``arg`` of a sweep call as provenance records it, with no path of this machine: OUT, DATA_DIR, or a path
    inside the repository that holds ``--weights`` relative to it."""
    if arg == args.out:
        return 'OUT'
    if arg == args.data_dir:
        return 'DATA_DIR'
    repo = pretrained.repository_of(args.weights)
    if os.path.isabs(arg) and os.path.commonpath([arg, repo]) == repo:
        return os.path.relpath(arg, repo)
    return arg


def run_precision(requested):
    """``(precision, line)``: what every run of this campaign trains in (``auto`` decided for this machine) and a
    line that says why, or warns when bf16 is asked for where it is emulated."""
    if requested == 'fp32':
        return requested, 'campaign: precision fp32'
    native = auto_precision() == 'bf16'
    if requested == 'auto':
        return ('bf16', 'campaign: precision bf16 (this machine computes bfloat16 natively)') if native else \
            ('fp32', 'campaign: precision fp32 (no native bfloat16 here: neither amx_bf16 nor avx512_bf16 on the CPU; '
                     'paired fp32/bf16 runs agree, docs/speed.md)')
    if requested == 'bf16' and not native:
        return 'bf16', ('warning: --precision bf16 on a machine without native bfloat16: autocast emulates it and a '
                        'run takes about ten times as long as in fp32; --precision auto trains in fp32 here')
    return requested, f'campaign: precision {requested}'


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index('--') + 1:] if '--' in argv else []
    args = build_parser().parse_args(argv[:len(argv) - len(train_args) - (1 if '--' in argv else 0)])
    args.train_args, args.dry_run = train_args, '--dry_run' in train_args
    args.out, args.records, args.weights = (os.path.abspath(p) for p in (args.out, args.records, args.weights))
    args.data_dir = os.path.abspath(args.data_dir)
    if os.path.commonpath([args.out, REPO_ROOT]) == REPO_ROOT:
        raise UserError(f'--out {args.out} is inside the repository; give a folder outside it (e.g. '
                        '~/campaign/paper_e100): its checkpoints are not committed')
    args.commit = args.commit or repository_commit() or 'unknown'
    steps = plan(args)
    if not (args.list or args.pending or args.harvest is not None):
        args.precision, line = run_precision(args.precision)
        print(line, file=sys.stderr if line.startswith('warning') else sys.stdout, flush=True)
    left = [(cv, seed, todo) for cv, seed, todo in steps if todo]
    if not (args.list or args.pending or args.harvest is not None):
        for flag, folder in (('--records', args.records), ('--weights', args.weights)):
            check_writable_folder(flag, folder)  # before hours of training whose results go there
        if args.dry_run:
            check_no_real_records(args.records)
    if args.harvest is not None:
        copied = [name for cv in args.color_vars for seed in args.seeds for name in harvest(args, cv, seed, args.harvest)]
        print(f'campaign: {len(copied)} finished runs copied')
        return 0
    if args.pending:
        for seed in args.seeds:
            cvs = [f'{cv:.3f}' for cv, s, todo in left if s == seed]
            if cvs:
                print(seed, ' '.join(cvs))
                break
        return 0
    if args.list:
        list_runs(args, steps, left)
        return 0
    for seed in dict.fromkeys(s for _, s, _ in left):
        for cvs, todo, base_here in seed_sweeps(args, seed, [(cv, todo) for cv, s, todo in left if s == seed]):
            print(f'campaign: sigma^2 {" ".join(f"{cv:.3f}" for cv in cvs)} seed {seed}: {" ".join(todo)}', flush=True)
            for call in sweep_calls(args, cvs, seed, todo, base_here):
                command = 'python -m experiments.sweep ' + ' '.join(portable(args, a) for a in call)
                lock = threading.Lock()  # two runs that end together copy one after the other

                def copy_finished(done, cvs=cvs, seed=seed, command=command, lock=lock):
                    with lock:
                        for cv in cvs:
                            harvest(args, cv, seed, command)
                code = 0
                try:
                    sweep.main(call, on_run_end=copy_finished)  # each finished run is copied as it ends
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                copy_finished({})
                if code:
                    print(f'campaign stopped (sweep exit {code}); relaunch the same command to continue',
                          file=sys.stderr)
                    return code
    print('campaign: every cell committed' if not left else 'campaign: finished its steps')
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
