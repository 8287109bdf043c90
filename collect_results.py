"""Turn a folder of finished runs into the paper's Fig. 4: a table and a plot of unbiased test accuracy.

    python collect_results.py sweeps/fig4 [--out_prefix PATH] [--title TEXT] [--no_plot] [--confusion 0.020]

Every ``results.jsonl`` under DIR whose folder also holds ``options.json`` is one run (the layout written
by train.py and sweep.py). A run's result is the last evaluation record of test.py in its
``results.jsonl`` (the one with ``test_acc``); a run without one is reported as incomplete and left out.
A trailing partial line (a run killed while writing) is skipped.

Printed and written to ``<prefix>.md`` (default prefix ``DIR/fig4``):

* the Fig. 4 table: one row per method (Baseline, BlindEye, Gray, LNL), one column per sigma^2 found,
  each cell ``mean ± std (n)`` of the test accuracy over seeds (sample std, ddof=1; a single seed shows
  the mean alone) and the paper's number beside it;
* the colour information left in the features (``probe_color_acc``, the bias-leakage probe of test.py
  ``--probe``) and h's own colour accuracy (``color_acc``) for Baseline and LNL, mean over seeds;
* the colour-aligned / colour-conflicting test accuracy, mean over seeds.

Also written: ``<prefix>.csv`` (one row per method and sigma^2 with runs), ``<prefix>.png`` (accuracy
against sigma^2 with the paper's curves dashed), ``<prefix>_curves.png`` (the per-epoch monitored test
accuracy, when the runs recorded it) and, with ``--confusion SIGMA2``, ``<prefix>_confusion.png``: the
ten mean colours and the row-normalised confusion matrices of Baseline and LNL at that sigma^2 (first
seed), like the paper's confusion figure. ``--no_plot`` skips the first two plots; an explicitly
requested confusion figure is still drawn.
"""
import csv
import io
import json
import os
import shlex
import sys

import numpy as np

from plots import draw_confusion
from utils import Parser, UserError, atomic_path, replace_readme_section, run_main

METHODS = ('baseline', 'blindeye', 'gray', 'lnl')
DISPLAY = {'baseline': 'Baseline', 'blindeye': 'BlindEye', 'gray': 'Gray', 'lnl': 'LNL'}
COLORS = {'baseline': 'tab:blue', 'blindeye': 'tab:orange', 'gray': 'tab:green', 'lnl': 'tab:red'}
PROBED = ('baseline', 'lnl')
DASH = '—'

# Fig. 4 of Kim et al. (CVPR 2019): unbiased test accuracy per sigma^2 (reference/paper_fig4.csv).
# Kept here so that the script runs without the reference folder.
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

CSV_COLUMNS = ('method', 'color_var', 'n', 'mean', 'std', 'paper', 'conflicting_mean', 'aligned_mean',
               'probe_color_acc', 'color_acc')


def var_key(color_var):
    """sigma^2 as the '%.3f' string used for grouping: 0.02 and 0.020 are the same variance."""
    return f'{float(color_var):.3f}'


def write_text(path, text):
    # The tables hold '±' and '—': UTF-8 whatever the locale, so the files read the same everywhere.
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8', newline='\n') as fh:
            fh.write(text)
    return path


def display_name(method):
    return DISPLAY.get(method, method)


def read_records(path):
    """The JSON objects of a results.jsonl; lines that do not parse (a truncated last line) are skipped."""
    records = []
    with open(path, encoding='utf-8', errors='replace') as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records


NUMERIC = ('test_acc', 'monitor_test_acc', 'aligned_acc', 'conflicting_acc', 'probe_color_acc', 'color_acc')


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


def load_runs(root):
    """One dict per run folder under ``root``, sorted by folder.

    Keys: ``name`` (folder relative to root), ``path``, ``method`` (lower case), ``color_var`` ('%.3f'
    string, or None when neither options.json nor a record gives it), ``seed``, ``test`` (the last
    record with ``test_acc``, or None) and ``epochs`` ({epoch: record} of the per-epoch records; a
    resumed run that repeated an epoch keeps the later record).
    """
    root = os.fspath(root)
    if not os.path.exists(root):
        raise UserError(f'{root} does not exist: give the output folder of sweep.py or a folder of runs')
    if not os.path.isdir(root):
        raise UserError(f'{root} is not a folder: give the output folder of sweep.py or a folder of runs')
    runs = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if 'results.jsonl' not in files or 'options.json' not in files:
            continue
        opts = read_options(os.path.join(folder, 'options.json'))
        records = read_records(os.path.join(folder, 'results.jsonl'))
        check_numbers(records, os.path.join(folder, 'results.jsonl'))
        tests = [r for r in records if 'test_acc' in r]
        test = tests[-1] if tests else None
        epochs = {}
        for r in records:
            if 'test_acc' not in r and isinstance(r.get('epoch'), int):
                epochs[r['epoch']] = r
        fallback = test or (records[-1] if records else {})
        method = opts.get('method') or fallback.get('method')
        color_var = opts.get('color_var', fallback.get('color_var'))
        runs.append({
            'name': os.path.relpath(folder, root).replace(os.sep, '/'),
            'path': folder,
            'method': str(method).lower() if method else None,
            'color_var': var_key(color_var) if color_var is not None else None,
            'seed': opts.get('random_seed'),
            'test': test,
            'epochs': epochs,
            'dry_run': bool(opts.get('dry_run') or (test or {}).get('dry_run')
                            or any(r.get('dry_run') for r in epochs.values())),
        })
    if not runs:
        raise UserError(f'no runs under {root} (looked for folders holding results.jsonl and options.json)')
    runs.sort(key=lambda r: r['name'])
    return runs


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
    extra = sorted({m for m, _ in groups} - set(METHODS))
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
            'aligned_mean': mean_of(tests, 'aligned_acc')[0],
            'conflicting_mean': mean_of(tests, 'conflicting_acc')[0],
            'probe_color_acc': probe, 'probe_n': probe_n,
            'color_acc': color, 'color_n': color_n,
        }
    return {'methods': list(METHODS) + extra,
            'color_vars': sorted({cv for _, cv in groups}, key=float),
            'cells': cells, 'incomplete': incomplete, 'unknown': unknown}


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


# -- tables ----------------------------------------------------------------------------------------

def fmt(x):
    return DASH if x is None else f'{x:.4f}'


def accuracy_cell(cell, paper):
    paper_txt = f' [paper {fmt(paper)}]' if paper is not None else ''
    if cell is None:
        return DASH + paper_txt
    if cell['n'] > 1:
        return f'{cell["mean"]:.4f} ± {cell["std"]:.4f} ({cell["n"]}){paper_txt}'
    return f'{cell["mean"]:.4f} ({cell["n"]}){paper_txt}'


def tables(agg):
    """The report's tables as (title, header, rows) with every cell already a string."""
    cvs = agg['color_vars']
    cells = agg['cells']
    header = ['method'] + cvs
    fig4 = [[display_name(m)] + [accuracy_cell(cells.get((m, cv)), PAPER_FIG4.get(m, {}).get(cv)) for cv in cvs]
            for m in agg['methods'] if m in METHODS or any((m, cv) in cells for cv in cvs)]
    colour = []
    for key, label in (('probe_color_acc', 'probe colour acc'), ('color_acc', 'h colour acc')):
        count = 'probe_n' if key == 'probe_color_acc' else 'color_n'
        for m in PROBED:
            if m not in agg['methods']:
                continue  # a method left out with --methods
            row = [f'{display_name(m)}: {label}']
            for cv in cvs:
                cell = cells.get((m, cv))
                row.append(DASH if cell is None or cell[key] is None else f'{cell[key]:.4f} ({cell[count]})')
            colour.append(row)
    split = []
    for m in agg['methods']:
        if m not in METHODS and not any((m, cv) in cells for cv in cvs):
            continue
        row = [display_name(m)]
        for cv in cvs:
            cell = cells.get((m, cv))
            row.append(DASH if cell is None else f'{fmt(cell["aligned_mean"])} / {fmt(cell["conflicting_mean"])}')
        split.append(row)
    return [
        ('Unbiased test accuracy (Fig. 4): mean ± std over seeds (n) [paper]', header, fig4),
        ('Colour information, mean over seeds (n): bias-leakage probe on f, and h\'s colour accuracy',
         ['measure'] + cvs, colour),
        ('Colour-aligned / colour-conflicting test accuracy, mean over seeds', header, split),
    ]


def notes(agg):
    lines = []
    if agg['incomplete']:
        lines.append('Incomplete runs (no test record, not counted): ' + ', '.join(agg['incomplete']))
    if agg['unknown']:
        lines.append('Runs without a method or sigma^2 (not counted): ' + ', '.join(agg['unknown']))
    return lines


def format_table(agg):
    """Plain-text report: the tables with padded columns, then the incomplete runs."""
    out = []
    for title, header, rows in tables(agg):
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        out.append(title)
        out.append('  '.join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        out.append('  '.join('-' * w for w in widths))
        out.extend('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
        out.append('')
    out.extend(notes(agg))
    return '\n'.join(out).rstrip() + '\n'


def to_markdown(agg):
    out = ['# Colored-MNIST: reproduction of Fig. 4 (Kim et al., CVPR 2019)', '']
    for title, header, rows in tables(agg):
        out.append(f'## {title}')
        out.append('')
        out.append('| ' + ' | '.join(header) + ' |')
        out.append('|' + '|'.join(['---'] + ['---:'] * (len(header) - 1)) + '|')
        out.extend('| ' + ' | '.join(r) + ' |' for r in rows)
        out.append('')
    for line in notes(agg):
        out.append(line)
        out.append('')
    return '\n'.join(out).rstrip() + '\n'


def to_csv(agg):
    def num(x, spec='.6f'):
        return '' if x is None else format(x, spec)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    w.writerow(CSV_COLUMNS)
    for m in agg['methods']:
        for cv in agg['color_vars']:
            cell = agg['cells'].get((m, cv))
            if cell is None:
                continue
            w.writerow([m, cv, cell['n'], num(cell['mean']), num(cell['std']), num(cell['paper'], '.4f'),
                        num(cell['conflicting_mean']), num(cell['aligned_mean']),
                        num(cell['probe_color_acc']), num(cell['color_acc'])])
    return buf.getvalue()


def shortfalls(agg, points=0.03):
    """Cells whose mean is more than ``points`` below the paper's number: (method, sigma^2, mean, paper)."""
    out = []
    for m in agg['methods']:
        for cv in agg['color_vars']:
            cell = agg['cells'].get((m, cv))
            if cell and cell['paper'] is not None and cell['mean'] < cell['paper'] - points:
                out.append((m, cv, cell['mean'], cell['paper']))
    return out


def last_epoch_gains(runs):
    """Per run with at least two monitored epochs: (name, last epoch, its accuracy, change over the
    last epoch), in method and sigma^2 order; shows whether the curves have flattened."""
    order = {m: i for i, m in enumerate(METHODS)}
    out = []
    for run in runs:
        pts = sorted((e, float(r['monitor_test_acc'])) for e, r in run['epochs'].items()
                     if r.get('monitor_test_acc') is not None)
        if len(pts) >= 2 and run['method'] is not None and run['color_var'] is not None:
            out.append(((order.get(run['method'], len(order)), float(run['color_var']), seed_order(run)),
                        run['name'], pts[-1][0], pts[-1][1], pts[-1][1] - pts[-2][1]))
    return [o[1:] for o in sorted(out)]


def shown_argv(argv):
    """This command's arguments as a shell line, without the texts of --command and --budget."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ('--command', '--budget'):
            skip = True
        elif not a.startswith(('--command=', '--budget=')):
            out.append(a)
    return shlex.join(out)


def readme_body(agg, runs, args, pngs):
    """The README's results section: budget and command, the tables, the figures, the gaps to the paper
    and the last-epoch change of every curve, all from the runs."""
    out = []
    if args.budget:
        out += [f'Budget: {args.budget}.', '']
    if args.command:
        out += ['Produced by:', '', '```', args.command,
                f'python collect_results.py {args.argv_shown}', '```', '']
    out.append(to_markdown(agg).replace('\n## ', '\n#### ').replace('# ', '### ', 1).rstrip())
    out.append('')
    base = os.path.dirname(os.path.abspath(args.readme))
    for path in pngs:
        rel = os.path.relpath(os.path.abspath(path), base).replace(os.sep, '/')
        out += [f'![{os.path.basename(path)}]({rel})', '']
    gaps = shortfalls(agg)
    if gaps:
        out.append('More than 3 points below the paper: ' + ', '.join(
            f'{display_name(m)} at σ² = {cv} ({mean:.4f} vs {paper:.4f})' for m, cv, mean, paper in gaps) + '.')
    else:
        out.append('No cell is more than 3 points below the paper.')
    out.append('')
    gains = last_epoch_gains(runs)
    if gains:
        out += ['Change of the monitored test accuracy over the last epoch of each run (a flat curve is '
                'near 0):', '', '| run | last epoch | accuracy | change |', '|---|---:|---:|---:|']
        out += [f'| {name} | {e} | {acc:.4f} | {d:+.4f} |' for name, e, acc, d in gains]
        out.append('')
    return '\n'.join(out).rstrip() + '\n'


# -- plots -----------------------------------------------------------------------------------------

def pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


SMOKE = 'SMOKE RUN (--dry_run): these numbers check the pipeline, they are not results'
BANNER = {'text': None}  # set when the runs are smoke runs: every figure carries it


def save(fig, path):
    plt = pyplot()
    if BANNER['text']:
        fig.text(0.5, 0.5, BANNER['text'], ha='center', va='center', rotation=20, fontsize=15, color='red',
                 alpha=0.7, bbox=dict(facecolor='white', alpha=0.7, edgecolor='red'))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=120)
    plt.close(fig)
    return path


def plot_fig4(agg, path, title):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for m in agg['methods']:
        cvs = [cv for cv in agg['color_vars'] if (m, cv) in agg['cells']]
        if not cvs:
            continue
        color = COLORS.get(m)
        cells = [agg['cells'][(m, cv)] for cv in cvs]
        line = ax.errorbar([float(cv) for cv in cvs], [c['mean'] for c in cells],
                           yerr=[c['std'] or 0.0 for c in cells], fmt='-o', color=color, capsize=3,
                           markersize=5, label=f'{display_name(m)} (ours)')
        paper = PAPER_FIG4.get(m)
        if paper:
            keys = sorted(paper, key=float)
            ax.plot([float(k) for k in keys], [paper[k] for k in keys], '--', color=line[0].get_color(),
                    alpha=0.8, label=f'{display_name(m)} (paper)')
    ax.set_xlabel('colour variance $\\sigma^2$')
    ax.set_ylabel('test accuracy (unbiased test set)')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return save(fig, path)


def plot_curves(runs, path):
    """monitor_test_acc against epoch, one panel per sigma^2; None when no run recorded it."""
    series = {}
    for run in runs:
        if run['method'] is None or run['color_var'] is None:
            continue
        points = sorted((e, float(r['monitor_test_acc'])) for e, r in run['epochs'].items()
                        if r.get('monitor_test_acc') is not None)
        if points:
            series.setdefault(run['color_var'], []).append((run['method'], run, points))
    if not series:
        return None
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    cvs = sorted(series, key=float)
    cols = min(len(cvs), 4)
    rows = (len(cvs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False, sharey=True)
    order = {m: i for i, m in enumerate(METHODS)}
    for ax, cv in zip(axes.flat, cvs):
        labelled = set()
        for method, run, points in sorted(series[cv], key=lambda s: (order.get(s[0], len(order)), s[0],
                                                                      seed_order(s[1]))):
            label = None if method in labelled else display_name(method)
            labelled.add(method)
            ax.plot([p[0] for p in points], [p[1] for p in points], '-', color=COLORS.get(method),
                    alpha=0.8, linewidth=1.2, marker='.' if len(points) < 30 else None, label=label)
        ax.set_title(f'$\\sigma^2$ = {cv}', fontsize=10)
        ax.set_xlabel('epoch')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel('monitored test accuracy')
    for ax in list(axes.flat)[len(cvs):]:
        ax.axis('off')
    fig.suptitle('Test accuracy during training (one line per seed)', fontsize=11)
    fig.tight_layout()
    return save(fig, path)


def plot_confusion(runs, color_var, path):
    """The ten mean colours, then Baseline's and LNL's confusion matrices at one sigma^2 (first seed)."""
    import numpy as np
    from dataset.colored_mnist import MEAN_COLORS, PALETTE_NAMES, palette_of
    cv = var_key(color_var)
    chosen = {}
    for m in ('baseline', 'lnl'):
        found = sorted((r for r in runs if r['method'] == m and r['color_var'] == cv
                        and r['test'] is not None and r['test'].get('confusion') is not None), key=seed_order)
        if found:
            chosen[m] = found[0]
    if not chosen:
        raise UserError(f'--confusion {cv}: no Baseline or LNL run at sigma^2={cv} has a test record '
                        f'with a confusion matrix')
    # the class colours of the data the runs were tested on (records from before files recorded them: the default)
    recorded = next((r['test']['mean_colors'] for r in chosen.values() if r['test'].get('mean_colors')), None)
    mean_colors = np.asarray(recorded, dtype=np.uint8) if recorded is not None else MEAN_COLORS
    palette = palette_of(mean_colors)
    names = PALETTE_NAMES[palette] if palette else [''] * len(mean_colors)
    plt = pyplot()
    colors = mean_colors / 255.0
    fig = plt.figure(figsize=(10, 6.2))
    grid = fig.add_gridspec(2, 2, height_ratios=(1, 5.5))
    strip = fig.add_subplot(grid[0, :])
    strip.imshow(mean_colors[None], aspect='auto', extent=(-0.5, len(colors) - 0.5, 0, 1))
    for k, name in enumerate(names):
        strip.text(k, -0.15, f'{k}: {name}' if name else str(k), ha='center', va='top', fontsize=7)
    strip.set_xlim(-0.5, len(colors) - 0.5)
    strip.set_ylim(-0.6, 1)
    strip.axis('off')
    strip.set_title('Mean colour of each digit class in the training set'
                    + (f' ({palette} palette)' if palette else ''), fontsize=10)
    for col, m in enumerate(('baseline', 'lnl')):
        ax = fig.add_subplot(grid[1, col])
        run = chosen.get(m)
        if run is None:
            ax.axis('off')
            ax.text(0.5, 0.5, f'{display_name(m)}: no run at $\\sigma^2$={cv}', ha='center', va='center')
            continue
        test = run['test']
        draw_confusion(ax, test['confusion'], f'{display_name(m)}, $\\sigma^2$={cv}, seed {run["seed"]}: '
                       f'acc {float(test["test_acc"]):.4f}', colors)
    fig.tight_layout()
    return save(fig, path)


# -- entry point -----------------------------------------------------------------------------------

def build_parser():
    p = Parser(description='Collect sweep runs into the Fig. 4 table and plot.')
    p.add_argument('dir', metavar='DIR', help='folder of run folders (the --out of sweep.py)')
    p.add_argument('--out_prefix', default=None, help='path prefix of the outputs (default: DIR/fig4)')
    p.add_argument('--title', default='Unbiased test accuracy (Colored-MNIST)', help='title of the plot')
    p.add_argument('--no_plot', action='store_true', help='write the tables only, no accuracy or curve plot')
    p.add_argument('--methods', nargs='+', default=None, metavar='METHOD',
                   help='rows to show (default: the four methods, and any other found)')
    p.add_argument('--confusion', type=float, default=None, metavar='SIGMA2',
                   help='also draw Baseline and LNL confusion matrices at this sigma^2')
    p.add_argument('--readme', default=None, metavar='README',
                   help='also write the Markdown tables between the <!-- results:begin/end --> markers of this file')
    p.add_argument('--command', default=None,
                   help='with --readme: the command that produced the runs, shown above the tables')
    p.add_argument('--section', default='results',
                   help='with --readme: the name of the README section (its <!-- NAME:begin/end --> markers)')
    p.add_argument('--budget', default=None,
                   help='with --readme: a label for the training budget of the runs (e.g. "CPU, 5 epochs")')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    runs = load_runs(args.dir)
    agg = aggregate(runs)
    if args.methods:
        agg['methods'] = [m for m in agg['methods'] if m in args.methods]
    for name in agg['incomplete']:
        print(f'warning: {name}: no test record yet (run test.py); not counted', file=sys.stderr)
    for name in agg['unknown']:
        print(f'warning: {name}: neither options.json nor results.jsonl gives the method and sigma^2; '
              f'not counted', file=sys.stderr)
    for method, cv, seed in duplicate_seeds(agg):
        print(f'warning: {display_name(method)} sigma^2={cv} seed {seed} appears more than once under '
              f'{args.dir}; every copy is counted', file=sys.stderr)
    if not agg['cells']:
        raise UserError(f'no finished run under {args.dir}: {len(runs)} run(s) found, none has a test record '
                        f'(run test.py, or let sweep.py finish)')
    prefix = args.out_prefix or os.path.join(args.dir, 'fig4')
    smoke = [r['name'] for r in runs if r['dry_run']]
    BANNER['text'] = 'SMOKE RUN (--dry_run): not results' if smoke else None
    if smoke:
        print(f'warning: {len(smoke)} of {len(runs)} runs are --dry_run smoke runs ({", ".join(smoke[:3])}'
              f'{", ..." if len(smoke) > 3 else ""}): the table and figures are marked as such', file=sys.stderr)
        if args.readme:
            raise UserError(f'{args.dir} holds --dry_run smoke runs; their numbers are not results and are not '
                            'written into a README')
        print(SMOKE)
    print(format_table(agg), end='')
    written = []
    pngs = []
    written.append(write_text(prefix + '.md', (f'**{SMOKE}.**\n\n' if smoke else '') + to_markdown(agg)))
    written.append(write_text(prefix + '.csv', to_csv(agg)))
    if not args.no_plot:
        pngs.append(plot_fig4(agg, prefix + '.png', args.title))
        curves = plot_curves(runs, prefix + '_curves.png')
        if curves:
            pngs.append(curves)
    if args.confusion is not None:
        pngs.append(plot_confusion(runs, args.confusion, prefix + '_confusion.png'))
    written += pngs
    if args.readme:
        args.argv_shown = shown_argv(argv if argv is not None else sys.argv[1:])
        body = readme_body(agg, runs, args, pngs)
        written.append(replace_readme_section(args.readme, args.section, body))
    for path in written:
        print(f'wrote {path}')
    return agg


if __name__ == '__main__':
    run_main(main)
