"""Training speed of baseline and LNL: the project's pipeline against its floor and the authors' style.

Three measurements per method, in one run on one machine, each extrapolated to one epoch of
Colored-MNIST (60,000 images at batch 128 = 469 iterations):

* ``ours``: the project's own loop, :meth:`trainer.Trainer.train_epoch` itself (random order,
  batches indexed from the in-memory tensors of :mod:`dataset.tensors`, ``method.update``, the
  running sums and the periodic finite check; the progress bar is off, as with ``--no_progress``);
* ``floor``: ``method.update`` alone on one fixed in-memory batch (same method class, same memory
  layout): what the step costs when the pipeline costs nothing;
* ``reference``: the authors' pipeline, written compactly in :mod:`benchmarks.reference_pipeline`: a
  ``Dataset`` that turns every uint8 image into a PIL image on every access (nearest-neighbour resize for
  the colour target, ``ToTensor`` and ``Normalize``), a ``DataLoader`` (batch 128, shuffled,
  ``--num_workers`` workers) and the authors' training step in the default (contiguous) memory layout,
  without autocast or ``torch.compile`` (the authors' code had neither). For the baseline that step is the
  project's own (the same operations). For LNL it is :class:`AuthorsLNLStep`, the same objective as
  the authors' ``_train_step`` computes it: step 1 also computes h's weight gradients (the authors
  discard them unused), step 2 runs the whole net, g included, and the entropy goes through
  softmax then log. Its updates equal the project's LNL to rounding (a test checks it); the
  difference in time is the work the project's LNL step leaves out.

``ours`` and ``floor`` are measured at every precision of ``--precisions``: fp32, and bf16 (bfloat16
autocast) too where the device computes it natively (a CPU with AMX or AVX512-BF16, a CUDA device with
bf16; the CPU features found are printed). The reference is the authors' fp32.

Measurements are interleaved: each round runs a block of every pipeline for every method (the order
rotating between rounds), so background load hits all of them alike; each number is the median over
rounds of the block's time per iteration. On CUDA the device is synchronised before every clock reading.
Not ``torch.utils.benchmark.Timer``: it times one statement repeated back to back (on one thread unless told), while a
block here is training iterations with their data loading, with untimed work inside (the reference's start-up batches),
interleaved across pipelines, and its median is what this reports already (over rounds).

The per-epoch numbers, the targets (printed as PASS/FAIL: each epoch within 1.15x of its floor; at
train.py's default precision, a speed-up over the reference of 4x / 3x with native bf16, 2.5x / 1.7x with
fp32) and the texts printed and written into the README are :mod:`benchmarks.speed_report`'s; the three timed
pipelines are :mod:`benchmarks.speed_pipelines`'s.
The exit status is 0 whatever the result, unless ``--check`` is given (then 1 on a miss).

Data: the real training set when ``--data_dir`` holds ``mnist_10color_jitter_var_0.020.npy``, else
synthetic Colored-MNIST-like images (random blocky strokes in one jittered class colour on black);
the output says which.

Usage::

    python benchmarks/speed.py --quick                  # a few minutes on a 2-core CPU; fp32 and bf16 where native
    python benchmarks/speed.py --device cuda --precisions bf16   # the GPU, bfloat16 autocast for ours/floor
    python benchmarks/speed.py --methods lnl --iters 100 --rounds 10 --json runs/speed.json
    python benchmarks/speed.py --quick --check          # exit 1 when a target is missed

The last line printed is one JSON object with every number (also written to ``--json``).
"""
import contextlib
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as ``python benchmarks/speed.py``: make the project importable
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import methods  # noqa: E402
from dataset import colored_mnist  # noqa: E402
from dataset.tensors import make_split  # noqa: E402
from option import get_option  # noqa: E402
from utils import (Parser, UserError, atomic_write_text, native_bf16, nonneg_int, positive_int,  # noqa: E402
                   replace_readme_section, resolve_device, resolve_precision, run_main, seed_everything,
                   without_options)
# The authors' pipeline, the three timed pipelines and the report, each in its own module; their names stay
# importable from here.
from benchmarks.reference_pipeline import (BATCH_SIZE, BIN_WIDTH, PREFETCH_FACTOR, AuthorsLNLStep,  # noqa: E402,F401
                                           AuthorsStyleDataset, reference_loader)
from benchmarks.speed_report import (ALL_METHOD_NAMES, EPOCH_IMAGES, EPOCH_ITERS, FLOOR_TARGET, METHOD_NAMES,  # noqa: E402,F401
                                     SHOWN_CPU_FLAGS, SPEEDUP_TARGETS, TRAIN_TIME_SECTION, device_name, display,
                                     duration, report, summarise, targets, train_time_text)
from benchmarks.speed_pipelines import STEADY_EPOCH, Floor, Ours, Reference, clock  # noqa: E402,F401

COLOR_VAR = 0.020
PRECISIONS = ('fp32', 'bf16')


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------

def synthetic_colored_mnist(n, seed=0):
    """(n,28,28,3) uint8 images and (n,) uint8 labels that look like Colored-MNIST to a pipeline:
    a blocky random stroke (about 20 % of the pixels) in the class's mean colour with the jitter of
    sigma^2 = 0.020, channels in 1..254, exactly black elsewhere."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    stroke = (rng.random((n, 7, 7)) > 0.8).repeat(4, axis=1).repeat(4, axis=2)
    jitter = rng.normal(0.0, 255.0 * math.sqrt(COLOR_VAR), size=(n, 3))
    colors = np.clip(np.rint(colored_mnist.MEAN_COLORS[labels] + jitter), 1, 254).astype(np.uint8)
    images = np.where(stroke[..., None], colors[:, None, None, :], np.uint8(0)).astype(np.uint8)
    return images, labels


def load_data(data_dir, synthetic=False, n_images=None):
    """Training images and labels, and a description: real when the data file is there."""
    path = colored_mnist.file_path(data_dir, COLOR_VAR)
    if not synthetic and os.path.isfile(path):
        data = colored_mnist.load(path, color_var=COLOR_VAR)
        images, labels = data['train_image'], data['train_label']
        if n_images:
            images, labels = images[:n_images], labels[:n_images]
        return images, labels, 'real', f'real Colored-MNIST ({path})'
    why = '--synthetic' if synthetic else f'no {path}'
    images, labels = synthetic_colored_mnist(n_images or EPOCH_IMAGES)
    return images, labels, 'synthetic', f'synthetic Colored-MNIST-like ({why})'


# --------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------

def build(name, device, args, reference=False, precision='fp32'):
    """A method object as train.py builds it; the reference one in the authors' settings (fp32)."""
    argv = ['-e', 'speed', '--method', name, '--device', str(device), '--no_progress',
            '--lr', str(methods.get(name).lr), '--batch_size', str(BATCH_SIZE)]
    if reference or not args.channels_last:
        argv.append('--no_channels_last')
    if not reference:
        argv += ['--precision', precision] + ['--compile'] * args.compile
    opt = get_option(argv)
    seed_everything(0)
    method = methods.build_method(opt, device)
    if reference:
        method.net.fast_f = False  # the authors' f: bn0 -> conv1 -> ReLU -> max-pool, unfolded
    if reference and name == 'lnl':
        method = AuthorsLNLStep(method)
    return opt, method


def kinds(precisions):
    return [f'{k}_{p}' for p in precisions for k in ('ours', 'floor')] + ['reference']


def measure(args, device, images, labels, log):
    """Per method and pipeline (``ours_<precision>``, ``floor_<precision>``, ``reference``), the list of
    seconds per iteration, one entry per round."""
    split = make_split(images, labels).to(device, channels_last=args.channels_last)
    queued = args.num_workers * PREFETCH_FACTOR
    loader = reference_loader(images, labels, args.num_workers)
    pipelines = kinds(args.precisions)
    runners = {}
    for name in args.methods:
        runners[name] = {}
        for p in args.precisions:
            opt, method = build(name, device, args, precision=p)
            runners[name][f'ours_{p}'] = Ours(opt, method, split, device)
            runners[name][f'floor_{p}'] = Floor(build(name, device, args, precision=p)[1], split, device)
        if name in METHOD_NAMES:  # the authors' pipeline exists for the paper's methods only
            runners[name]['reference'] = Reference(build(name, device, args, reference=True)[1], loader, device,
                                                   queued)
    for name in args.methods:
        for kind in pipelines:
            if kind in runners[name]:
                log(f'warm-up: {name} {kind} ({args.warmup} iterations)')
                runners[name][kind].run(args.warmup)
    times = {name: {kind: [] for kind in pipelines if kind in runners[name]} for name in args.methods}
    for r in range(args.rounds):
        log(f'round {r + 1}/{args.rounds}: {args.block} iterations per pipeline and method')
        order = pipelines[r % len(pipelines):] + pipelines[:r % len(pipelines)]
        for name in args.methods:
            for kind in order:
                if kind in runners[name]:
                    times[name][kind].append(runners[name][kind].run(args.block) / args.block)
    return times


def build_parser():
    p = Parser(description='Training speed of baseline and LNL: ours vs floor vs the '
                                            'authors\' pipeline')
    p.add_argument('--quick', action='store_true', help='fewer rounds and iterations (a couple of minutes on a CPU)')
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda when available)')
    p.add_argument('--iters', type=positive_int, default=None,
                   help='timed iterations per pipeline and method, over all rounds (default 120, --quick 60)')
    p.add_argument('--rounds', type=positive_int, default=None, help='interleaved rounds (default 20, --quick 10)')
    p.add_argument('--warmup', type=nonneg_int, default=None,
                   help='untimed iterations per pipeline and method first (default 5, --quick 3)')
    p.add_argument('--methods', nargs='+', choices=ALL_METHOD_NAMES, default=list(METHOD_NAMES),
                   help='methods to time; csad_base and csad (beyond the paper) have no authors\' reference pipeline '
                        'here: ours and floor only')
    p.add_argument('--precisions', nargs='+', choices=PRECISIONS, default=None,
                   help='precisions of ours and floor (default: fp32, and bf16 where the device computes it natively)')
    p.add_argument('--amp', action='store_true', help='the same as --precisions bf16')
    p.add_argument('--compile', action='store_true', help='torch.compile f and g for ours and floor')
    p.add_argument('--no_channels_last', dest='channels_last', action='store_false',
                   help='ours and floor in the default memory layout')
    p.add_argument('--threads', type=positive_int, default=None, help='CPU threads for PyTorch (default: PyTorch\'s)')
    p.add_argument('--num_workers', type=nonneg_int, default=4,
                   help="DataLoader workers of the reference (default 4, the authors' default)")
    p.add_argument('--data_dir', default=os.path.join(ROOT, 'data'),
                   help=f'folder holding {colored_mnist.file_name(COLOR_VAR)}')
    p.add_argument('--synthetic', action='store_true', help='synthetic data even when the real file is there')
    p.add_argument('--n_images', type=positive_int, default=None, help='use only this many training images')
    p.add_argument('--json', default=None, help='also write the JSON result to this file')
    p.add_argument('--readme', default=None, metavar='README',
                   help='also write the command and table between the <!-- speed:begin/end --> markers')
    p.add_argument('--section', default='speed',
                   help='with --readme: the README section to write (its <!-- NAME:begin/end --> markers)')
    p.add_argument('--train_time_readme', default=None, metavar='FILE',
                   help='with --readme: the file whose <!-- train_time:begin/end --> section gets what bash train.sh '
                        'costs at the measured epoch times (default: the --readme file)')
    p.add_argument('--train_time_section', default=TRAIN_TIME_SECTION, metavar='NAME',
                   help='the section of --train_time_readme that gets the train.sh costs (default %(default)s)')
    p.add_argument('--check', action='store_true', help='exit with status 1 when a target is missed')
    p.add_argument('--from_json', default=None, metavar='FILE',
                   help='measure nothing: print (and with --readme write) the report of a saved --json record, '
                        'e.g. one a GPU machine wrote')
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    defaults = (60, 10, 3) if args.quick else (120, 20, 5)
    args.iters = defaults[0] if args.iters is None else args.iters
    args.rounds = defaults[1] if args.rounds is None else args.rounds
    args.warmup = defaults[2] if args.warmup is None else args.warmup
    if args.n_images is not None and args.n_images < BATCH_SIZE:
        raise UserError(f'--n_images must be at least the batch size {BATCH_SIZE}')
    args.rounds = min(args.rounds, args.iters)
    args.block = args.iters // args.rounds
    args.methods = [m for m in ALL_METHOD_NAMES if m in args.methods]
    return args


def resolve_precisions(args, device):
    """The precisions to measure and train.py's default precision on ``device``."""
    if args.amp:
        args.precisions = ['bf16']
    if not args.precisions:
        args.precisions = ['fp32', 'bf16'] if native_bf16(device) else ['fp32']
    args.precisions = [p for p in PRECISIONS if p in args.precisions]
    args.default_precision = resolve_precision(get_option(['-e', 'speed']), device)
    return args


def write_readme(args, argv, text):
    """The command that measured (less its README options) and its report, into the README's ``--section``."""
    shown = without_options(argv if argv is not None else sys.argv[1:], ('--readme', '--train_time_readme'))
    cmd = 'python benchmarks/speed.py ' + ' '.join(shown)
    replace_readme_section(args.readme, args.section, f'```\n$ {cmd.strip()}\n{text}\n```')


def from_record(args, argv):
    """The report of a saved record (--from_json), printed and, with --readme, written with the command."""
    try:
        with open(args.from_json) as fh:
            res = json.loads(fh.read().strip().splitlines()[-1])
        if not isinstance(res, dict):
            raise ValueError(f'its last line holds a {type(res).__name__}, not a JSON object')
        data_desc = res.get('data_desc') or f"{res['data']} Colored-MNIST"
        text = report(res, data_desc)
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise UserError(f'--from_json {args.from_json}: not a record benchmarks/speed.py --json wrote ({e}); '
                        'give the file that run wrote') from None
    print(text)
    if args.readme:
        write_readme(args, argv, text)
        if args.train_time_readme:  # only where asked: the default file's costs are this machine's
            replace_readme_section(args.train_time_readme, args.train_time_section,
                                   train_time_text(res) + f' (the record: {args.from_json})')
    return res


def main(argv=None):
    args = parse_args(argv)
    if args.from_json:
        return from_record(args, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device or 'auto')
    resolve_precisions(args, device)

    def log(msg):
        print(f'[speed] {msg}', file=sys.stderr, flush=True)

    images, labels, data_kind, data_desc = load_data(args.data_dir, args.synthetic, args.n_images)
    args.n_images_used = len(labels)
    log(f'data: {data_desc}, {len(labels)} images; device {device}')
    times = measure(args, device, images, labels, log)
    res = summarise(times, args, device, data_kind)
    res['data_desc'] = data_desc
    print(report(res, data_desc))
    line = json.dumps(res)
    if args.json:
        atomic_write_text(args.json, line + '\n')
    if args.readme:
        write_readme(args, argv, report(res, data_desc))
        if res.get('baseline_epoch_s') is not None and res.get('lnl_epoch_s') is not None:
            with contextlib.suppress(UserError):  # a README without the section keeps only the table
                replace_readme_section(args.train_time_readme or args.readme, args.train_time_section,
                                       train_time_text(res))
    print(line, flush=True)
    if args.check and not all(t['pass'] for t in res['targets'].values() if t['pass'] is not None):
        sys.exit(1)
    return res


if __name__ == '__main__':
    run_main(main)
