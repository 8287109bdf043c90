"""Precision parity: do fp32 and bf16 (bfloat16 autocast) training give the same unbiased test accuracy?

Paired runs, same options and seeds, one sweep per precision::

    python -m experiments.sweep --color_vars 0.020 --methods baseline lnl --seeds 1 2 --out sweeps/parity/fp32 \\
        -- --max_step 10 --lr_decay_period 4 --precision fp32
    python -m experiments.sweep --color_vars 0.020 --methods baseline lnl --seeds 1 2 --out sweeps/parity/bf16 \\
        -- --max_step 10 --lr_decay_period 4 --precision bf16
    python -m experiments.parity sweeps/parity [--readme README.md]

For each method and sigma^2: the test accuracy of every seed in both precisions, the paired difference
(bf16 - fp32) and its mean over seeds, and the spread between seeds (max - min over seeds, per precision).
Parity holds for a method when the mean paired difference is no larger in magnitude than the smaller of the
two spreads between seeds; it needs at least two seeds run in both precisions.
"""

from experiments import records
from experiments.figures import display_name
from utils import Parser, UserError, format_table, markdown_table, replace_readme_section, run_main


def pairs(runs):
    """{(method, sigma^2): {seed: {precision: test_acc}}} of the finished, non-smoke runs."""
    out = {}
    for run in runs:
        if run['test'] is None or run['method'] is None or run['color_var'] is None or run['dry_run']:
            continue
        precision = run['options'].get('precision') or ('bf16' if run['options'].get('amp') else 'fp32')
        cell = out.setdefault((run['method'], run['color_var']), {}).setdefault(run['seed'], {})
        if precision in cell:
            raise UserError(f'{run["name"]}: a second {precision} run of {run["method"]} seed {run["seed"]}; '
                            'give a folder that holds each pair once')
        cell[precision] = float(run['test']['test_acc'])
    return out


def verdicts(found):
    """One dict per (method, sigma^2): seeds, accuracies, paired differences, spreads and ``parity``."""
    rows = []
    order = {m: i for i, m in enumerate(records.method_order())}
    for (method, cv), seeds in sorted(found.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0])):
        paired = sorted(s for s, acc in seeds.items() if {'fp32', 'bf16'} <= set(acc))
        fp32 = [seeds[s]['fp32'] for s in paired]
        bf16 = [seeds[s]['bf16'] for s in paired]
        diffs = [b - f for f, b in zip(fp32, bf16)]
        row = {'method': method, 'color_var': cv, 'seeds': paired, 'fp32': fp32, 'bf16': bf16, 'diffs': diffs,
               'mean_diff': sum(diffs) / len(diffs) if diffs else None,
               'spread_fp32': max(fp32) - min(fp32) if len(fp32) > 1 else None,
               'spread_bf16': max(bf16) - min(bf16) if len(bf16) > 1 else None}
        if len(paired) < 2:
            row['parity'] = None
        else:
            row['parity'] = abs(row['mean_diff']) <= min(row['spread_fp32'], row['spread_bf16'])
        rows.append(row)
    return rows


HEADER = ['method', 'σ²', 'seed', 'fp32', 'bf16', 'bf16 − fp32']


def table_rows(rows):
    out = []
    for r in rows:
        for s, f, b, d in zip(r['seeds'], r['fp32'], r['bf16'], r['diffs']):
            out.append([display_name(r['method']), r['color_var'], str(s), f'{f:.4f}', f'{b:.4f}', f'{d:+.4f}'])
        if r['seeds']:
            verdict = {None: 'needs two seeds', True: 'parity', False: 'NO parity'}[r['parity']]
            out.append([display_name(r['method']), r['color_var'], 'mean / spread',
                        f'spread {r["spread_fp32"]:.4f}' if r['spread_fp32'] is not None else '—',
                        f'spread {r["spread_bf16"]:.4f}' if r['spread_bf16'] is not None else '—',
                        f'{r["mean_diff"]:+.4f}: {verdict}'])
    return out


def build_parser():
    p = Parser(description='fp32 vs bf16 test accuracy of paired runs (same options and seeds).')
    p.add_argument('dir', metavar='DIR', help='folder holding the runs of both precisions (e.g. sweeps/parity)')
    p.add_argument('--readme', default=None, help='also write the table between the markers of this file')
    p.add_argument('--section', default='precision_parity', help='with --readme: the section name')
    p.add_argument('--command', default=None, help='with --readme: the commands that produced the runs')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    rows = verdicts(pairs(records.load_runs(args.dir)))
    if not any(r['seeds'] for r in rows):
        raise UserError(f'no method under {args.dir} has a seed run in both fp32 and bf16 with a test record')
    body = table_rows(rows)
    print(format_table(HEADER, body, title='Unbiased test accuracy, fp32 vs bf16 (paired by seed)',
                       align='lllrrr'))
    if args.readme:
        text = ''
        if args.command:
            text += 'Produced by:\n\n```\n' + args.command.strip() + f'\npython -m experiments.parity {args.dir} ' \
                    f'--readme {args.readme}\n```\n\n'
        text += markdown_table(HEADER, body, align='lllrrr') + '\n'
        replace_readme_section(args.readme, args.section, text)
        print(f'wrote {args.readme} ({args.section})')
    return rows


if __name__ == '__main__':
    run_main(main)
