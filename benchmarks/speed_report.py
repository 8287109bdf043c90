"""What the speed benchmark's measurements say: per-epoch numbers, the targets, and the texts it prints and
writes.

:func:`summarise` turns the seconds per iteration of every round (:func:`benchmarks.speed.measure`) into
one JSON-able dict: the median over rounds extrapolated to one epoch of Colored-MNIST (60,000 images at
batch 128 = 469 iterations), the ratios, the device and the settings. :func:`report` is the table printed
(and written into docs/speed.md with ``--readme``); :func:`train_time_text` is what ``bash train.sh`` costs at
those epoch times (the README's Quick start, section ``train_time``). The README sections themselves are
written by :func:`utils.readme.replace_readme_section`.

Targets (checked with ``python benchmarks/speed.py --quick``; printed as PASS/FAIL; :func:`targets`):

* baseline and LNL epochs each within 1.15x of their floor, at every precision measured
  (``*_vs_floor_<precision> <= 1.15``);
* at the precision train.py uses by default on this device (``default_precision``): with bf16 on a
  device that computes it natively, baseline at least 4x and LNL at least 3x faster than the reference;
  with fp32, at least 2.5x and 1.7x (``*_speedup_vs_reference``).
"""
import math
import os
import platform
import statistics

import torch

import methods
from benchmarks.reference_pipeline import BATCH_SIZE
from utils import cpu_features, format_table, native_bf16

EPOCH_IMAGES = 60000
EPOCH_ITERS = math.ceil(EPOCH_IMAGES / BATCH_SIZE)  # 469
METHOD_NAMES = ('baseline', 'lnl')  # the paper's methods timed against the authors' pipeline
ALL_METHOD_NAMES = METHOD_NAMES + ('csad_base', 'csad')  # beyond the paper: ours and floor only

FLOOR_TARGET = 1.15
# Speed-up over the reference at train.py's default precision: (baseline, LNL), with bf16 where the device
# computes it natively, and with fp32.
SPEEDUP_TARGETS = {'bf16': (4.0, 3.0), 'fp32': (2.5, 1.7)}

# CPU flags that decide the arithmetic: shown in the report
SHOWN_CPU_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile', 'amx_int8', 'avx512_fp16')

TRAIN_TIME_SECTION = 'train_time'


def device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    model = None
    try:
        with open('/proc/cpuinfo') as fh:
            for line in fh:
                if line.lower().startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return f'{model or platform.processor() or "unknown CPU"} ({os.cpu_count()} cores)'


def targets(out, precisions, default):
    """{key: {'value', 'op', 'threshold', 'desc', 'pass'}}: ours within FLOOR_TARGET of its floor at every
    precision measured; the speed-up over the reference at the default precision."""
    found = {}

    def add(key, op, threshold, desc):
        value = out.get(key)
        found[key] = {'value': value, 'op': op, 'threshold': threshold, 'desc': desc,
                      'pass': None if value is None else (value <= threshold if op == '<=' else value >= threshold)}
    for p in precisions:
        for name in METHOD_NAMES + tuple(m for m in ALL_METHOD_NAMES if out.get(f'{m}_epoch_s_{p}') is not None
                                         and m not in METHOD_NAMES):
            add(f'{name}_vs_floor_{p}', '<=', FLOOR_TARGET,
                f'{display(name)} epoch within {FLOOR_TARGET}x of its floor, {p}')
    for name, threshold in zip(METHOD_NAMES, SPEEDUP_TARGETS[default]):
        add(f'{name}_speedup_vs_reference', '>=', threshold,
            f'{display(name)} >= {threshold}x faster than the reference ({default})')
    return found


def display(name):
    return methods.display_name(name)


def summarise(times, args, device, data_kind):
    epoch = {name: {kind: statistics.median(v) * EPOCH_ITERS for kind, v in per.items()}
             for name, per in times.items()}
    default = args.default_precision
    headline = default if default in args.precisions else args.precisions[0]
    out = {}
    for name in ALL_METHOD_NAMES:
        e = epoch.get(name)
        if e is None and name not in METHOD_NAMES:
            continue
        ref = e and e.get('reference')
        if name in METHOD_NAMES:
            out[f'reference_{name}_epoch_s'] = ref
        for p in args.precisions:
            out[f'{name}_epoch_s_{p}'] = e and e[f'ours_{p}']
            out[f'floor_{name}_epoch_s_{p}'] = e and e[f'floor_{p}']
            out[f'{name}_vs_floor_{p}'] = e and e[f'ours_{p}'] / e[f'floor_{p}']
            if name in METHOD_NAMES:
                out[f'{name}_speedup_vs_reference_{p}'] = e and ref / e[f'ours_{p}']
        for key in ('{}_epoch_s', 'floor_{}_epoch_s', '{}_vs_floor') + (('{}_speedup_vs_reference',)
                                                                       if name in METHOD_NAMES else ()):
            out[key.format(name)] = out[key.format(name) + f'_{headline}']
    out = {k: (round(v, 4) if v is not None else None) for k, v in out.items()}
    out.update({
        'device': device_name(device), 'device_type': device.type, 'torch': torch.__version__,
        'threads': torch.get_num_threads(), 'channels_last': args.channels_last,
        'precisions': list(args.precisions), 'default_precision': default, 'precision': headline,
        'amp': headline == 'bf16', 'native_bf16': native_bf16(device),
        'cpu_features': sorted(f for f in cpu_features() if f in SHOWN_CPU_FLAGS) if device.type == 'cpu' else [],
        'compile': args.compile, 'iters': args.block * args.rounds, 'rounds': args.rounds,
        'warmup': args.warmup, 'num_workers': args.num_workers, 'data': data_kind,
        'n_images': args.n_images_used, 'epoch_iters': EPOCH_ITERS,
        'spread_epoch_s': {name: {kind: [round(min(v) * EPOCH_ITERS, 4), round(max(v) * EPOCH_ITERS, 4)]
                                  for kind, v in per.items()} for name, per in times.items()},
    })
    # the speed-up targets of the headline precision (bf16's only where the device computes it natively)
    out['targets'] = targets(out, args.precisions, headline if headline == 'fp32' or out['native_bf16'] else 'fp32')
    return out


def report(res, data_desc):
    features = ', '.join(res['cpu_features']) or 'none of ' + ', '.join(SHOWN_CPU_FLAGS)
    lines = [
        f'Colored-MNIST training speed, one epoch = {EPOCH_IMAGES} images at batch {BATCH_SIZE} '
        f'({EPOCH_ITERS} iterations)',
        f'device: {res["device_type"]} - {res["device"]}; torch {res["torch"]}, {res["threads"]} threads',
    ]
    if res['device_type'] == 'cpu':
        lines.append(f'CPU features: {features}; native bf16: {"yes" if res["native_bf16"] else "no"}')
    lines += [
        f'precision: train.py\'s default here is {res["default_precision"]} (--precision); measured: '
        f'{", ".join(res["precisions"])}',
        f'ours/floor: channels_last {res["channels_last"]}, compile {res["compile"]}; '
        f'reference: the authors\' data pipeline and training step, contiguous, fp32, eager, '
        f'{res["num_workers"]} loader workers',
        f'data: {data_desc}, {res["n_images"]} images',
        f'{res["rounds"]} rounds x {res["iters"] // res["rounds"]} iterations per pipeline and method '
        f'(medians over rounds), warm-up {res["warmup"]}',
        '',
    ]
    rows = []
    for name in ALL_METHOD_NAMES:
        if res.get(f'{name}_epoch_s') is None:
            continue
        ref = res.get(f'reference_{name}_epoch_s')
        for p in res['precisions']:
            rows.append((name, p, f'{res[f"{name}_epoch_s_{p}"]:.2f}', f'{res[f"floor_{name}_epoch_s_{p}"]:.2f}',
                         f'{res[f"{name}_vs_floor_{p}"]:.3f}x', '—' if ref is None else f'{ref:.2f}',
                         '—' if ref is None else f'{res[f"{name}_speedup_vs_reference_{p}"]:.3f}x'))
    lines.append(format_table(['method', 'precision', 'ours s/epoch', 'floor s/epoch', 'ours/floor',
                               'reference s/epoch (fp32)', 'reference/ours'], rows, align='llrrrrr'))
    lines += ['', 'spread over rounds, s/epoch (min-max):']
    for name, per in res['spread_epoch_s'].items():
        lines.append(f'  {name:<9} ' + '   '.join(f'{kind} {lo:.2f}-{hi:.2f}' for kind, (lo, hi) in per.items()))
    lines += ['', 'targets (set for --quick):']
    for key, t in res['targets'].items():
        verdict = 'n/a ' if t['pass'] is None else ('PASS' if t['pass'] else 'FAIL')
        value = 'not measured' if t['value'] is None else f'{key} = {t["value"]:.3f}'
        lines.append(f'  {verdict}  {t["desc"]} ({value}, needs {t["op"]} {t["threshold"]})')
    return '\n'.join(lines)


def duration(seconds):
    return f'{seconds / 3600:.1f} h' if seconds >= 90 * 60 else f'{seconds / 60:.0f} min'


def train_time_text(res):
    """What ``bash train.sh`` (100 baseline + 100 LNL epochs) and a 10-epoch run cost at the measured
    per-epoch times, for each measured precision (the README's Quick start)."""
    parts = []
    for prec in res['precisions']:
        per_epoch = res[f'baseline_epoch_s_{prec}'] + res[f'lnl_epoch_s_{prec}']
        parts.append(f'{prec}: `bash train.sh` about {duration(100 * per_epoch)}, `--max_step 10` about '
                     f'{duration(10 * per_epoch)}')
    return (f'At the epoch times of the speed benchmark in docs/speed.md ({res["device"]}, {res["threads"]} threads; '
            'training steps only, the per-epoch test monitor and the evaluation add a few minutes): ' + '; '.join(parts) +
            f'. train.py\'s default precision here: {res["default_precision"]}.')
