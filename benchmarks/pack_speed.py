"""What packing runs together (train_pack.py, the sweep's --pack) saves: the time of one update of K runs packed as
one network against K updates of one run, per method and K, on one device.

    python benchmarks/pack_speed.py --device cuda --k 1 4 16 28 --json docs/results/gpu_check/pack_speed.json

Each method's update (its own code, ``methods.Method.update``) runs on random batches of the data's shapes (batch
128, 3x28x28 images, 3x14x14 colour-bin maps with background, labels) held on the device, as the training loop holds
them: ``--iters`` timed updates after ``--warmup``, the median of ``--rounds`` rounds. Reported per K: seconds per
update of the pack, the epoch of one run it amounts to (469 updates / K), and the speed-up over K runs one after the
other (K x the one-run update time). Run it alone on the machine.
"""
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as ``python benchmarks/pack_speed.py``
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

import methods  # noqa: E402
from option import get_option  # noqa: E402
from utils import (Parser, atomic_write_text, format_table, positive_int, replace_readme_section, resolve_device,  # noqa: E402
                   run_main, without_options)

BATCH, EPOCH_ITERS = 128, 469


def build_parser():
    p = Parser(description='Time one update of K runs packed as one network against K updates of one run.')
    p.add_argument('--device', default='auto', help='cpu, cuda or auto')
    p.add_argument('--methods', nargs='+', default=['baseline', 'lnl'], choices=methods.method_names())
    p.add_argument('--k', type=positive_int, nargs='+', default=[1, 2, 4], help='pack sizes (1: one run alone)')
    p.add_argument('--precision', choices=('fp32', 'bf16', 'auto'), default='auto',
                   help="train.py's --precision (default: its default on this device)")
    p.add_argument('--iters', type=positive_int, default=20, help='timed updates per round')
    p.add_argument('--rounds', type=positive_int, default=5)
    p.add_argument('--warmup', type=positive_int, default=5)
    p.add_argument('--threads', type=positive_int, default=None, help='CPU threads for PyTorch')
    p.add_argument('--json', default=None, help='also write the result to this file')
    p.add_argument('--readme', default=None, help='also write the command and table into this file\'s section')
    p.add_argument('--section', default='pack_speed', help='with --readme: the <!-- NAME:begin/end --> section')
    return p


def batch(k, device, gen, channels_last):
    """K runs' batches side by side (k = 1: one run's), random, of the data's shapes."""
    images = torch.randn(BATCH, 3 * k, 28, 28, generator=gen).to(device)
    colors = torch.randint(0, 8, (BATCH, 3 * k, 14, 14), generator=gen)
    colors[:, :, :, :4] = 255  # background, ignored by the colour losses
    labels = torch.randint(0, 10, (BATCH, k) if k > 1 else (BATCH,), generator=gen)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, colors.to(device), labels.to(device)


def time_updates(method, k, device, args):
    opt = get_option(['-e', 'pack_speed', '--method', method, '--precision', args.precision, '--device', device.type])
    m = methods.build_method(opt, device, members=k)
    m.train(True)
    data = batch(k, device, torch.Generator().manual_seed(0), opt.channels_last)

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
    for _ in range(args.warmup):
        m.update(*data)
    rounds = []
    for _ in range(args.rounds):
        sync()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            m.update(*data)
        sync()
        rounds.append((time.perf_counter() - t0) / args.iters)
    return statistics.median(rounds), opt.precision


def report(res):
    rows = []
    for r in res['rows']:
        rows.append([r['method'], str(r['k']), f"{r['update_s'] * 1e3:.2f}", f"{r['run_epoch_s']:.2f}",
                     f"{r['speedup']:.2f}x"])
    head = (f"packed updates: {res['device_name']} ({res['device']}), torch {res['torch']}, precision "
            f"{res['precision']}, batch {BATCH} per run; median of {res['rounds']} rounds of {res['iters']} updates\n"
            f"one run's epoch = {EPOCH_ITERS} updates; speed-up: K runs one after the other / the pack of K\n\n")
    return head + format_table(['method', 'K', 'ms/update (pack)', 's/epoch per run', 'speed-up'], rows)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ks = sorted(set(args.k) | {1})
    rows, precision = [], None
    for method in args.methods:
        if not methods.get(method).packable:
            continue
        alone = None
        for k in ks:
            t, precision = time_updates(method, k, device, args)
            alone = t if k == 1 else alone
            rows.append({'method': method, 'k': k, 'update_s': t, 'run_epoch_s': t * EPOCH_ITERS / k,
                         'speedup': k * alone / t})
            print(f'[pack_speed] {method} K={k}: {t * 1e3:.2f} ms/update', file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'
    res = {'device': device.type, 'device_name': name, 'torch': torch.__version__, 'precision': precision,
           'threads': torch.get_num_threads(), 'iters': args.iters, 'rounds': args.rounds, 'rows': rows}
    text = report(res)
    print(text)
    if args.json:
        atomic_write_text(args.json, json.dumps(res) + '\n')
    if args.readme:
        shown = without_options(argv if argv is not None else sys.argv[1:], ('--readme',))
        replace_readme_section(args.readme, args.section,
                               f"```\n$ python benchmarks/pack_speed.py {' '.join(shown)}\n{text}\n```")
    return res


if __name__ == '__main__':
    run_main(main)
