"""Turn a folder of finished runs into the paper's Fig. 4: a table and a plot of unbiased test accuracy.

    python -m experiments.collect_results sweeps/fig4 [--out_prefix PATH] [--title TEXT] [--no_plot] [--confusion 0.020]
    python -m experiments.collect_results docs/results/csad docs/results/paper_e100 --methods lnl csad_base csad

Every ``results.jsonl`` under DIR (under each DIR given) whose folder also holds ``options.json`` is one run (the
layout written by train.py and the sweep). A run's result is the newest evaluation record of test.py in its
``results.jsonl`` (the one with ``test_acc``, of ``--tag``) that evaluated the run's last epoch on the run's
own sigma^2; a run without one is reported as incomplete and left out (with a warning naming a record of an
earlier epoch). A line that does not parse (one cut by a kill) is skipped with a warning.

Printed and written to ``<prefix>.md`` (default prefix ``DIR/fig4``):

* the Fig. 4 table: one row per method, one column per sigma^2 found, each cell ``mean ± std (n)`` of the
  test accuracy over seeds (sample std, ddof=1; a single seed shows the mean alone) and the paper's number
  beside it, then ``(N epochs of M)`` when the cell's runs trained fewer epochs than the M of their method's
  recipe (the paper's 100; CSAD's 40 and 5), with a note saying so;
* the colour information left in the features (``probe_color_acc``, the bias-leakage probe of test.py
  ``--probe``) and h's own colour accuracy (``color_acc``) for the probed methods, mean over seeds;
* the colour-aligned / colour-conflicting test accuracy, mean over seeds.

Also written: ``<prefix>.csv`` (one row per method and sigma^2 with runs), ``<prefix>.png`` (accuracy
against sigma^2 with the paper's curves dashed), ``<prefix>_curves.png`` (the per-epoch monitored test
accuracy, when the runs recorded it; a run started from another run's weights is drawn after that run's
epochs) and, with ``--confusion SIGMA2``, ``<prefix>_confusion.png``: the
ten mean colours and the row-normalised confusion matrices of Baseline and LNL at that sigma^2 (first
seed), like the paper's confusion figure. ``--no_plot`` skips the first two plots; an explicitly
requested confusion figure is still drawn.
"""
import json
import os
import sys

from dataset.colored_mnist import color_variance
from dataset.tensors import DEFAULT_GRAY_VIEW, GRAY_VIEWS
from experiments import figures, records, report
from methods import display_name
from utils import Parser, UserError, atomic_write_text, replace_readme_section, run_main


def build_parser():
    p = Parser(description='Collect sweep runs into the Fig. 4 table and plot.')
    p.add_argument('dirs', metavar='DIR', nargs='+',
                   help='folder of run folders (the --out of the sweep); several are reported together (e.g. a '
                        'method beside the runs of another sweep); the first one holds provenance.json')
    p.add_argument('--out_prefix', default=None, help='path prefix of the outputs (default: DIR/fig4)')
    p.add_argument('--title', default='Unbiased test accuracy (Colored-MNIST)', help='title of the plot')
    p.add_argument('--no_plot', action='store_true', help='write the tables only, no accuracy or curve plot')
    p.add_argument('--methods', nargs='+', default=None, metavar='METHOD',
                   help='methods to report (default: every registered method, and any other found); the runs of other '
                        'methods are left out of every table, note and figure')
    p.add_argument('--confusion', type=color_variance, default=None, metavar='SIGMA2',
                   help='also draw Baseline and LNL confusion matrices at this sigma^2')
    p.add_argument('--tag', default='test',
                   help='which test.py evaluation of each run to report (its --tag; a run\'s newest one of its '
                        'last epoch and its own sigma^2 counts)')
    p.add_argument('--gray_view', choices=GRAY_VIEWS, default=None,
                   help='the grey view of the Gray records to report (default: the one the tables report, '
                        f'{DEFAULT_GRAY_VIEW}; records without gray_view are of the luminance view)')
    p.add_argument('--readme', default=None, metavar='README',
                   help='also write the Markdown tables between the <!-- NAME:begin/end --> markers of this file')
    p.add_argument('--command', default=None,
                   help='with --readme: the command that produced the runs, shown above the tables (kept in '
                        'DIR/provenance.json with --budget; later calls without either read it from there)')
    p.add_argument('--section', default='results',
                   help='with --readme: the name of the README section (its <!-- NAME:begin/end --> markers)')
    p.add_argument('--columns', type=color_variance, nargs='+', default=None, metavar='SIGMA2',
                   help='the variances the tables show as columns, a dash where no run is (default: those with runs)')
    p.add_argument('--brief', action='store_true',
                   help='with --readme: a short section (the Fig. 4 table, where each cell stands, the plot) that '
                        'links to the full report, written to OUT_PREFIX_report.md')
    p.add_argument('--budget', default=None,
                   help='with --readme: a label for the training budget of the runs (e.g. "CPU, 5 epochs")')
    return p


def provenance(args):
    """The budget label and the producing command of DIR's runs: those given (then kept in
    ``DIR/provenance.json``, beside the records), else the ones kept there, so that the collect_results
    command a section prints regenerates the section as it is."""
    path = os.path.join(args.dir, 'provenance.json')
    if args.budget is not None or args.command is not None:
        atomic_write_text(path, json.dumps({'budget': args.budget, 'command': args.command}, indent=2) + '\n')
        return args.budget, args.command
    kept = records.read_options(path)
    return kept.get('budget'), kept.get('command')


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.dir = args.dirs[0]
    runs = [run for d in args.dirs for run in records.load_runs(d, tag=args.tag, gray_view=args.gray_view)]
    if args.methods:  # the other runs are left out of every table, note and figure
        runs = [run for run in runs if run['method'] in args.methods]
    agg = records.aggregate(runs)
    for run in runs:
        if run['test'] is None and run['stale_test'] is not None:
            print(f'warning: {run["name"]}: its {args.tag!r} record evaluates epoch {run["stale_test"].get("epoch")}, '
                  f'but the run trained to epoch {max(run["epochs"], default="?")}; not counted (run test.py '
                  'again)', file=sys.stderr)
    if args.methods:
        agg['methods'] = [m for m in agg['methods'] if m in args.methods]
    if args.columns:
        agg['color_vars'] = sorted({records.var_key(cv) for cv in args.columns} | set(agg['color_vars']), key=float)
        added = [m for m in records.PAPER_FIG4 if m not in agg['methods'] and (not args.methods or m in args.methods)]
        order = records.method_order()
        agg['methods'] = sorted(agg['methods'] + added, key=lambda m: order.index(m) if m in order else len(order))
    for run in runs:
        if run['other_view'] is not None:
            found, wanted = run['other_view']
            print(f'warning: {run["name"]}: its {args.tag!r} record is of the {found} grey view, the tables report '
                  f'the {wanted} one (test.py -e {run["path"]} evaluates it); not counted', file=sys.stderr)
    stale = {r['name'] for r in runs if r['stale_test'] is not None or r['other_view'] is not None}
    for name in agg['incomplete']:
        if name not in stale:
            print(f'warning: {name}: no {args.tag!r} record of its sigma^2 yet (run test.py); not counted',
                  file=sys.stderr)
    for name in agg['unknown']:
        print(f'warning: {name}: neither options.json nor results.jsonl gives the method and sigma^2; '
              f'not counted', file=sys.stderr)
    for method, cv, seed in records.duplicate_seeds(agg):
        print(f'warning: {display_name(method)} sigma^2={cv} seed {seed} appears more than once under '
              f'{" ".join(args.dirs)}; every copy is counted', file=sys.stderr)
    if not agg['cells']:
        raise UserError(f'no finished run under {" ".join(args.dirs)}: {len(runs)} run(s) found, none has a test '
                        'record (run test.py, or let the sweep finish)')
    prefix = args.out_prefix or os.path.join(args.dir, 'fig4')
    smoke = [r['name'] for r in runs if r['dry_run']]
    banner = 'SMOKE RUN (--dry_run): not results' if smoke else None
    if smoke:
        print(f'warning: {len(smoke)} of {len(runs)} runs are --dry_run smoke runs ({", ".join(smoke[:3])}'
              f'{", ..." if len(smoke) > 3 else ""}): the table and figures are marked as such', file=sys.stderr)
        if args.readme:
            raise report.smoke_readme_refusal(f'{" ".join(args.dirs)} holds --dry_run smoke runs')
        print(report.SMOKE)
    print(report.to_text(agg), end='')
    print(report.timing(runs), end='')
    pngs = []
    written = [atomic_write_text(prefix + '.md', (f'**{report.SMOKE}.**\n\n' if smoke else '') + report.to_markdown(agg)),
               atomic_write_text(prefix + '.csv', report.to_csv(agg))]
    if not args.no_plot:
        pngs.append(figures.plot_fig4(agg, prefix + '.png', args.title, records.PAPER_FIG4, banner))
        curves = figures.plot_curves(records.curves(runs), prefix + '_curves.png', banner)
        if curves:
            pngs.append(curves)
    if args.confusion is not None:
        cv = records.var_key(args.confusion)
        pngs.append(figures.plot_confusion(records.confusion_runs(runs, cv), cv, prefix + '_confusion.png', banner))
    written += pngs
    if args.readme:
        budget, command = provenance(args)
        argv_shown = report.shown_argv(argv if argv is not None else sys.argv[1:])
        if args.brief:
            details = prefix + '_report.md'
            full = report.readme_body(agg, runs, pngs, details, budget, command, argv_shown)
            written.append(atomic_write_text(details, f'# {report.heading(agg)}: the full report\n\n' + full))
            body = report.brief_body(agg, runs, pngs, args.readme, details, budget, command, argv_shown)
        else:
            body = report.readme_body(agg, runs, pngs, args.readme, budget, command, argv_shown)
        written.append(replace_readme_section(args.readme, args.section, body))
    for path in written:
        print(f'wrote {path}')
    return agg


if __name__ == '__main__':
    run_main(main)
