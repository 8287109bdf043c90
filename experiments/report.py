"""The report of a set of runs: the Fig. 4 table, the colour-information and aligned/conflicting tables, as
plain text, Markdown, CSV and the README's results section."""
import csv
import io
import os
import shlex

from methods import display_name
from experiments import records
import methods
from dataset.colored_mnist import PAPER_VARIANCES
from experiments.records import PAPER_FIG4, last_epoch_gains, probed_methods, published, shortfalls
from utils import format_table, markdown_table, without_options

DASH = '—'
SMOKE = 'SMOKE RUN (--dry_run): these numbers check the pipeline, they are not results'
CSV_COLUMNS = ('method', 'color_var', 'n', 'mean', 'std', 'paper', 'conflicting_mean', 'aligned_mean',
               'probe_color_acc', 'color_acc')


def smoke_readme_refusal(holder):
    """The error for a README section asked of smoke runs (``holder`` says which folders hold them)."""
    from utils import UserError
    return UserError(f'{holder}; their numbers are not results and are not written into a README')


def fmt(x):
    return DASH if x is None else f'{x:.4f}'


def accuracy_cell(cell, paper, reported=None):
    """``reported``: ``(accuracy, who)`` of a method beyond the paper (:func:`records.published`)."""
    paper_txt = f' [paper {fmt(paper)}]' if paper is not None else ''
    if paper is None and reported is not None:
        paper_txt = f' [{reported[1]} {fmt(reported[0])}]'
    if cell is None:
        return DASH + paper_txt
    if cell['n'] > 1:
        return f'{cell["mean"]:.4f} ± {cell["std"]:.4f} ({cell["n"]}){paper_txt}{epochs_mark(cell)}'
    return f'{cell["mean"]:.4f} ({cell["n"]}){paper_txt}{epochs_mark(cell)}'


def epochs_mark(cell, form=' ({})'):
    """``form`` filled with 'N epochs of M' for a cell whose runs trained fewer epochs than their method's recipe
    (M), else ''."""
    short = records.short_epochs(cell)
    if short is None:
        return ''
    low, high = short
    count = f'{low}' if low == high else f'{low}–{high}'
    return form.format(f'{count} epoch{"s" if high != 1 else ""} of {cell["recipe_epochs"]}')


def tables(agg):
    """The report's tables as (title, header, rows) with every cell already a string."""
    cvs = agg['color_vars']
    cells = agg['cells']
    header = ['method'] + cvs
    shown = [m for m in agg['methods'] if m in PAPER_FIG4 or any((m, cv) in cells for cv in cvs)]
    fig4 = [[display_name(m)] + [accuracy_cell(cells.get((m, cv)), PAPER_FIG4.get(m, {}).get(cv), published(m, cv))
                                 for cv in cvs] for m in shown]
    colour = []
    with_h = [m for m in agg['methods'] if m in methods.METHODS and methods.METHODS[m].uses_h]
    for key, count, label, rows in (('probe_color_acc', 'probe_n', 'probe colour acc', probed_methods()),
                                    ('color_acc', 'color_n', 'h colour acc', with_h)):
        for m in rows:
            if m not in agg['methods'] or m not in shown:
                continue  # a method left out with --methods, or one beyond the paper's with no run here
            row = [f'{display_name(m)}: {label}']
            for cv in cvs:
                cell = cells.get((m, cv))
                row.append(DASH if cell is None or cell[key] is None else f'{cell[key]:.4f} ({cell[count]})')
            colour.append(row)
    split = []
    for m in shown:
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
    if any(records.short_epochs(cell) for cell in agg['cells'].values()):
        lines.append('Cells marked (N epochs of M): their runs trained N epochs, fewer than the M of their method\'s '
                     'recipe (the paper trains 100); their numbers are not comparable with the paper\'s.')
    if agg['incomplete']:
        lines.append('Incomplete runs (no test record, not counted): ' + ', '.join(agg['incomplete']))
    if agg['unknown']:
        lines.append('Runs without a method or sigma^2 (not counted): ' + ', '.join(agg['unknown']))
    return lines


def to_text(agg):
    """Plain-text report: the tables with padded columns, then the incomplete runs."""
    out = [format_table(header, rows, title=title, align='l' * len(header)) + '\n'
           for title, header, rows in tables(agg)]
    return '\n'.join(out + notes(agg)).rstrip() + '\n'


def timing(runs):
    """Seconds per training epoch (``epoch_time_s``), mean over each method's runs and epochs, as a text
    table; '' when no run recorded it."""
    rows = [(display_name(m), n, f'{mean:.2f}') for m, n, mean, *_ in records.training_time(runs)]
    if not rows:
        return ''
    text = format_table(['method', 'epochs', 's/epoch'], rows, title='Training time per epoch') + '\n'
    if any(int(rec.get('pack', 1) or 1) > 1 for r in runs for rec in r['epochs'].values()):
        text += 'Epochs trained in a pack of K runs (train_pack.py) count the pack\'s epoch time / K.\n'
    return text


def heading(agg):
    """What the tables are: Fig. 4 of the paper only when they cover its seven variances; else which sigma^2
    they hold and with how many seeds at most."""
    cvs = agg['color_vars']
    seeds = max((c['n'] for c in agg['cells'].values()), default=0)
    n = f'{seeds} seed{"s" if seeds != 1 else ""}' + (' at most' if len({c['n'] for c in agg['cells'].values()}) > 1 else '')
    if len(cvs) >= 7:
        run = len({cv for _, cv in agg['cells']})
        done = f'{len(cvs)} variances' if run == len(cvs) else f'{run} of its {len(cvs)} variances run so far'
        return f'Colored-MNIST, Fig. 4 of Kim et al. (CVPR 2019): {done}, {n}'
    return f'Colored-MNIST, σ² = {", ".join(cvs)} ({len(cvs)} of the 7 variances of Fig. 4 in Kim et al., CVPR 2019), {n}'


def to_markdown(agg):
    out = [f'# {heading(agg)}', '']
    for title, header, rows in tables(agg):
        out += [f'## {title}', '', markdown_table(header, rows), '']
    for line in notes(agg):
        out += [line, '']
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


def shown_argv(argv):
    """A command's arguments as a shell line, without the texts of --command and --budget."""
    return shlex.join(without_options(argv, ('--command', '--budget')))


YARDSTICK_VAR = '0.020'  # the variance whose spread between seeds judges a one-seed cell


def standing(agg, m, cv):
    """Where one cell stands against the paper, in a few words: within two standard deviations (n >= 2), or its
    gap; a one-seed cell's gap is set against the spread between seeds this method showed at sigma^2 = 0.020
    (the only variance with three seeds at first); '' for a cell the paper has no number for."""
    paper = PAPER_FIG4.get(m, {}).get(cv)
    cell = agg['cells'].get((m, cv))
    if paper is None:
        return ''
    if cell is None:
        return 'not run yet'
    gap = cell['mean'] - paper
    mark = epochs_mark(cell, '; {}')
    if cell['n'] >= 2:
        if abs(gap) <= 2 * cell['std']:
            return f'within 2 std ({gap:+.4f}, std {cell["std"]:.4f}){mark}'
        return f'{"above" if gap > 0 else "below"} by {abs(gap):.4f} = {abs(gap) / max(cell["std"], 1e-12):.1f} std{mark}'
    ref = agg['cells'].get((m, YARDSTICK_VAR))
    if ref is None or ref['n'] < 2 or cv == YARDSTICK_VAR:
        return f'{gap:+.4f}, one seed: no spread to judge it by{mark}'
    verdict = 'within' if abs(gap) <= 2 * ref['std'] else 'beyond'
    return f'{gap:+.4f}, one seed: {verdict} 2 std of the spread at σ² = {YARDSTICK_VAR} ({ref["std"]:.4f}){mark}'


def standing_table(agg):
    """The paper's methods x the variances: where each cell stands (:func:`standing`)."""
    cvs = agg['color_vars']
    rows = [[display_name(m)] + [standing(agg, m, cv) or DASH for cv in cvs]
            for m in agg['methods'] if m in PAPER_FIG4]
    return markdown_table(['method'] + cvs, rows) if rows else ''


def where_they_ran(runs):
    """One line: the devices (GPU or CPU model) and torch/CUDA versions the counted runs recorded in their
    options (``environment``), with how many runs each; runs from before that record are counted apart; where the
    runs trained in more than one precision, how many in each."""
    seen, unknown, precisions = {}, 0, {}
    for run in runs:
        if run.get('test') is None:
            continue
        opts = run.get('options') or {}
        precision = records.precision_of(opts)
        precisions[precision] = precisions.get(precision, 0) + 1
        env = opts.get('environment')
        if not isinstance(env, dict):
            unknown += 1
            continue
        kind = str(env.get('device', '?')).split(':')[0]
        label = f'{env.get("device_name") or "?"} ({kind}), torch {env.get("torch")}' + \
            (f', CUDA {env.get("cuda")}, cuDNN {env.get("cudnn")}' if kind == 'cuda' else '')
        seen[label] = seen.get(label, 0) + 1
    parts = [f'{label}: {n} run{"s" if n != 1 else ""}' for label, n in sorted(seen.items())]
    if unknown:
        parts.append(f'not recorded: {unknown} run{"s" if unknown != 1 else ""} (trained before runs recorded it)')
    line = ('Ran on: ' + '; '.join(parts) + '.') if parts else ''
    if len(precisions) > 1:  # a table of mixed precisions says so
        line += ' Precision: ' + ', '.join(f'{p} {n} run{"s" if n != 1 else ""}' for p, n in sorted(precisions.items())) + \
            ' (each run\'s options.json; paired fp32/bf16 runs agree within the spread between seeds: docs/speed.md).'
    return line


def budget_lines(runs, budget):
    out = [f'Budget: {budget}.', ''] if budget else []
    where = where_they_ran(runs)
    return out + ([where, ''] if where else [])


def brief_body(agg, runs, pngs, readme, details, budget=None, command=None, argv_shown=''):
    """The README's short results section: budget and command, the Fig. 4 table, where each cell stands, the
    accuracy figure, and a link to ``details`` (the full report: every table, curve and run)."""
    out = budget_lines(runs, budget)
    if command:
        out += ['Produced by:', '', '```', command, f'python -m experiments.collect_results {argv_shown}', '```', '']
    title, header, rows = tables(agg)[0]
    out += [f'**{heading(agg)}.** {title}:', '', markdown_table(header, rows), '']
    base = os.path.dirname(os.path.abspath(readme))
    for path in pngs[:1]:
        rel = os.path.relpath(os.path.abspath(path), base).replace(os.sep, '/')
        out += [f'![{os.path.basename(path)}]({rel})', '']
    table = standing_table(agg)
    if table:
        out += ['Where each cell stands against the paper (n ≥ 2: within two standard deviations of it or not; one '
                f'seed: its gap against the spread between seeds the method showed at σ² = {YARDSTICK_VAR}):', '',
                table, '']
    out += notes(agg)
    rel = os.path.relpath(os.path.abspath(details), base).replace(os.sep, '/')
    out += ['', f'Every table (colour information, aligned / conflicting digits), the curves, the confusion matrices, '
                f'each run\'s last epochs and the recorded training time: [{os.path.basename(details)}]({rel}).']
    return '\n'.join(out).rstrip() + '\n'


def readme_body(agg, runs, pngs, readme, budget=None, command=None, argv_shown=''):
    """The README's results section: budget and command, the tables, the figures, the gaps to the paper
    and the last-epoch change of every curve, all from the runs."""
    out = budget_lines(runs, budget)
    if command:
        out += ['Produced by:', '', '```', command, f'python -m experiments.collect_results {argv_shown}', '```', '']
    out.append(to_markdown(agg).replace('\n## ', '\n#### ').replace('# ', '### ', 1).rstrip())
    out.append('')
    base = os.path.dirname(os.path.abspath(readme))
    for path in pngs:
        rel = os.path.relpath(os.path.abspath(path), base).replace(os.sep, '/')
        out += [f'![{os.path.basename(path)}]({rel})', '']
    gaps = shortfalls(agg)
    if gaps:
        out.append('More than 3 points below the paper: ' + ', '.join(
            f'{display_name(m)} at σ² = {cv} ({mean:.4f} vs {paper:.4f}{epochs_mark(agg["cells"][(m, cv)], "; {}")})'
            for m, cv, mean, paper in gaps) + '.')
    else:
        out.append('No cell is more than 3 points below the paper.')
    beyond = [(m, cv, cell['mean'], cell['published'][0]) for (m, cv), cell in sorted(agg['cells'].items())
              if cell.get('published') is not None]
    if beyond:
        below = [b for b in beyond if b[2] < b[3] - 0.03]
        if below:
            out.append('More than 3 points below the number its authors report: ' + ', '.join(
                f'{display_name(m)} at σ² = {cv} ({mean:.4f} vs {value:.4f})' for m, cv, mean, value in below) + '.')
        else:
            out.append('No cell of a method beyond the paper is more than 3 points below the number its authors '
                       'report.')
    out.append('')
    gains = last_epoch_gains(runs)
    if gains:
        out += ['Monitored test accuracy at the end of each run: its change over the last epoch (a flat curve '
                'is near 0), its highest value and when, and the first epoch from which it stayed within 0.01 of '
                'its last accuracy (a curve that peaks and falls back settles only once it has come down):', '',
                markdown_table(['run', 'last epoch', 'accuracy', 'change', 'peak (epoch)', 'within 0.01 from epoch'],
                               [(name, e, f'{acc:.4f}', f'{d:+.4f}', f'{peak:.4f} ({at})', first)
                                for name, e, acc, d, (peak, at), first in gains]), '']
    spent = records.training_time(runs)
    if spent:
        out += ['Training time the runs recorded (the training steps of each epoch; the per-epoch test monitor '
                'and the evaluation come on top): ' + '; '.join(
                    f'{display_name(m)} {n} epochs, {mean:.1f} s/epoch' for m, n, mean, *_ in spent)
                + f'; {sum(total for _, _, _, total, _ in spent) / 3600:.1f} h in all.', '']
        one = sum(total / count for _, _, _, total, count in spent)  # one run of each method, mean duration
        grid = len(PAPER_VARIANCES) * 3
        if all(m in PAPER_FIG4 for m, *_ in spent):  # the figure's cost: for the paper's methods only
            out += [f'At these times one run of each method ({", ".join(display_name(m) for m, *_ in spent)}) takes '
                    f'{one / 3600:.1f} h one after another, and the whole figure at this budget '
                    f'({len(PAPER_VARIANCES)} σ² × 3 seeds, {grid * len(spent)} runs) about {grid * one / 3600:.1f} h, '
                    'one run at a time on the machine that recorded them.', '']
    return '\n'.join(out).rstrip() + '\n'
