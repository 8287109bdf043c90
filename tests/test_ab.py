"""experiments.ab: two variants paired by method, sigma^2 and seed, from two folders or two test tags."""
import json

import pytest

from conftest import assert_user_error, run_py
from experiments import ab, records


def _run(root, method, seed, tests, cv=0.02):
    folder = root / f'{method}_var{cv:.3f}_seed{seed}'
    folder.mkdir(parents=True)
    (folder / 'options.json').write_text(json.dumps({'method': method, 'color_var': cv, 'random_seed': seed}))
    lines = [{'epoch': 1, 'monitor_test_acc': 0.1}] + [{'tag': tag, 'test_acc': acc, 'epoch': 1} for tag, acc in tests]
    (folder / 'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))


def test_two_folders_paired_by_seed_with_a_verdict(tmp_path):
    for seed, (x, y) in enumerate(((0.80, 0.82), (0.78, 0.79), (0.79, 0.83)), 1):
        _run(tmp_path / 'a', 'lnl', seed, [('test', x)])
        _run(tmp_path / 'b', 'lnl', seed, [('test', y)])
    _run(tmp_path / 'a', 'lnl', 4, [('test', 0.5)])  # no partner: left out
    rows = ab.verdicts(ab.pair('now', 'old', ab.accuracies(records.load_runs(tmp_path / 'a')),
                               ab.accuracies(records.load_runs(tmp_path / 'b'))), 'now', 'old')
    (row,) = rows
    assert row['seeds'] == [1, 2, 3] and row['diffs'] == pytest.approx([0.02, 0.01, 0.04])
    assert row['mean_diff'] == pytest.approx(0.07 / 3) and row['spread_now'] == pytest.approx(0.02)
    assert row['within'] is False  # 0.0233 > min(0.02, 0.04)
    readme = tmp_path / 'README.md'
    readme.write_text('x\n<!-- ab_optim:begin -->\n<!-- ab_optim:end -->\ny\n')
    args = ['-m', 'experiments.ab', f'now={tmp_path / "a"}', f'old={tmp_path / "b"}', '--readme', readme,
            '--section', 'ab_optim']
    proc = run_py(args)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text(encoding='utf-8')
    assert '| LNL | 0.020 | 1 | 0.8000 | 0.8200 | +0.0200 | 0.8185 |' in text
    assert '+0.0233: BEYOND the spread between seeds' in text
    # the section's printed command regenerates it unchanged
    command = text.split('```\n', 1)[1].split('\n```', 1)[0]
    assert command.startswith('python -m experiments.ab ')
    assert run_py(['-m', 'experiments.ab'] + __import__('shlex').split(command)[3:]).returncode == 0
    assert readme.read_text(encoding='utf-8') == text


def test_two_tags_of_the_same_runs(tmp_path):
    _run(tmp_path, 'gray', 1, [('test', 0.79), ('test_original', 0.84)])
    _run(tmp_path, 'gray', 1, [('test', 0.90), ('test_original', 0.91)], cv=0.035)
    rows = ab.main([f'luminance={tmp_path}', f'original={tmp_path}:test_original'])
    assert [(r['color_var'], r['diffs']) for r in rows] == [('0.020', pytest.approx([0.05])),
                                                           ('0.035', pytest.approx([0.01]))]
    assert rows[0]['within'] is None and rows[0]['paper'] == 0.8374


def test_bad_sides_are_one_line(tmp_path):
    _run(tmp_path, 'gray', 1, [('test', 0.79)])
    assert_user_error(run_py(['-m', 'experiments.ab', str(tmp_path), f'b={tmp_path}']), 'LABEL=DIR')
    assert_user_error(run_py(['-m', 'experiments.ab', f'a={tmp_path}', f'b={tmp_path}:nothing']), 'no run of')


def test_tables_report_a_grey_method_only_on_the_default_view(tmp_path, monkeypatch, capsys):
    """A Gray run's 'test' record counts only when it evaluated the grey view the tables report
    (dataset.tensors.DEFAULT_GRAY_VIEW; a record without gray_view is of the luminance view); the sweep then
    tests the run again."""
    from dataset import tensors
    from experiments import sweep
    run = tmp_path / 'gray_var0.020_seed1'
    run.mkdir()
    (run / 'options.json').write_text(json.dumps({'method': 'gray', 'color_var': 0.02, 'random_seed': 1}))
    (run / 'done').write_text('checkpoint_last.pth\n')
    lines = [{'epoch': 1}, {'tag': 'test', 'test_acc': 0.79, 'epoch': 1, 'gray_input': True}]
    (run / 'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))
    spec = {'run_dir': str(run), 'method': 'gray', 'color_var': 0.02, 'name': run.name}
    monkeypatch.setattr(tensors, 'DEFAULT_GRAY_VIEW', 'luminance')
    assert records.load_runs(tmp_path)[0]['test']['test_acc'] == 0.79 and sweep.status(spec) == 'done'
    monkeypatch.setattr(tensors, 'DEFAULT_GRAY_VIEW', 'original')
    assert records.load_runs(tmp_path)[0]['test'] is None and sweep.status(spec) == 'trained'
    assert records.load_runs(tmp_path)[0]['other_view'] == ('luminance', 'original')
    assert records.load_runs(tmp_path, gray_view='luminance')[0]['test']['test_acc'] == 0.79  # collect_results --gray_view
    with open(run / 'results.jsonl', 'a') as fh:
        fh.write(json.dumps({'tag': 'test', 'test_acc': 0.84, 'epoch': 1, 'gray_input': True,
                             'gray_view': 'original'}) + '\n')
    assert records.load_runs(tmp_path)[0]['test']['test_acc'] == 0.84 and sweep.status(spec) == 'done'


def test_labels_that_are_row_keys(tmp_path):
    # a variant may be called "paper" (or "seeds", "diffs"): its accuracies stay apart from the paper's number
    for seed, (x, y) in enumerate(((0.80, 0.82), (0.78, 0.79)), 1):
        _run(tmp_path / 'a', 'lnl', seed, [('test', x)])
        _run(tmp_path / 'b', 'lnl', seed, [('test', y)])
    readme = tmp_path / 'README.md'
    readme.write_text('<!-- s:begin -->\n<!-- s:end -->\n')
    proc = run_py(['-m', 'experiments.ab', f'paper={tmp_path / "a"}', f'seeds={tmp_path / "b"}', '--readme', readme,
                   '--section', 's'])
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert '| LNL | 0.020 | 1 | 0.8000 | 0.8200 | +0.0200 | 0.8185 |' in text, text
