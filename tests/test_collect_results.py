"""Golden-file test of experiments.collect_results on hand-made run folders (tests/data/collect/).

The fixture: Baseline and LNL at sigma^2 0.020 and 0.050 with seeds 1 and 2, Gray at 0.020 with one
seed (in a sub-folder, its options.json without color_var), an LNL run with no test record yet, and an
LNL run evaluated twice whose results.jsonl ends with a truncated record.

After a deliberate change of the output format, regenerate the golden files from a copy:
``cp -r tests/data/collect /tmp/c && python -m experiments.collect_results /tmp/c`` and, once the numbers are
checked, copy ``/tmp/c/fig4.md`` and ``/tmp/c/fig4.csv`` to ``tests/data/collect/expected_fig4.*``.
"""
import csv
import json
import os
import shutil
import statistics

import pytest

from conftest import ROOT, run_py
from experiments import collect_results, records, report

FIXTURE = os.path.join(ROOT, 'tests', 'data', 'collect')


def run_script(*args):
    return run_py(['-m', 'experiments.collect_results', *args])


@pytest.fixture
def runs_dir(tmp_path):
    dst = tmp_path / 'runs'
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns('expected_*'))
    return dst


@pytest.fixture(scope='module')
def collected(tmp_path_factory):
    dst = tmp_path_factory.mktemp('collect') / 'runs'
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns('expected_*'))
    proc = run_script(dst, '--confusion', '0.020')
    assert proc.returncode == 0, proc.stderr
    return dst, proc


def read(path):
    with open(path, encoding='utf-8', newline='') as fh:
        return fh.read()


def test_markdown_and_csv_match_golden_files(collected):
    out, _ = collected
    assert read(out / 'fig4.md') == read(os.path.join(FIXTURE, 'expected_fig4.md'))
    assert read(out / 'fig4.csv') == read(os.path.join(FIXTURE, 'expected_fig4.csv'))


def test_pngs_are_written(collected):
    out, _ = collected
    for name in ('fig4.png', 'fig4_curves.png', 'fig4_confusion.png'):
        with open(out / name, 'rb') as fh:
            assert fh.read(8) == b'\x89PNG\r\n\x1a\n', name
    assert not [f for f in os.listdir(out) if f.endswith('.tmp')]


def test_printed_table_and_incomplete_warning(collected):
    _, proc = collected
    assert proc.stdout.startswith('Unbiased test accuracy (Fig. 4)')
    assert 'LNL       0.8150 ± 0.0164 (2) [paper 0.8185]' in proc.stdout
    assert 'lnl_var0.050_seed3' in proc.stderr and 'warning:' in proc.stderr


def test_one_cell_computed_independently(collected):
    # LNL, sigma^2 = 0.050: seed 1 has one test record; seed 2 was evaluated twice (0.9001, then 0.9602)
    # and its file ends with a truncated record, so the numbers are those of the last complete record.
    values = [0.9550, 0.9602]
    mean, std = statistics.mean(values), statistics.stdev(values)
    out, _ = collected
    with open(out / 'fig4.csv', encoding='utf-8', newline='') as fh:
        rows = {(r['method'], r['color_var']): r for r in csv.DictReader(fh)}
    row = rows[('lnl', '0.050')]
    assert int(row['n']) == 2
    assert float(row['mean']) == pytest.approx(mean, abs=1e-6)
    assert float(row['std']) == pytest.approx(std, abs=1e-6)
    assert float(row['paper']) == 0.9618
    assert float(row['probe_color_acc']) == pytest.approx(0.3605)  # only seed 1 ran the probe
    assert float(row['color_acc']) == pytest.approx((0.1810 + 0.1725) / 2)
    assert f'{mean:.4f} ± {std:.4f} (2) [paper 0.9618]' in read(out / 'fig4.md')


def test_load_and_aggregate_in_process(runs_dir):
    runs = records.load_runs(runs_dir)
    names = [r['name'] for r in runs]
    assert 'extra/gray_var0.020_seed1' in names and len(runs) == 10
    gray = next(r for r in runs if r['method'] == 'gray')
    assert gray['color_var'] == '0.020'
    agg = records.aggregate(runs)
    assert agg['incomplete'] == ['lnl_var0.050_seed3']
    assert agg['color_vars'] == ['0.020', '0.050']
    cell = agg['cells'][('gray', '0.020')]
    assert cell['n'] == 1 and cell['std'] is None and cell['mean'] == pytest.approx(0.8410)
    assert report.to_csv(agg) == read(os.path.join(FIXTURE, 'expected_fig4.csv'))
    assert report.to_markdown(agg) == read(os.path.join(FIXTURE, 'expected_fig4.md'))
    table = report.to_text(agg)
    assert [line.split()[0] for line in table.splitlines()[3:7]] == ['Baseline', 'BlindEye', 'Gray', 'LNL']


def test_out_prefix_and_no_plot(runs_dir, tmp_path):
    prefix = tmp_path / 'report' / 'table'
    proc = run_script(runs_dir, '--out_prefix', prefix, '--no_plot')
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / 'report')) == ['table.csv', 'table.md']
    assert not os.path.exists(runs_dir / 'fig4.md')


def check_user_error(proc):
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
    assert 'Traceback' not in proc.stderr


def test_missing_dir_is_a_user_error(tmp_path):
    proc = run_script(tmp_path / 'no_such_folder')
    check_user_error(proc)
    assert 'no_such_folder' in proc.stderr


def test_folder_without_runs_is_a_user_error(tmp_path):
    check_user_error(run_script(tmp_path))


def test_readme_section(runs_dir, tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('# Title\n\n<!-- results:begin -->\nold\n<!-- results:end -->\n\nTail.\n', encoding='utf-8')
    res = run_script(runs_dir, '--readme', readme, '--out_prefix', tmp_path / 'docs' / 'fig4',
                     '--command', 'python sweep.py --out X', '--budget', 'CPU, 2 epochs')
    assert res.returncode == 0, res.stderr
    text = readme.read_text(encoding='utf-8')
    assert text.startswith('# Title\n') and text.rstrip().endswith('Tail.')
    body = text.split('<!-- results:begin -->')[1].split('<!-- results:end -->')[0]
    assert 'old' not in body
    assert 'Budget: CPU, 2 epochs.' in body
    assert 'python sweep.py --out X' in body
    # the collect command is shown without the texts of --command and --budget
    line = next(ln for ln in body.splitlines() if ln.startswith('python -m experiments.collect_results'))
    assert '--budget' not in line and '--command' not in line and '--readme' in line
    assert '![fig4.png](docs/fig4.png)' in body
    assert (tmp_path / 'docs' / 'fig4.png').is_file()
    assert '| Baseline |' in body
    # every cell below the paper by more than 3 points is named, computed here from the CSV
    with open(tmp_path / 'docs' / 'fig4.csv', newline='', encoding='utf-8') as fh:
        rows = list(csv.DictReader(fh))
    low = [r for r in rows if r['paper'] and float(r['mean']) < float(r['paper']) - 0.03]
    if low:
        gap_line = next(ln for ln in body.splitlines() if ln.startswith('More than 3 points below'))
        for r in low:
            assert f"σ² = {r['color_var']} ({float(r['mean']):.4f} vs {float(r['paper']):.4f})" in gap_line
    else:
        assert 'No cell is more than 3 points below the paper.' in body


def test_readme_other_section(runs_dir, tmp_path):
    readme = tmp_path / 'README.md'
    original = '<!-- results:begin -->\nkeep\n<!-- results:end -->\n<!-- extra:begin -->\nold\n<!-- extra:end -->\n'
    readme.write_text(original, encoding='utf-8')
    res = run_script(runs_dir, '--readme', readme, '--section', 'extra', '--no_plot')
    assert res.returncode == 0, res.stderr
    text = readme.read_text(encoding='utf-8')
    assert '<!-- results:begin -->\nkeep\n<!-- results:end -->' in text
    extra = text.split('<!-- extra:begin -->')[1].split('<!-- extra:end -->')[0]
    assert 'old' not in extra and '| Baseline |' in extra


def test_methods_option_keeps_only_those_rows(runs_dir, tmp_path):
    collect_results.main([str(runs_dir), '--no_plot', '--methods', 'baseline', 'gray', '--out_prefix', str(tmp_path / 'f')])
    text = (tmp_path / 'f.md').read_text()
    assert '| Baseline |' in text and '| Gray |' in text
    assert '| LNL |' not in text and '| BlindEye |' not in text and 'LNL: probe' not in text


def test_first_epoch_within_a_point_of_the_end(runs_dir, tmp_path):
    pts = [(1, 0.20), (2, 0.50), (3, 0.7905), (4, 0.795), (5, 0.80)]
    assert records.first_within(pts) == 3 and records.first_within(pts, tol=0.001) == 5
    assert records.first_within([(1, 0.20), (2, 0.7905), (3, 0.75), (4, 0.80)]) == 4  # it dipped after epoch 2
    # BlindEye: up to 0.80 by epoch 3, then down to 0.665; it settles at epoch 5, not at epoch 1
    assert records.first_within([(1, 0.66), (2, 0.75), (3, 0.80), (4, 0.70), (5, 0.67), (6, 0.665)]) == 5
    assert records.first_within([(1, 0.9), (2, 0.5)]) == 2  # a curve that ends below its start
    readme = tmp_path / 'README.md'
    readme.write_text('<!-- results:begin -->\n<!-- results:end -->\n', encoding='utf-8')
    assert run_script(runs_dir, '--readme', readme, '--out_prefix', tmp_path / 'fig4', '--no_plot').returncode == 0
    rows = [ln for ln in readme.read_text(encoding='utf-8').splitlines() if ln.startswith('| lnl_var0.020_seed1 |')]
    run = next(r for r in records.load_runs(str(runs_dir)) if r['name'] == 'lnl_var0.020_seed1')
    pts = records.monitored(run)
    assert rows and rows[0].rstrip(' |').endswith(f'| {records.first_within(pts)}')
    best = max(acc for _, acc in pts)
    assert f'| {best:.4f} ({min(e for e, acc in pts if acc == best)}) |' in rows[0], rows[0]


def test_training_time_in_the_readme_section(runs_dir, tmp_path):
    # the fixture's epoch times are all equal: give each record its own, so that a mean, a maximum and a
    # last value differ
    for n, path in enumerate(sorted(runs_dir.rglob('results.jsonl'))):
        text = path.read_text(encoding='utf-8')
        parts = text.split('"epoch_time_s": 12.5')
        path.write_text(''.join(p + (f'"epoch_time_s": {10 + 3.7 * n + 1.3 * i}' if i < len(parts) - 1 else '')
                                for i, p in enumerate(parts)), encoding='utf-8')
    # the recorded epoch times, read here straight from the results.jsonl files (a repeated epoch of a
    # resumed run counts once, with its later record)
    per_method = {}
    for run in records.load_runs(str(runs_dir)):
        by_epoch = {}
        with open(os.path.join(run['path'], 'results.jsonl'), encoding='utf-8') as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if 'test_acc' not in rec and isinstance(rec.get('epoch'), int):
                    by_epoch[rec['epoch']] = rec.get('epoch_time_s')
        times = [t for t in by_epoch.values() if t is not None]
        per_method.setdefault(run['method'], []).extend(times)
    per_method = {m: t for m, t in per_method.items() if t}
    assert per_method
    readme = tmp_path / 'README.md'
    readme.write_text('<!-- results:begin -->\n<!-- results:end -->\n', encoding='utf-8')
    assert run_script(runs_dir, '--readme', readme, '--out_prefix', tmp_path / 'fig4', '--no_plot').returncode == 0
    line = next(ln for ln in readme.read_text(encoding='utf-8').splitlines() if ln.startswith('Training time'))
    for method, times in per_method.items():
        assert f'{report.display_name(method)} {len(times)} epochs, {sum(times) / len(times):.1f} s/epoch' in line
    total = sum(sum(t) for t in per_method.values())
    assert line.endswith(f'; {total / 3600:.1f} h in all.')
    # the whole figure: 21 (sigma^2, seed) cells x one run of each method at its mean recorded duration
    runs_of = {}
    for run in records.load_runs(str(runs_dir)):
        runs_of[run['method']] = runs_of.get(run['method'], 0) + 1
    one = sum(sum(t) / runs_of[m] for m, t in per_method.items())
    grid = next(ln for ln in readme.read_text(encoding='utf-8').splitlines() if ln.startswith('At these times'))
    assert f'takes {one / 3600:.1f} h' in grid and f'about {21 * one / 3600:.1f} h' in grid, grid


def test_the_curve_table_names_a_peak_above_the_end(tmp_path):
    # a BlindEye-like curve: up to 0.80 at epoch 3, down to 0.665 at the end
    run = tmp_path / 'runs' / 'blindeye_var0.020_seed1'
    run.mkdir(parents=True)
    (run / 'options.json').write_text(json.dumps({'method': 'blindeye', 'color_var': 0.02, 'random_seed': 1}))
    accs = [0.66, 0.75, 0.80, 0.70, 0.80, 0.665]
    (run / 'results.jsonl').write_text(''.join(json.dumps({'epoch': e, 'monitor_test_acc': a, 'loss_cls': 0.1}) + '\n'
                                               for e, a in enumerate(accs, 1)))
    (name, last, acc, change, (peak, at), first), = records.last_epoch_gains(records.load_runs(str(tmp_path / 'runs')))
    assert (last, acc, peak, at, first) == (6, 0.665, 0.80, 3, 6) and abs(change - (0.665 - 0.80)) < 1e-12


def test_methods_leave_the_other_runs_out_of_every_table(tmp_path):
    """--methods: the other methods' runs are in no table (rows, the monitored-curve table, training times),
    and several folders are reported together."""
    readme = tmp_path / 'README.md'
    readme.write_text('<!-- s:begin -->\n<!-- s:end -->\n', encoding='utf-8')
    collect_results.main([FIXTURE, os.path.join(FIXTURE, 'extra'), '--methods', 'lnl', 'gray', '--no_plot',
                          '--out_prefix', str(tmp_path / 'f'), '--readme', str(readme), '--section', 's'])
    text = readme.read_text(encoding='utf-8')
    assert 'lnl_var0.020_seed1' in text and 'gray_var0.020_seed1' in text
    assert 'baseline' not in text.lower()


def test_brief_section_shows_every_column_and_where_each_cell_stands(runs_dir, tmp_path):
    """--columns adds the variances without runs (a dash beside the paper's number); --brief writes the short
    section (the table, where each cell stands, the plot) and the full report it links to."""
    readme = tmp_path / 'README.md'
    readme.write_text('<!-- results:begin -->\n<!-- results:end -->\n', encoding='utf-8')
    res = run_script(runs_dir, '--readme', readme, '--out_prefix', tmp_path / 'docs' / 'fig4', '--brief',
                     '--columns', '0.020', '0.035', '0.050', '--budget', 'CPU, 3 epochs')
    assert res.returncode == 0, res.stderr
    body = readme.read_text(encoding='utf-8')
    assert '| method | 0.020 | 0.035 | 0.050 |' in body and '— [paper 0.6626]' in body
    assert 'Monitored test accuracy' not in body  # the per-run table is in the full report only
    report_md = (tmp_path / 'docs' / 'fig4_report.md').read_text(encoding='utf-8')
    assert 'Monitored test accuracy' in report_md and '[fig4_report.md](docs/fig4_report.md)' in body
    with open(tmp_path / 'docs' / 'fig4.csv', newline='', encoding='utf-8') as fh:
        rows = {(r['method'], r['color_var']): r for r in csv.DictReader(fh)}
    table = body.split('Where each cell stands')[1]
    lnl = next(ln for ln in table.splitlines() if ln.startswith('| LNL |')).split(' | ')
    r = rows[('lnl', '0.020')]
    gap = float(r['mean']) - float(r['paper'])
    within = abs(gap) <= 2 * float(r['std'])
    assert lnl[1].startswith('within 2 std' if within else ('above' if gap > 0 else 'below')), lnl
    assert lnl[2] == 'not run yet'


def test_a_one_seed_cell_is_judged_by_the_spread_at_0020():
    cell = {'n': 1, 'mean': 0.70, 'std': None, 'recipe_epochs': None}
    agg = {'cells': {('lnl', '0.020'): {'n': 3, 'mean': 0.82, 'std': 0.02}, ('lnl', '0.035'): cell},
           'color_vars': ['0.020', '0.035'], 'methods': ['lnl']}
    text = report.standing(agg, 'lnl', '0.035')  # paper 0.9306: 0.23 below, far beyond 2 x 0.02
    assert text.startswith('-0.2306, one seed: beyond 2 std of the spread at σ² = 0.020 (0.0200)'), text
    cell['mean'] = 0.92
    assert 'within 2 std' in report.standing(agg, 'lnl', '0.035')


def test_the_budget_line_says_where_the_runs_ran():
    cpu = {'device': 'cpu', 'device_name': 'AMD EPYC', 'torch': '2.14.1', 'cuda': '13.0', 'cudnn': None}
    gpu = {'device': 'cuda:0', 'device_name': 'NVIDIA H200', 'torch': '2.11.0', 'cuda': '13.0', 'cudnn': 91000}
    runs = [{'test': {}, 'options': {'environment': cpu}}, {'test': {}, 'options': {'environment': gpu}},
            {'test': {}, 'options': {'environment': gpu}}, {'test': {}, 'options': {}}, {'test': None, 'options': {}}]
    line = report.where_they_ran(runs)
    assert line == ('Ran on: AMD EPYC (cpu), torch 2.14.1: 1 run; NVIDIA H200 (cuda), torch 2.11.0, CUDA 13.0, '
                    'cuDNN 91000: 2 runs; not recorded: 1 run (trained before runs recorded it).'), line
    assert line in report.budget_lines(runs, 'x')
    runs[0]['options']['precision'], runs[1]['options']['amp'] = 'fp32', True  # the rest: fp32 by default
    assert report.where_they_ran(runs).endswith(' Precision: bf16 1 run, fp32 3 runs (each run\'s options.json; '
                                                 'paired fp32/bf16 runs agree within the spread between seeds: '
                                                 'docs/speed.md).')
    runs[0]['options']['precision'] = 'bf16'
    runs[2]['options']['precision'] = runs[3]['options']['precision'] = 'bf16'
    assert report.where_they_ran(runs) == line  # one precision: the budget line says it


def test_a_packed_epoch_counts_its_share_of_the_pack_time():
    from experiments import records, report
    runs = [{'method': 'baseline', 'epochs': {1: {'epoch_time_s': 12.0, 'pack': 4}, 2: {'epoch_time_s': 8.0, 'pack': 4}}},
            {'method': 'lnl', 'epochs': {1: {'epoch_time_s': 6.0}}}]
    rows = {m: mean for m, _, mean, *_ in records.training_time(runs)}
    assert rows == {'baseline': 2.5, 'lnl': 6.0}
    assert 'pack of K runs' in report.timing(runs) and 'pack of K' not in report.timing(runs[1:])
