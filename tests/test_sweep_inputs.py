"""Inputs that got a traceback, a hang or gigabytes (train.py, test.py, the generator, collect_results), and
test.py's records of what it evaluated."""
import json
import os

import pytest

from conftest import SMALL_VAR, assert_user_error, make_small_data, run_py, train_args
from experiments import records
from utils import read_jsonl


# -- inputs that got a traceback, a hang or gigabytes ------------------------------------------------------

@pytest.mark.parametrize('extra,fragment', [
    (['--threads', '999'], 'oversubscribe'), (['--device', 'meta'], 'not supported'),
    (['--device', 'xpu'], 'not supported'), (['--device', 'mps'], 'not supported'),
    (['--feat_ch', '100000'], 'feat_ch'), (['--random_seed', '12345678901234567890'], 'random_seed'),
    (['--data_seed', '-3'], 'data_seed'), (['--n_class', '1000000000'], 'n_class'),
    (['--save_dir', 'FILE'], 'is a file, not a folder'), (['--data_dir', 'FILE'], 'is a file, not a folder'),
    (['--checkpoint', 'FILE'], 'read only with --use_pretrain')])
def test_bad_train_options_are_one_line_before_any_work(tmp_path, extra, fragment):
    (tmp_path / 'FILE').write_text('x')
    extra = [str(tmp_path / 'FILE') if a == 'FILE' else a for a in extra]
    proc = run_py(['train.py', '-e', 'r', '--save_dir', tmp_path / 'runs', '--data_dir', tmp_path / 'data',
                   '--no_generate', '--dry_run', '--max_step', 1] + extra)
    assert_user_error(proc, fragment)
    assert fragment in proc.stderr.strip().splitlines()[-1]  # it ends in one line that names the input


@pytest.mark.parametrize('tag', ['a/b', '../../x', '', '.hidden'])
def test_test_py_refuses_a_tag_that_is_not_a_file_name(tmp_path, tag):
    proc = run_py(['test.py', '-e', 'r', '--save_dir', tmp_path, '--tag', tag])
    assert_user_error(proc, '--tag', 'confusion_<tag>.png')


def test_generator_refuses_a_negative_seed(tmp_path):
    proc = run_py(['-m', 'dataset.colored_mnist', '--data_dir', tmp_path, '--color_var', '0.020', '--seed', '-1'])
    assert_user_error(proc, '--seed')


def _checkpoint(small_data_dir, tmp_path):
    import torch
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'r', '--method', 'lnl', '--dry_run', '--max_step', 1)).returncode == 0
    return torch.load(runs / 'r' / 'checkpoint_last.pth', weights_only=True)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(data folder, checkpoint path) of one LNL dry run, made once for the checks that only read it."""
    root = tmp_path_factory.mktemp('trained')
    make_small_data(root / 'data')
    _checkpoint(root / 'data', root)
    return root / 'data', root / 'runs' / 'r' / 'checkpoint_last.pth'


@pytest.mark.parametrize('change,fragment', [
    (lambda c: c['config'].update(feat_ch=10 ** 7), 'feat_ch'),
    (lambda c: c['config'].update(num_bins=10 ** 6), 'num_bins'),
    (lambda c: c['config'].update(n_class=-1), 'n_class'),
    (lambda c: c['config'].update(n_class=10 ** 9), 'n_class'),
    (lambda c: c['config'].update(feat_ch=16), 'inconsistent'),
    (lambda c: c.update(epoch=-5), 'negative'),
    (lambda c: c.update(epoch='5'), 'epoch is a str'),
    (lambda c: c.update(config=[1, 2]), 'config is a list'),
    (lambda c: c.update(options='lnl'), 'options is a str'),
    (lambda c: c.update(h_state_dict=3), 'h_state_dict is a int'),
    (lambda c: c['options'].update(color_var='0.02'), 'color_var'),
    (lambda c: c['options'].update(method=5), 'method'),
    (lambda c: c['options'].update(dry_run='yes'), 'dry_run')])
def test_test_py_checks_a_checkpoint_before_building_anything(trained, tmp_path, change, fragment):
    import torch
    data_dir, path = trained
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, tmp_path / 'bad.pth')
    proc = run_py(['test.py', '--checkpoint', tmp_path / 'bad.pth', '--data_dir', data_dir, '--no_generate'])
    assert_user_error(proc, fragment)


def test_resume_from_a_checkpoint_without_its_random_state_is_refused(trained, tmp_path):
    import torch
    small_data_dir, path = trained
    ckpt = torch.load(path, weights_only=True)
    del ckpt['rng']
    torch.save(ckpt, tmp_path / 'v1.pth')
    proc = run_py(train_args(small_data_dir, tmp_path / 'runs', 'r', '--method', 'lnl', '--dry_run', '--max_step', 2,
                             '--resume', tmp_path / 'v1.pth'))
    assert_user_error(proc, 'lacks rng')


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_old_file(small_data_dir, tmp_path, monkeypatch):
    import torch
    runs = tmp_path / 'runs'
    args = train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--dry_run', '--max_step', 1)
    assert run_py(args).returncode == 0
    before = (runs / 'r' / 'checkpoint_last.pth').read_bytes()

    def full_disk(*a, **k):
        raise RuntimeError('[enforce fail at inline_container.cc:664] . unexpected pos 128 vs 64\nframe #0: c10::...')
    monkeypatch.setattr(torch, 'save', full_disk)
    proc = run_py(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--dry_run', '--max_step', 2,
                             '--resume'))
    assert_user_error(proc, 'could not write the checkpoint', 'resume with --resume')
    assert 'frame #0' not in proc.stderr
    assert (runs / 'r' / 'checkpoint_last.pth').read_bytes() == before
    assert not [f for f in os.listdir(runs / 'r') if f.endswith('.tmp')]


def test_a_data_file_whose_header_asks_for_terabytes(tmp_path):
    import numpy as np
    header = {'descr': '|u1', 'fortran_order': False, 'shape': (10 ** 13,)}
    path = tmp_path / 'mnist_10color_jitter_var_0.020.npy'
    with open(path, 'wb') as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b'\0' * 20)
    proc = run_py(['train.py', '-e', 'r', '--save_dir', tmp_path / 'runs', '--data_dir', tmp_path, '--no_generate',
                   '--dry_run', '--max_step', 1])
    assert_user_error(proc, 'describes 10,000,000,000,000 bytes')


def test_a_readme_whose_markers_are_out_of_order(tmp_path):
    from utils import UserError, replace_readme_section
    readme = tmp_path / 'README.md'
    readme.write_text('a\n<!-- results:end -->\nb\n<!-- results:begin -->\nc\n')
    with pytest.raises(UserError, match='begin first'):
        replace_readme_section(str(readme), 'results', 'x')
    assert readme.read_text() == 'a\n<!-- results:end -->\nb\n<!-- results:begin -->\nc\n'


def test_test_py_accepts_a_run_folder_path_and_refuses_a_bad_name(small_data_dir, tmp_path):
    _checkpoint(small_data_dir, tmp_path)
    proc = run_py(['test.py', '-e', tmp_path / 'runs' / 'r', '--data_dir', small_data_dir, '--no_generate'])
    assert proc.returncode == 0, proc.stderr
    assert_user_error(run_py(['test.py', '-e', '..', '--save_dir', tmp_path / 'runs', '--data_dir', small_data_dir]),
                      'not a run name')


def test_test_py_records_which_grey_view_it_evaluated(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'g', '--method', 'gray', '--dry_run', '--max_step', 1)).returncode == 0
    for extra in (['--gray_view', 'luminance'], ['--gray_view', 'original']):
        proc = run_py(['test.py', '-e', 'g', '--save_dir', runs, '--data_dir', small_data_dir, '--no_generate'] + extra)
        assert proc.returncode == 0, proc.stderr
    tests = [r for r in read_jsonl(str(runs / 'g' / 'results.jsonl')) if 'test_acc' in r]
    from dataset.tensors import DEFAULT_GRAY_VIEW, view_tag
    assert DEFAULT_GRAY_VIEW == 'original'  # the README's choice (Gray's test view)
    assert [(t['tag'], t['gray_view']) for t in tests] == [('test_luminance', 'luminance'), ('test', 'original')]
    assert view_tag('luminance') == 'test_luminance' and view_tag('original') == 'test'
    assert records.load_runs(runs)[0]['test']['gray_view'] == 'original'
    assert records.load_runs(runs, tag='test_luminance')[0]['test']['gray_view'] == 'luminance'


def test_folders_that_cannot_be_written_are_one_line(small_data_dir, tmp_path):
    (tmp_path / 'FILE').write_text('x')
    proc = run_py(['train.py', '-e', 'r', '--save_dir', tmp_path / 'FILE' / 'runs', '--data_dir', small_data_dir,
                   '--no_generate', '--dry_run', '--max_step', 1])
    assert_user_error(proc, 'lies inside the file')
    from dataset import colored_mnist
    from utils import UserError
    with pytest.raises(UserError, match='cannot write .*x.npy'):
        colored_mnist.save({}, str(tmp_path / 'FILE' / 'data' / 'x.npy'))


def test_options_json_fields_of_the_wrong_type_are_named_not_a_traceback(tmp_path, capsys):
    for name, opts in (('a', {'method': 5, 'color_var': 0.02}), ('b', {'method': 'lnl', 'color_var': 'high'}),
                       ('c', {'method': 'lnl', 'color_var': 0.02, 'random_seed': [1]})):
        run = tmp_path / name
        run.mkdir()
        (run / 'options.json').write_text(json.dumps(opts))
        (run / 'results.jsonl').write_text(json.dumps({'tag': 'test', 'test_acc': 0.5}) + '\n')
    runs = {r['name']: r for r in records.load_runs(tmp_path)}
    assert runs['a']['method'] is None and runs['b']['color_var'] is None and runs['c']['seed'] == '[1]'
    assert capsys.readouterr().err.count('not counted') == 2


def test_test_py_on_a_data_file_with_an_empty_test_split(small_data_dir, tmp_path):
    from conftest import fake_mnist
    from dataset import colored_mnist
    _checkpoint(small_data_dir, tmp_path)
    empty = tmp_path / 'empty'
    colored_mnist.save(colored_mnist.generate(fake_mnist(n_test=0), SMALL_VAR, seed=3),
                       colored_mnist.file_path(str(empty), SMALL_VAR))
    proc = run_py(['test.py', '-e', 'r', '--save_dir', tmp_path / 'runs', '--data_dir', empty, '--no_generate'])
    assert_user_error(proc, 'test split', 'is empty')


def test_deterministic_is_recorded_and_switched_off_after_the_run(small_data_dir, tmp_path):
    import torch
    runs = tmp_path / 'runs'
    proc = run_py(train_args(small_data_dir, runs, 'd', '--method', 'lnl', '--dry_run', '--max_step', 1, '--deterministic'))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((runs / 'd' / 'options.json').read_text())['deterministic'] is True
    assert not torch.are_deterministic_algorithms_enabled()


def test_test_py_palette_evaluates_an_authors_checkpoint_on_supplementary_data(tmp_path):
    """An authors' checkpoint records no palette: test.py --palette picks the data file (before, the error
    for such a file told the user to pass --palette, which test.py did not have)."""
    import torch
    from conftest import fake_mnist
    from dataset import colored_mnist
    from models import ConvNet
    data_dir = tmp_path / 'data'
    data = colored_mnist.generate(fake_mnist(), SMALL_VAR, seed=3, palette='supplementary_names')
    colored_mnist.save(data, colored_mnist.file_path(str(data_dir), SMALL_VAR, 'supplementary_names'))
    torch.save({'step': 90, 'net_state_dict': ConvNet().state_dict()}, tmp_path / 'authors.pth')
    args = ['test.py', '--checkpoint', tmp_path / 'authors.pth', '--color_var', '0.020', '--data_dir', data_dir,
            '--no_generate']
    assert_user_error(run_py(args), 'does not exist')
    proc = run_py(args + ['--palette', 'supplementary_names'])
    assert proc.returncode == 0, proc.stderr
    assert read_jsonl(str(tmp_path / 'results.jsonl'))[-1]['data_file'].endswith('_supplementary_names.npy')


@pytest.mark.parametrize('tool,extra,fragment', [
    ('sweep', ['--out', 'FILE/sub'], 'lies inside the file'), ('sweep', ['--out', 'OUT', '--seeds', '-1'], '--seeds'),
    ('campaign', ['--out', 'OUT', '--records', 'FILE/records'], 'lies inside the file'),
    ('campaign', ['--out', 'OUT', '--weights', 'FILE'], 'is a file, not a folder'),
    ('campaign', ['--out', 'OUT', '--seeds', '-1'], '--seeds'),
    ('campaign', ['--out', 'OUT', '--runs_at_once', '0'], '--runs_at_once'),
    ('campaign', ['--out', 'OUT', '--records', 'REAL'], 'holds the records of real runs')])
def test_sweep_and_campaign_refuse_bad_folders_and_numbers_before_training(tmp_path, tool, extra, fragment):
    (tmp_path / 'FILE').write_text('x')
    (tmp_path / 'REAL' / 'baseline_var0.020_seed1').mkdir(parents=True)  # a real run's records
    (tmp_path / 'REAL' / 'baseline_var0.020_seed1' / 'options.json').write_text('{"method": "baseline"}')
    extra = [str(tmp_path / a) if a.split('/')[0] in ('FILE', 'OUT', 'REAL') else a for a in extra]
    if tool == 'campaign':  # never the repository's records and weights, whatever the option under test
        extra = ['--records', str(tmp_path / 'records'), '--weights', str(tmp_path / 'weights')] + extra
    proc = run_py(['-m', f'experiments.{tool}', '--color_vars', '0.020', '--methods', 'baseline',
                   '--data_dir', tmp_path / 'data', *extra, '--', '--dry_run', '--no_generate'])
    assert_user_error(proc, fragment)
    assert not (tmp_path / 'OUT').exists() and not (tmp_path / 'data').exists()


@pytest.mark.parametrize('bad,fragment', [(['--bogus'], 'unrecognized arguments: --bogus'),
                                          (['--max_step', '-1'], '--max_step')])
def test_the_sweep_refuses_train_arguments_before_any_run_starts(tmp_path, bad, fragment):
    proc = run_py(['-m', 'experiments.sweep', '--color_vars', '0.020', '--methods', 'baseline', '--out',
                   tmp_path / 'out', '--data_dir', tmp_path / 'data', '--', *bad])
    assert_user_error(proc, 'train.py refuses the arguments after --', fragment)
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'data').exists()
