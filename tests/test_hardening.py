"""Damaged inputs and misleading outputs of the experiment commands: the shipped weights' provenance, exports of
smoke and CSAD runs, A/B of smoke runs, malformed data headers and options, short runs beside the paper's
numbers, and the warnings of brief CSAD tries."""
import json
import shutil
import struct

import pytest
import torch

from conftest import SMALL_VAR, assert_user_error, make_small_data, run_py, train_args
from experiments.pretrained import PRETRAINED_DIR

SHIPPED = 'baseline_var0.020_seed2.pth'


# -- pretrained/: provenance entries, exports, the files it reads ---------------------------------------------

@pytest.fixture
def shipped_copy(tmp_path):
    """A copy of pretrained/ (the command works on it through --dir) and an empty data folder: an entry that is
    not refused before any evaluation ends at the missing data file instead."""
    out = tmp_path / 'pretrained'
    shutil.copytree(PRETRAINED_DIR, out)
    (tmp_path / 'nodata').mkdir()
    return out, tmp_path / 'nodata'


def _damage(folder, change):
    path = folder / 'provenance.json'
    prov = json.loads(path.read_text())
    change(prov['files'])
    path.write_text(json.dumps(prov))


DAMAGED = {
    'not a dict': (lambda f: f.__setitem__(SHIPPED, 5), 'not a table of fields'),
    'no sha256': (lambda f: f[SHIPPED].pop('sha256'), 'sha256'),
    'sha256 a number': (lambda f: f[SHIPPED].__setitem__('sha256', 5), 'sha256'),
    'unknown method': (lambda f: f[SHIPPED].__setitem__('method', 'nope'), 'method'),
    'method a number': (lambda f: f[SHIPPED].__setitem__('method', 3), 'method'),
    'color_var text': (lambda f: f[SHIPPED].__setitem__('color_var', 'abc'), 'color_var'),
    'color_var null': (lambda f: f[SHIPPED].__setitem__('color_var', None), 'color_var'),
    'test_acc text': (lambda f: f[SHIPPED].__setitem__('test_acc', '0.5'), 'test_acc'),
    'no test_acc': (lambda f: f[SHIPPED].pop('test_acc'), 'test_acc'),
    'no palette': (lambda f: f[SHIPPED].pop('palette'), 'palette'),
    'gray_view a number': (lambda f: f[SHIPPED].__setitem__('gray_view', 3), 'gray_view'),
    'path in the name': (lambda f: f.__setitem__('../pretrained/' + SHIPPED, f.pop(SHIPPED)), 'path separator'),
}


@pytest.mark.parametrize('case', sorted(DAMAGED))
def test_damaged_provenance_entries_are_refused_before_any_evaluation(shipped_copy, case):
    folder, nodata = shipped_copy
    change, field = DAMAGED[case]
    _damage(folder, change)
    proc = run_py(['-m', 'experiments.pretrained', '--dir', folder, '--data_dir', nodata, '--no_generate'])
    assert_user_error(proc, 'provenance.json', field)
    assert 'does not exist' not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_dir_without_provenance_says_what_dir_is_for(tmp_path):
    proc = run_py(['-m', 'experiments.pretrained', '--dir', tmp_path / 'typo'])
    assert_user_error(proc, 'provenance.json does not exist', 'give --dir the folder of the shipped weights')


def test_a_file_that_needs_unpickling_is_refused_without_advising_a_flag_it_lacks(shipped_copy):
    import argparse
    folder, nodata = shipped_copy
    ckpt = torch.load(folder / SHIPPED, weights_only=True)
    ckpt['options'] = argparse.Namespace(**ckpt['options'])  # an object: loading it would need full unpickling
    torch.save(ckpt, folder / SHIPPED)
    from utils import sha256_file
    _damage(folder, lambda f: f[SHIPPED].__setitem__('sha256', sha256_file(folder / SHIPPED)))
    proc = run_py(['-m', 'experiments.pretrained', '--dir', folder, '--data_dir', nodata, '--no_generate'])
    assert_user_error(proc, SHIPPED, 'tensors and plain values')
    assert '--trust_checkpoint' not in proc.stderr.replace('test.py --checkpoint PATH --trust_checkpoint', '')


@pytest.fixture(scope='module')
def csad_runs(tmp_path_factory):
    """A tiny csad_base run (1 epoch, tested, its records copied as a commit would) and a --dry_run one."""
    tmp = tmp_path_factory.mktemp('csad_export')
    data = tmp / 'data'
    make_small_data(data)
    runs, recs = tmp / 'runs', tmp / 'records'
    for name, extra in (('csad_base_var0.020_seed1', ()), ('dry', ('--dry_run',))):
        proc = run_py(train_args(data, runs, name, '--method', 'csad_base', '--color_var', SMALL_VAR, '--max_step', 1,
                                 '--threads', 1, '--precision', 'fp32', *extra))
        assert proc.returncode == 0, proc.stderr
        assert run_py(['test.py', '-e', name, '--save_dir', runs, '--data_dir', data]).returncode == 0
        (recs / name).mkdir(parents=True)
        (recs / name / 'results.jsonl').write_bytes((runs / name / 'results.jsonl').read_bytes())
    return tmp, data, runs, recs


def _export(run_dir, out, recs):
    return run_py(['-m', 'experiments.pretrained', '--export', run_dir, '--dir', out, '--records', recs,
                   '--commit', 'abc', '--command', 'train it'])


def test_a_csad_run_exports_and_evaluates_with_its_bias_label(csad_runs):
    tmp, data, runs, recs = csad_runs
    out = tmp / 'shipped_csad'
    proc = _export(runs / 'csad_base_var0.020_seed1', out, recs)
    assert proc.returncode == 0, proc.stderr
    proc = run_py(['-m', 'experiments.pretrained', '--dir', out, '--data_dir', data, '--no_generate'])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'csad_base_var0.020_seed1.pth' in proc.stdout and ' yes ' in proc.stdout, proc.stdout


def test_a_dry_run_is_not_exported(csad_runs, tmp_path):
    tmp, data, runs, recs = csad_runs
    out = tmp_path / 'shipped'
    proc = _export(runs / 'dry', out, recs)
    assert_user_error(proc, 'dry', '--dry_run')
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists(), proc.stderr
    # after a real run on the command line: nothing is written either (every run is checked first)
    assert_user_error(run_py(['-m', 'experiments.pretrained', '--export', runs / 'csad_base_var0.020_seed1',
                              runs / 'dry', '--dir', out, '--records', recs, '--commit', 'abc', '--command', 'x']),
                      '--dry_run')
    assert not out.exists()


# -- experiments.ab on smoke runs -----------------------------------------------------------------------------

def _ab_run(root, seed, acc, dry=True):
    folder = root / f'lnl_var0.020_seed{seed}'
    folder.mkdir(parents=True)
    (folder / 'options.json').write_text(json.dumps({'method': 'lnl', 'color_var': 0.02, 'random_seed': seed,
                                                     'dry_run': dry}))
    lines = [{'epoch': 1, 'monitor_test_acc': 0.1, 'dry_run': dry}, {'tag': 'test', 'test_acc': acc, 'epoch': 1}]
    (folder / 'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))


def test_ab_compares_smoke_runs_marked_and_never_into_a_readme(tmp_path):
    _ab_run(tmp_path / 'a', 1, 0.25)
    _ab_run(tmp_path / 'b', 1, 0.5)
    proc = run_py(['-m', 'experiments.ab', f'a={tmp_path / "a"}', f'b={tmp_path / "b"}'])
    assert proc.returncode == 0, proc.stderr
    assert 'SMOKE RUN' in proc.stdout and '+0.2500' in proc.stdout and 'dry_run' in proc.stderr
    assert 'partner' not in proc.stderr
    readme = tmp_path / 'README.md'
    readme.write_text('<!-- ab:begin -->\n<!-- ab:end -->\n')
    assert_user_error(run_py(['-m', 'experiments.ab', f'a={tmp_path / "a"}', f'b={tmp_path / "b"}', '--readme',
                              readme]), 'smoke runs')
    # beside real runs, smoke runs are left out and the warning says so
    _ab_run(tmp_path / 'a', 2, 0.8, dry=False)
    _ab_run(tmp_path / 'b', 2, 0.9, dry=False)
    proc = run_py(['-m', 'experiments.ab', f'a={tmp_path / "a"}', f'b={tmp_path / "b"}'])
    assert proc.returncode == 0 and '+0.1000' in proc.stdout and '+0.2500' not in proc.stdout, proc.stdout
    assert 'left out 2 --dry_run smoke run' in proc.stderr and 'SMOKE' not in proc.stdout


# -- damaged files: a data file's header, a run's options -----------------------------------------------------

def _npy_with_header(path, header):
    text = header.encode('latin1')
    text += b' ' * ((64 - (10 + len(text) + 1) % 64) % 64) + b'\n'
    path.write_bytes(b'\x93NUMPY\x01\x00' + struct.pack('<H', len(text)) + text)


def test_a_malformed_npy_header_is_one_line_naming_the_file(tmp_path):
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (3,"  # an unclosed bracket: tokenize.TokenError
    from dataset import colored_mnist
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    _npy_with_header(data_dir / colored_mnist.file_name(SMALL_VAR), header)
    proc = run_py(train_args(data_dir, tmp_path / 'runs', 'r', '--method', 'baseline', '--dry_run', '--max_step', 1))
    assert_user_error(proc, colored_mnist.file_name(SMALL_VAR), 'header')
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_collect_results_names_a_damaged_options_field(tmp_path):
    field, value = 'color_var', 'abc'
    run = tmp_path / 'runs' / 'lnl_var0.020_seed1'
    run.mkdir(parents=True)
    (run / 'options.json').write_text(json.dumps(dict({'method': 'lnl', 'color_var': 0.02, 'random_seed': 1},
                                                      **{field: value})))
    (run / 'results.jsonl').write_text(json.dumps({'epoch': 1, 'monitor_test_acc': 0.5}) + '\n' + json.dumps(
        {'tag': 'test', 'test_acc': 0.5, 'epoch': 1, 'color_var': 0.02}) + '\n')
    proc = run_py(['-m', 'experiments.collect_results', tmp_path / 'runs', '--no_plot'])
    assert_user_error(proc, 'options.json', field)  # the only run is not counted: nothing to report
    assert 'Traceback' not in proc.stderr and f'options.json: {field} is {value!r}' in proc.stderr


# -- collect_results: short runs beside the paper, the curve figure --------------------------------------------

def _run_folder(root, method, accs, seed=1, **opts):
    """A finished run of ``len(accs)`` epochs (monitored accuracies ``accs``), tested at its last epoch."""
    folder = root / f'{method}_var0.020_seed{seed}'
    folder.mkdir(parents=True)
    (folder / 'options.json').write_text(json.dumps(dict({'method': method, 'color_var': 0.02, 'random_seed': seed,
                                                          'max_step': len(accs)}, **opts)))
    lines = [{'epoch': e, 'monitor_test_acc': a} for e, a in enumerate(accs, 1)]
    lines.append({'tag': 'test', 'test_acc': accs[-1], 'epoch': len(accs), 'color_var': 0.02})
    (folder / 'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in lines))
    return folder


@pytest.fixture
def figures_drawn(monkeypatch):
    """The figures collect_results draws, by file name, kept open for inspection."""
    import experiments.figures as figures
    kept = {}

    def keep(fig, path, banner=None):
        import os
        kept[os.path.basename(path)] = fig
        fig.canvas.draw()
        return path
    monkeypatch.setattr(figures, 'save_figure', keep)
    yield kept
    import matplotlib.pyplot as plt
    for fig in kept.values():
        plt.close(fig)


def test_a_one_epoch_run_is_marked_beside_the_paper_and_its_curve_has_whole_epochs(tmp_path, figures_drawn):
    _run_folder(tmp_path / 'runs', 'lnl', [0.4316])
    proc = run_py(['-m', 'experiments.collect_results', tmp_path / 'runs'])
    assert proc.returncode == 0, proc.stderr
    assert '0.4316 (1) [paper 0.8185] (1 epoch of 100)' in proc.stdout
    md = (tmp_path / 'runs' / 'fig4.md').read_text(encoding='utf-8')
    assert '(1 epoch of 100)' in md and 'fewer than the M of their method' in md
    ax = figures_drawn['fig4_curves.png'].axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def test_the_legend_covers_no_curve_and_continued_runs_are_drawn_after_their_base(tmp_path, figures_drawn):
    runs = tmp_path / 'runs'
    base = _run_folder(runs, 'csad_base', [0.3, 0.4])
    _run_folder(runs, 'csad', [0.9], use_pretrain=True, checkpoint=str(base / 'checkpoint_last.pth'))
    _run_folder(runs, 'baseline', [0.2, 0.3, 0.4, 0.45])
    _run_folder(runs, 'lnl', [0.7, 0.8], use_pretrain=True,  # the base's epoch in the checkpoint's name
                checkpoint='/elsewhere/baseline_var0.020_seed1/checkpoint_epoch_0003.pth')
    assert run_py(['-m', 'experiments.collect_results', runs]).returncode == 0
    fig = figures_drawn['fig4_curves.png']
    panel = fig.axes[0]
    xs = {line.get_color(): list(line.get_xdata()) for line in panel.get_lines()}
    from methods import plot_color
    import matplotlib.colors as mc
    by_method = {m: xs[next(c for c in xs if mc.same_color(c, plot_color(m)))] for m in ('csad', 'lnl', 'baseline')}
    assert by_method == {'csad': [3], 'lnl': [4, 5], 'baseline': [1, 2, 3, 4]}
    assert "after that run's epochs" in fig._suptitle.get_text().replace('\n', ' ')
    renderer = fig.canvas.get_renderer()
    legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        if ax.get_lines():  # a panel of curves
            assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()


# -- brief CSAD tries -------------------------------------------------------------------------------------------

def test_brief_csad_tries_are_warned_about():
    from option import get_option
    from train import warnings_for
    lines = warnings_for(get_option(['-e', 'x', '--method', 'csad_base', '--max_step', '1', '--precision', 'bf16']))
    assert len(lines) == 2 and 'bf16' in lines[0] and 'fp32' in lines[0], lines
    assert 'bias branch' in lines[1] and '--csad_class_epochs 20' in lines[1], lines
    lines = warnings_for(get_option(['-e', 'x', '--method', 'csad', '--use_pretrain', '--checkpoint', 'c', '--amp']))
    assert len(lines) == 1 and 'bf16' in lines[0], lines
    assert warnings_for(get_option(['-e', 'x', '--method', 'csad_base', '--precision', 'fp32'])) == []
    assert warnings_for(get_option(['-e', 'x', '--method', 'baseline', '--precision', 'bf16'])) == []
    lines = warnings_for(get_option(['-e', 'x', '--method', 'csad_base', '--max_step', '20', '--precision', 'fp32']))
    assert len(lines) == 1 and 'bias branch' in lines[0]
    assert warnings_for(get_option(['-e', 'x', '--method', 'csad_base', '--max_step', '21', '--precision', 'fp32'])) == []


def test_csad_parity_without_their_code_says_what_it_needs():
    proc = run_py(['-m', 'experiments.csad_parity'])
    assert_user_error(proc, '--their_code', 'zwvews/csad', 'docs/csad.md')
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
