"""Run records: the paper's numbers, reading run folders (``options.json`` + ``results.jsonl``) and
aggregating them over seeds. Which methods exist, in which order, and which are probed come from the
method registry (``methods/registry.py``)."""
import json
import os
import re
import sys

import numpy as np

import methods
import run_folder
from utils import UserError

# Fig. 4 of Kim et al. (CVPR 2019): unbiased test accuracy per sigma^2 (reference/paper_fig4.csv).
# Kept here so that the pipeline runs without the reference folder.
PAPER_FIG4 = {
    'baseline': {'0.020': 0.4055, '0.025': 0.4813, '0.030': 0.5996, '0.035': 0.6626,
                 '0.040': 0.7333, '0.045': 0.7973, '0.050': 0.8450},
    'blindeye': {'0.020': 0.6741, '0.025': 0.7123, '0.030': 0.7883, '0.035': 0.8203,
                 '0.040': 0.8638, '0.045': 0.8927, '0.050': 0.9159},
    'gray': {'0.020': 0.8374, '0.025': 0.8751, '0.030': 0.8996, '0.035': 0.9166,
             '0.040': 0.9325, '0.045': 0.9472, '0.050': 0.9596},
    'lnl': {'0.020': 0.8185, '0.025': 0.8854, '0.030': 0.9137, '0.035': 0.9306,
            '0.040': 0.9406, '0.045': 0.9555, '0.050': 0.9618},
}

NUMERIC = ('test_acc', 'monitor_test_acc', 'aligned_acc', 'conflicting_acc', 'probe_color_acc', 'color_acc',
           'color_var')


def precision_of(options):
    """The precision a run trained in, from its options (runs from before --precision recorded ``amp``)."""
    return options.get('precision') or ('bf16' if options.get('amp') else 'fp32')


def published(method, color_var):
    """``(accuracy, who)`` a method beyond the paper's Fig. 4 is reported at by its own authors (its card's
    ``published``), or None."""
    card = getattr(methods.METHODS.get(method), 'card', None)
    value = (card.published if card else {}).get(var_key(color_var))
    return None if value is None or method in PAPER_FIG4 else (value, card.published_by)


def method_order():
    """The registered methods, in the order of the tables."""
    return methods.method_names()


def probed_methods():
    return [m for m in method_order() if methods.METHODS[m].probed]


def var_key(color_var):
    """sigma^2 as the '%.3f' string used for grouping: 0.02 and 0.020 are the same variance."""
    return f'{float(color_var):.3f}'


def check_numbers(records, path):
    """``UserError`` naming the file when a record holds a non-number where a number belongs."""
    for rec in records:
        for key in NUMERIC:
            value = rec.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f'{path}: a record has {key} = {value!r}, not a number; '
                                'fix or delete that line (each line is one JSON record)')


def read_options(path):
    try:
        with open(path, encoding='utf-8') as fh:
            opts = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return opts if isinstance(opts, dict) else {}


def current_test(records, color_var=None, tag='test', gray_view=None):
    """``(test, stale)`` of one run's records: ``test`` is the last evaluation (``test_acc``) with this
    ``tag`` of the run's last trained epoch (on ``color_var`` when given), or None; ``stale`` is the last
    such evaluation of an earlier epoch when there is no current one (a run trained further after test.py),
    else None. A probe result of the same checkpoint recorded earlier is carried over when the chosen
    record has none (``test.py --probe`` followed by a plain ``test.py``)."""
    last_epoch = max((r['epoch'] for r in records if 'test_acc' not in r and isinstance(r.get('epoch'), int)),
                     default=0)
    tests = [r for r in records if 'test_acc' in r and r.get('tag', 'test') == tag
             and (color_var is None or r.get('color_var') is None or var_key(r['color_var']) == var_key(color_var))
             and (gray_view is None or not r.get('gray_input') or (r.get('gray_view') or 'luminance') == gray_view)]
    fresh = [r for r in tests if not isinstance(r.get('epoch'), int) or r['epoch'] >= last_epoch]
    if not fresh:
        return None, (tests[-1] if tests else None)
    test = fresh[-1]
    if test.get('probe_color_acc') is None:
        probed = [r for r in fresh if r.get('probe_color_acc') is not None and r.get('epoch') == test.get('epoch')]
        if probed:
            test = dict(test, probe_color_acc=probed[-1]['probe_color_acc'])
    return test, None


def gray_view_of_tag(tag):
    """The grey view a tag stands for: test -> the default view, test_<view> -> that view."""
    from dataset.tensors import DEFAULT_GRAY_VIEW, GRAY_VIEWS
    view = tag[len('test_'):] if tag.startswith('test_') else None
    return view if view in GRAY_VIEWS else DEFAULT_GRAY_VIEW


def load_runs(root, tag='test', gray_view=None):
    """One dict per run folder under ``root``, sorted by folder.

    Keys: ``name`` (folder relative to root), ``path``, ``method`` (lower case), ``color_var`` ('%.3f'
    string, or None when neither options.json nor a record gives it), ``seed``, ``test`` (the current
    evaluation, see :func:`current_test`, or None), ``stale_test`` (an evaluation of an earlier epoch when
    there is no current one), ``epochs`` ({epoch: record} of the per-epoch records; a
    resumed run that repeated an epoch keeps the later record), ``dry_run`` and ``options`` (options.json).
    """
    root = os.fspath(root)
    if not os.path.exists(root):
        raise UserError(f'{root} does not exist: give the output folder of the sweep or a folder of runs')
    if not os.path.isdir(root):
        raise UserError(f'{root} is not a folder: give the output folder of the sweep or a folder of runs')
    runs = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if run_folder.RESULTS not in files or run_folder.OPTIONS not in files:
            continue
        opts = run_folder.read_options(folder)
        records = run_folder.read_results(folder)
        check_numbers(records, run_folder.file(folder, run_folder.RESULTS))
        damaged = [(k, opts[k]) for k, kinds in (('method', str), ('color_var', (int, float)))
                   if opts.get(k) is not None and (not isinstance(opts[k], kinds) or isinstance(opts[k], bool))]
        for key, value in damaged:
            print(f'warning: {run_folder.file(folder, run_folder.OPTIONS)}: {key} is {value!r}, not a '
                  f'{"name" if key == "method" else "number"}; the run is not counted (fix the field)', file=sys.stderr)
        if damaged:
            opts = dict(opts, method=None, color_var=None)
        cls = methods.METHODS.get(str(opts.get('method')))
        view = (gray_view or gray_view_of_tag(tag)) if cls is not None and cls.gray else None
        test, stale = current_test(records, opts.get('color_var'), tag, view)
        other_view = None
        if test is None and stale is None and view is not None:
            other = current_test(records, opts.get('color_var'), tag)[0]
            if other is not None:
                other_view = (other.get('gray_view') or 'luminance', view)
        epochs = {}
        for r in records:
            if 'test_acc' not in r and isinstance(r.get('epoch'), int):
                epochs[r['epoch']] = r
        fallback = test or (records[-1] if records else {})
        method = opts.get('method') or fallback.get('method')
        color_var = opts.get('color_var', fallback.get('color_var'))
        if damaged:
            method = color_var = None
        elif not isinstance(method, (str, type(None))) or isinstance(color_var, bool) or \
                not isinstance(color_var, (int, float, type(None))):
            print(f'warning: {run_folder.file(folder, run_folder.RESULTS)}: its records hold method {method!r} and '
                  f'color_var {color_var!r}, not a name and a number; the run is not counted', file=sys.stderr)
            method = color_var = None
        if not isinstance(opts.get('random_seed'), (int, type(None))):
            opts = dict(opts, random_seed=str(opts['random_seed']))
        runs.append({
            'name': os.path.relpath(folder, root).replace(os.sep, '/'),
            'path': folder,
            'method': str(method).lower() if method else None,
            'color_var': var_key(color_var) if color_var is not None else None,
            'seed': opts.get('random_seed'),
            'test': test,
            'stale_test': stale,
            'other_view': other_view,
            'epochs': epochs,
            'dry_run': bool(opts.get('dry_run') or (test or {}).get('dry_run')
                            or any(r.get('dry_run') for r in epochs.values())),
            'options': opts,
        })
    if not runs:
        raise UserError(f'no runs under {root} (looked for folders holding results.jsonl and options.json)')
    runs.sort(key=lambda r: r['name'])
    for run in runs:
        run['start_epoch'] = start_epoch(run, runs)
    return runs


def trained_epochs(run):
    """The epochs a run trained: those of its evaluated checkpoint, else its last per-epoch record; None when
    neither says."""
    epoch = (run.get('test') or {}).get('epoch')
    if isinstance(epoch, int) and not isinstance(epoch, bool):
        return epoch
    return max(run['epochs'], default=None)


def start_epoch(run, runs, seen=()):
    """The epochs of training behind a run's first epoch: 0 from scratch; for a run started from another run's
    checkpoint (``--use_pretrain``), that checkpoint's epoch (its ``checkpoint_epoch_EEEE.pth`` name, else the
    base run's trained epochs, the base found by its folder name among ``runs``) plus the base's own start;
    None when the start cannot be told (a file from elsewhere, e.g. pretrained/)."""
    opts = run['options']
    if not opts.get('use_pretrain'):
        return 0
    ckpt = opts.get('checkpoint')
    if not isinstance(ckpt, str):
        return None
    folder = os.path.basename(os.path.dirname(ckpt.replace('\\', '/')))
    base = next((r for r in runs if os.path.basename(r['path']) == folder and r is not run
                 and r['path'] not in seen), None)
    match = re.fullmatch(r'checkpoint_epoch_(\d+)\.pth', os.path.basename(ckpt))
    epochs = int(match.group(1)) if match else (trained_epochs(base) if base is not None else None)
    if epochs is None:
        return None
    before = start_epoch(base, runs, seen + (run['path'],)) if base is not None else 0
    return None if before is None else before + epochs


def seed_order(run):
    seed = run['seed']
    return (seed is None, seed if isinstance(seed, (int, float)) else str(seed), run['name'])


def mean_of(tests, key):
    values = [float(t[key]) for t in tests if t.get(key) is not None]
    return (float(np.mean(values)) if values else None), len(values)


def aggregate(runs):
    """Group the complete runs by method and sigma^2.

    Returns ``{'methods': [...], 'color_vars': [...], 'cells': {(method, color_var): cell},
    'incomplete': [names], 'unknown': [names]}``; a cell has ``n``, ``seeds``, ``values``, ``mean``,
    ``std`` (ddof=1; None for one seed), ``paper``, ``aligned_mean``, ``conflicting_mean``,
    ``probe_color_acc``/``probe_n`` and ``color_acc``/``color_n`` (None when no seed has them).
    """
    groups = {}
    incomplete, unknown = [], []
    for run in runs:
        if run['method'] is None or run['color_var'] is None:
            unknown.append(run['name'])
        elif run['test'] is None:
            incomplete.append(run['name'])
        else:
            groups.setdefault((run['method'], run['color_var']), []).append(run)
    order = method_order()
    extra = sorted({m for m, _ in groups} - set(order))
    cells = {}
    for key, group in groups.items():
        group.sort(key=seed_order)
        tests = [r['test'] for r in group]
        values = [float(t['test_acc']) for t in tests]
        n = len(values)
        probe, probe_n = mean_of(tests, 'probe_color_acc')
        color, color_n = mean_of(tests, 'color_acc')
        cells[key] = {
            'n': n,
            'seeds': [r['seed'] for r in group],
            'names': [r['name'] for r in group],
            'values': values,
            'mean': float(np.mean(values)),
            'std': float(np.std(values, ddof=1)) if n > 1 else None,
            'paper': PAPER_FIG4.get(key[0], {}).get(key[1]),
            'published': published(*key),
            'aligned_mean': mean_of(tests, 'aligned_acc')[0],
            'conflicting_mean': mean_of(tests, 'conflicting_acc')[0],
            'probe_color_acc': probe, 'probe_n': probe_n,
            'color_acc': color, 'color_n': color_n,
            'epochs': [trained_epochs(r) for r in group],
            'recipe_epochs': recipe_epochs(key[0]),
        }
    return {'methods': order + extra,
            'color_vars': sorted({cv for _, cv in groups}, key=float),
            'cells': cells, 'incomplete': incomplete, 'unknown': unknown}


def recipe_epochs(method):
    """The epochs of a run of ``method`` in its recipe (train.py's default ``--max_step`` for it: the paper's 100
    for its four methods)."""
    from option import method_default
    return method_default(method, 'max_step')


def short_epochs(cell):
    """``(fewest, most)`` epochs of a cell's runs when a run trained fewer than its method's recipe, else None."""
    known = [e for e in cell.get('epochs', ()) if e is not None]
    if not known or min(known) >= cell['recipe_epochs']:
        return None
    return min(known), max(known)


def duplicate_seeds(agg):
    """(method, sigma^2, seed) counted more than once, e.g. a copy of a sweep nested in DIR."""
    dups = []
    for (method, cv), cell in sorted(agg['cells'].items()):
        seen = set()
        for seed in cell['seeds']:
            if seed is not None and seed in seen:
                dups.append((method, cv, seed))
            seen.add(seed)
    return dups


def shortfalls(agg, points=0.03):
    """Cells whose mean is more than ``points`` below the paper's number: (method, sigma^2, mean, paper)."""
    out = []
    for m in agg['methods']:
        for cv in agg['color_vars']:
            cell = agg['cells'].get((m, cv))
            if cell and cell['paper'] is not None and cell['mean'] < cell['paper'] - points:
                out.append((m, cv, cell['mean'], cell['paper']))
    return out


def monitored(run):
    """[(epoch, monitored test accuracy)] of a run, by epoch."""
    return sorted((e, float(r['monitor_test_acc'])) for e, r in run['epochs'].items()
                  if r.get('monitor_test_acc') is not None)


def run_order(run):
    order = {m: i for i, m in enumerate(method_order())}
    return (order.get(run['method'], len(order)), run['method'] or '', seed_order(run))


def first_within(points, tol=0.01):
    """The first monitored epoch from which the accuracy stays within ``tol`` of the run's last one (above or
    below) to the end: how many epochs the run needed to settle where it ended. A curve that peaks and falls
    back (BlindEye) settles only once it has come down."""
    final = points[-1][1]
    settled = points[-1][0]
    for e, acc in reversed(points):
        if abs(acc - final) > tol:
            break
        settled = e
    return settled


def last_epoch_gains(runs, tol=0.01):
    """Per run with at least two monitored epochs: (name, last epoch, its accuracy, change over the
    last epoch, (highest accuracy, its first epoch), first epoch within ``tol`` of the last accuracy), in
    method and sigma^2 order; shows whether the curves have flattened, how early, and whether a curve
    ended below its peak."""
    out = []
    for run in runs:
        pts = monitored(run)
        if len(pts) >= 2 and run['method'] is not None and run['color_var'] is not None:
            rank, method, seeds = run_order(run)
            out.append(((rank, float(run['color_var']), method, seeds),
                        run['name'], pts[-1][0], pts[-1][1], pts[-1][1] - pts[-2][1],
                        max(pts, key=lambda p: (p[1], -p[0]))[::-1], first_within(pts, tol)))
    out.sort(key=lambda o: o[0])
    return [o[1:] for o in out]


def epoch_seconds(record):
    """The machine's seconds per run of an epoch record (its ``epoch_time_s``; an epoch trained in a pack of K runs,
    its record's ``pack``, counts its pack's time over K); None when it records no time."""
    spent = record.get('epoch_time_s')
    if not isinstance(spent, (int, float)) or isinstance(spent, bool):
        return None
    return float(spent) / max(int(record.get('pack', 1) or 1), 1)


def training_time(runs):
    """Per method, in the table's order: (method, training epochs, mean seconds per epoch, total seconds,
    runs), from the ``epoch_time_s`` the runs recorded (the training steps of an epoch; the per-epoch test
    monitor and the evaluation are not in it). An epoch trained in a pack of K runs (its record's ``pack``) counts
    its pack's time over K: the machine's time per run. Methods without a recorded time are left out."""
    times, counts = {}, {}
    for r in runs:
        if r['method']:
            spent = [t for t in map(epoch_seconds, r['epochs'].values()) if t is not None]
            times.setdefault(r['method'], []).extend(spent)
            counts[r['method']] = counts.get(r['method'], 0) + bool(spent)
    order = {m: i for i, m in enumerate(method_order())}
    return [(m, len(t), sum(t) / len(t), sum(t), counts[m])
            for m, t in sorted(times.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])) if t]


def curves(runs):
    """{sigma^2: [(method, [(epoch, acc), ...], start), ...]} of the runs that monitored their test accuracy,
    in method then seed order (the input of :func:`figures.plot_curves`); ``start`` is :func:`start_epoch` (the
    epochs behind the run's first one; None when unknown)."""
    series = {}
    for run in sorted(runs, key=run_order):
        if run['method'] is None or run['color_var'] is None:
            continue
        points = monitored(run)
        if points:
            series.setdefault(run['color_var'], []).append((run['method'], points, run.get('start_epoch', 0)))
    return series


def confusion_runs(runs, color_var):
    """{method: run} of the first seed of Baseline and LNL at ``color_var`` that has a confusion matrix."""
    cv = var_key(color_var)
    chosen = {}
    for m in ('baseline', 'lnl'):
        found = sorted((r for r in runs if r['method'] == m and r['color_var'] == cv
                        and r['test'] is not None and r['test'].get('confusion') is not None), key=seed_order)
        if found:
            chosen[m] = found[0]
    return chosen
