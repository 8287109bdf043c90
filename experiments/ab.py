"""A/B comparison of two variants of a recipe run on the same seeds: per seed the two unbiased test
accuracies and their difference, per method and sigma^2 the mean difference against the spread between seeds.

    python -m experiments.ab current=docs/results/ab_optim/current pytorch0.4=docs/results/ab_optim/pytorch0.4 \\
        --methods lnl [--readme README.md --section ab_optim --command "..."]
    python -m experiments.ab luminance=docs/results/gray_view:test original=docs/results/gray_view:test_original

Each side is ``LABEL=DIR[:TAG]``: the runs under DIR (as ``experiments.collect_results`` reads them) and, of
each run, its test record of TAG (test.py ``--tag``; default ``test``). Runs are paired by method, sigma^2
and seed. The difference (B - A) is *within the spread* when the magnitude of its mean over seeds is no larger
than the smaller of the two spreads between seeds (max - min over seeds); that needs two seeds or more. The
paper's number is shown beside each method and sigma^2.
"""
import os
import sys

from experiments import records
from experiments.report import SMOKE, smoke_readme_refusal
from methods import display_name
from utils import Parser, UserError, format_table, markdown_table, replace_readme_section, run_main, without_options


def side(text):
    """``LABEL=DIR[:TAG]`` -> (label, dir, tag)."""
    label, sep, rest = text.partition('=')
    if not sep or not label or not rest:
        raise UserError(f'{text!r}: give each side as LABEL=DIR or LABEL=DIR:TAG, e.g. current=sweeps/ab/current')
    folder, _, tag = rest.partition(':')
    return label, folder, tag or 'test'


def accuracies(runs, dry=False):
    """{(method, sigma^2): {seed: test_acc}} of the finished runs: the real ones, or with ``dry`` the
    ``--dry_run`` smoke runs (compared only with each other)."""
    out = {}
    for run in runs:
        if run['test'] is None or run['method'] is None or run['color_var'] is None or run['dry_run'] != dry:
            continue
        cell = out.setdefault((run['method'], run['color_var']), {})
        if run['seed'] in cell:
            raise UserError(f'{run["name"]}: a second run of {run["method"]} sigma^2={run["color_var"]} seed '
                            f'{run["seed"]}; give a folder that holds each run once')
        cell[run['seed']] = float(run['test']['test_acc'])
    return out


def smoke_runs(runs):
    """The names of the finished ``--dry_run`` smoke runs among ``runs``."""
    return [r['name'] for r in runs if r['dry_run'] and r['test'] is not None]


def pair(a, b, acc_a, acc_b):
    """{(method, sigma^2): {seed: {a: acc, b: acc}}} from the two sides' :func:`accuracies`."""
    found = {}
    for label, accs in ((a, acc_a), (b, acc_b)):
        for key, seeds in accs.items():
            for seed, acc in seeds.items():
                found.setdefault(key, {}).setdefault(seed, {})[label] = acc
    return found


def verdicts(found, a, b):
    """One dict per (method, sigma^2): ``seeds`` run on both sides, the accuracies under ``values[a]`` and
    ``values[b]`` (labels are the user's: kept apart from the row's own keys), ``diffs`` (b - a), ``mean_diff``,
    ``spread_<a>``/``spread_<b>`` and ``within`` (None below two seeds)."""
    rows = []
    order = {m: i for i, m in enumerate(records.method_order())}
    for (method, cv), seeds in sorted(found.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0])):
        paired = sorted(s for s, acc in seeds.items() if {a, b} <= set(acc))
        va, vb = [seeds[s][a] for s in paired], [seeds[s][b] for s in paired]
        diffs = [y - x for x, y in zip(va, vb)]
        row = {'method': method, 'color_var': cv, 'seeds': paired, 'values': {a: va, b: vb}, 'diffs': diffs,
               'mean_a': sum(va) / len(va) if va else None, 'mean_b': sum(vb) / len(vb) if vb else None,
               'mean_diff': sum(diffs) / len(diffs) if diffs else None,
               f'spread_{a}': max(va) - min(va) if len(va) > 1 else None,
               f'spread_{b}': max(vb) - min(vb) if len(vb) > 1 else None,
               'paper': records.PAPER_FIG4.get(method, {}).get(cv)}
        row['within'] = None if len(paired) < 2 else \
            abs(row['mean_diff']) <= min(row[f'spread_{a}'], row[f'spread_{b}'])
        rows.append(row)
    return rows


def header(a, b):
    return ['method', 'σ²', 'seed', a, b, f'{b} − {a}', 'paper']


def table_rows(rows, a, b, words=('within the spread between seeds', 'BEYOND the spread between seeds')):
    out = []
    for r in rows:
        paper = f'{r["paper"]:.4f}' if r['paper'] is not None else '—'
        for s, x, y, d in zip(r['seeds'], r['values'][a], r['values'][b], r['diffs']):
            out.append([display_name(r['method']), r['color_var'], str(s), f'{x:.4f}', f'{y:.4f}', f'{d:+.4f}',
                        paper])
        if len(r['seeds']) > 1:
            verdict = words[0] if r['within'] else words[1]
            out.append([display_name(r['method']), r['color_var'], 'mean (spread)',
                        f'{r["mean_a"]:.4f} ({r[f"spread_{a}"]:.4f})', f'{r["mean_b"]:.4f} ({r[f"spread_{b}"]:.4f})',
                        f'{r["mean_diff"]:+.4f}: {verdict}', paper])
    return out


def provenance(args, folder):
    """The title and producing command of this comparison: those given (then kept in
    ``<A's DIR>/ab_provenance.json`` under the section's name), else the ones kept there, so that the command
    a README section prints regenerates it as it is."""
    import json
    from utils import atomic_write_text
    path = os.path.join(folder, 'ab_provenance.json')
    kept = records.read_options(path)
    if args.title is not None or args.command is not None:
        kept[args.section] = {'title': args.title, 'command': args.command}
        atomic_write_text(path, json.dumps(kept, indent=2, sort_keys=True) + '\n')
    entry = kept.get(args.section) or {}
    return entry.get('title'), entry.get('command')


def build_parser():
    p = Parser(description='A/B: two variants of a recipe, paired by method, sigma^2 and seed.')
    p.add_argument('sides', nargs=2, metavar='LABEL=DIR[:TAG]', help='the two variants (A, then B)')
    p.add_argument('--methods', nargs='+', default=None, metavar='METHOD', help='rows to show (default: all found)')
    p.add_argument('--title', default=None, help='the table\'s title')
    p.add_argument('--readme', default=None, help='also write the table between the markers of this file')
    p.add_argument('--section', default='ab', help='with --readme: the section name')
    p.add_argument('--command', default=None,
                   help='with --readme: the commands that produced the runs (kept with --title in '
                        '<A\'s DIR>/ab_provenance.json; later calls without either read them from there)')
    return p


def main(argv=None):
    import shlex
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    (a, dir_a, tag_a), (b, dir_b, tag_b) = (side(s) for s in args.sides)
    if a == b:
        raise UserError(f'the two sides have the same label {a!r}; give each its own')
    runs_a, runs_b = records.load_runs(dir_a, tag=tag_a), records.load_runs(dir_b, tag=tag_b)
    smoke_a, smoke_b = smoke_runs(runs_a), smoke_runs(runs_b)
    # smoke runs are compared with each other, marked, when neither side has a real finished run
    dry = bool(smoke_a or smoke_b) and not any(r['test'] is not None and not r['dry_run'] for r in runs_a + runs_b)
    found = pair(a, b, accuracies(runs_a, dry), accuracies(runs_b, dry))
    rows = [r for r in verdicts(found, a, b) if args.methods is None or r['method'] in args.methods]
    if not dry and (smoke_a or smoke_b):
        print(f'warning: left out {len(smoke_a) + len(smoke_b)} --dry_run smoke run(s) '
              f'({", ".join((smoke_a + smoke_b)[:3])}{", ..." if len(smoke_a + smoke_b) > 3 else ""}): they are '
              'compared only with each other, when a folder holds no real run', file=sys.stderr)
    if not any(r['seeds'] for r in rows):
        what = 'smoke run' if dry else 'run'
        raise UserError(f'no {what} of {dir_a} ({tag_a}) has a partner of the same method, sigma^2 and seed in '
                        f'{dir_b} ({tag_b})')
    if dry:
        print(f'warning: the runs compared are --dry_run smoke runs ({len(smoke_a)} in {dir_a}, {len(smoke_b)} in '
              f'{dir_b}): their numbers check the pipeline, they are not results', file=sys.stderr)
        if args.readme:
            raise smoke_readme_refusal(f'{dir_a} and {dir_b} hold --dry_run smoke runs only')
    title, command = provenance(args, dir_a)
    title = title or f'Unbiased test accuracy, {a} vs {b} (paired by seed)'
    body = table_rows(rows, a, b)
    if dry:
        print(SMOKE)
    print(format_table(header(a, b), body, title=f'{title} [--dry_run smoke runs]' if dry else title,
                       align='lllrrrr'))
    if args.readme:
        text = f'{title}.\n\n'
        shown = without_options(argv, ('--title', '--command'))  # those texts are in the provenance file
        text += 'Produced by:\n\n```\n' + (command.strip() + '\n' if command else '') + \
            f'python -m experiments.ab {shlex.join(shown)}\n```\n\n'
        text += markdown_table(header(a, b), body, align='lllrrrr') + '\n'
        replace_readme_section(args.readme, args.section, text)
        print(f'wrote {args.readme} ({args.section})')
    return rows


if __name__ == '__main__':
    run_main(main)
