"""How long a newcomer's first commands take: the test suite and the smoke run, timed as the README gives them.

    python benchmarks/first_day.py --json docs/results/first_day.json --readme docs/speed.md

Runs the README's test command (``python -m pytest ...`` of its set-up line) and ``python -m experiments.sweep
--smoke`` (its runs in a temporary folder),
each once, in this interpreter's environment, and records their wall-clock times, exit status and the machine
(CPU model, cores). Run it alone on the machine: with a training job beside it both take longer.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as ``python benchmarks/first_day.py``
    sys.path.insert(0, ROOT)

from utils import (Parser, atomic_write_text, markdown_table, replace_readme_section, run_main,  # noqa: E402
                   usable_cores)
from utils.runtime import cpu_model, repository_commit  # noqa: E402


def readme_test_command(readme=os.path.join(ROOT, 'README.md')):
    """The arguments after ``python`` of the README's test command (``python -m pytest ...`` up to the next ``&&``)."""
    with open(readme, encoding='utf-8') as fh:
        for line in fh:
            if 'python -m pytest' in line:
                return line[line.index('python -m pytest'):].split('&&')[0].split()[1:]
    raise SystemExit(f'{readme} gives no `python -m pytest` command')


def timed(cmd):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    tail = (proc.stdout.strip().splitlines() or [''])[-1]
    shown = ' '.join(cmd[1:] if cmd[0] == sys.executable else cmd)
    return {'command': shown, 'seconds': round(time.perf_counter() - start, 1), 'returncode': proc.returncode,
            'last_line': tail[:200]}


def build_parser():
    p = Parser(description='Time the test suite and the smoke run as the README gives them.')
    p.add_argument('--json', default=None, help='write the record here')
    p.add_argument('--readme', default=None, help='write the table into the <!-- first_day:begin/end --> section')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        steps = [timed([sys.executable, *readme_test_command()]),
                 timed([sys.executable, '-m', 'experiments.sweep', '--smoke', '--out', os.path.join(tmp, 'smoke')])]
    steps[1]['command'] = '-m experiments.sweep --smoke'
    record = {'machine': f'{cpu_model()}, {usable_cores()} cores', 'commit': repository_commit(), 'steps': steps}
    rows = [[f'`python {s["command"]}`', f'{s["seconds"] / 60:.1f} min' if s['seconds'] >= 90 else f'{s["seconds"]:.0f} s',
             'passed' if s['returncode'] == 0 else f'exit {s["returncode"]}'] for s in steps]
    table = markdown_table(['command', 'wall time', 'result'], rows)
    print(table)
    if args.json:
        atomic_write_text(args.json, json.dumps(record, indent=2) + '\n')
    if args.readme:
        body = (f'Measured on {record["machine"]}, nothing else running, at commit {record["commit"]} '
                f'(record: `{os.path.relpath(args.json, os.path.dirname(os.path.abspath(args.readme)))}`):\n\n'
                if args.json else '') + table + '\n\nProduced by `python benchmarks/first_day.py --json ' + \
            f'{args.json} --readme {args.readme}`.\n'
        replace_readme_section(args.readme, 'first_day', body)
    return 0 if all(s['returncode'] == 0 for s in steps) else 1


if __name__ == '__main__':
    sys.exit(run_main(main))
