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

from experiments import ab, records
from utils import Parser, UserError, format_table, markdown_table, replace_readme_section, run_main


def pairs(runs):
    """{(method, sigma^2): {seed: {precision: test_acc}}} of the finished, non-smoke runs."""
    out = {}
    for run in runs:
        if run['test'] is None or run['method'] is None or run['color_var'] is None or run['dry_run']:
            continue
        precision = records.precision_of(run['options'])
        cell = out.setdefault((run['method'], run['color_var']), {}).setdefault(run['seed'], {})
        if precision in cell:
            raise UserError(f'{run["name"]}: a second {precision} run of {run["method"]} seed {run["seed"]}; '
                            'give a folder that holds each pair once')
        cell[precision] = float(run['test']['test_acc'])
    return out


def verdicts(found):
    """One dict per (method, sigma^2) (see :func:`experiments.ab.verdicts`), with ``parity`` the verdict."""
    rows = ab.verdicts(found, 'fp32', 'bf16')
    for row in rows:
        row['parity'] = row['within']
    return rows


HEADER = ab.header('fp32', 'bf16')


def table_rows(rows):
    return ab.table_rows(rows, 'fp32', 'bf16', words=('parity', 'NO parity'))


def build_parser():
    p = Parser(description='fp32 vs bf16 test accuracy of paired runs (same options and seeds).')
    p.add_argument('dir', metavar='DIR', help='folder holding the runs of both precisions (e.g. sweeps/parity)')
    p.add_argument('--readme', default=None, help='also write the table between the markers of this file')
    p.add_argument('--section', default='precision_parity', help='with --readme: the section name')
    p.add_argument('--command', default=None, help='with --readme: the commands that produced the runs')
    return p


def main(argv=None):
    import shlex
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    rows = verdicts(pairs(records.load_runs(args.dir)))
    if not any(r['seeds'] for r in rows):
        raise UserError(f'no method under {args.dir} has a seed run in both fp32 and bf16 with a test record')
    body = table_rows(rows)
    print(format_table(HEADER, body, title='Unbiased test accuracy, fp32 vs bf16 (paired by seed)',
                       align='lllrrrr'))
    if args.readme:
        text = ''
        if args.command:
            # the last line regenerates this section as it is (the command it shows included)
            text += 'Produced by:\n\n```\n' + args.command.strip() + \
                f'\npython -m experiments.parity {shlex.join(str(a) for a in argv)}\n```\n\n'
        text += markdown_table(HEADER, body, align='lllrrrr') + '\n'
        replace_readme_section(args.readme, args.section, text)
        print(f'wrote {args.readme} ({args.section})')
    return rows


if __name__ == '__main__':
    run_main(main)
