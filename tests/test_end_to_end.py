"""train.py and test.py as a user runs them, on a small generated data file."""
import json
import os

import torch

from conftest import assert_user_error, run_py
from models import ConvNet


def _train(data_dir, save_dir, name, *extra):
    return run_py(['train.py', '-e', name, '--data_dir', data_dir, '--save_dir', save_dir, '--no_generate',
                   '--no_progress', '--log_step', '2'] + list(extra))


def _records(run_dir):
    with open(os.path.join(run_dir, 'results.jsonl')) as fh:
        return [json.loads(line) for line in fh]


def _weights(path):
    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    return ckpt['net_state_dict'], ckpt['h_state_dict']


def test_dry_run_then_test(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    proc = _train(small_data_dir, runs, 'lnl', '--method', 'lnl', '--max_step', '2', '--dry_run')
    assert proc.returncode == 0, proc.stderr
    run = runs / 'lnl'
    files = set(os.listdir(run))
    assert {'options.json', 'train.log', 'results.jsonl', 'checkpoint_last.pth', 'checkpoint_epoch_0002.pth',
            'done'} <= files
    assert any(f.startswith('events.out.tfevents') for f in files)
    recs = _records(run)
    assert [r['epoch'] for r in recs] == [1, 2]
    assert {'loss_cls', 'loss_mi', 'loss_color', 'acc', 'color_acc', 'lr', 'monitor_test_acc'} <= set(recs[0])
    assert json.load(open(run / 'options.json'))['method'] == 'lnl'

    proc = run_py(['test.py', '-e', 'lnl', '--save_dir', runs, '--data_dir', small_data_dir, '--no_generate'])
    assert proc.returncode == 0, proc.stderr
    rec = _records(run)[-1]
    assert 0 <= rec['test_acc'] <= 1 and len(rec['per_class_acc']) == 10 and 'color_acc' in rec
    assert {'aligned_acc', 'conflicting_acc'} <= set(rec)
    assert sum(map(sum, rec['confusion'])) == 256
    png = run / 'confusion_test.png'
    assert png.read_bytes()[:4] == b'\x89PNG'
    assert 'test_acc' in proc.stdout


def test_gray_is_evaluated_on_the_grey_view(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert _train(small_data_dir, runs, 'g', '--method', 'gray', '--max_step', '1', '--dry_run').returncode == 0
    proc = run_py(['test.py', '-e', 'g', '--save_dir', runs, '--data_dir', small_data_dir])
    assert proc.returncode == 0, proc.stderr
    rec = _records(runs / 'g')[-1]
    assert rec['gray_input'] is True and rec['method'] == 'gray' and 'color_acc' not in rec


def test_resume_equals_straight_run_and_is_deterministic(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    common = ['--method', 'lnl', '--random_seed', '7']
    assert _train(small_data_dir, runs, 'a', *common, '--max_step', '2').returncode == 0
    assert _train(small_data_dir, runs, 'b', *common, '--max_step', '2').returncode == 0
    assert _train(small_data_dir, runs, 'c', *common, '--max_step', '1').returncode == 0
    proc = _train(small_data_dir, runs, 'c', *common, '--max_step', '2', '--resume')
    assert proc.returncode == 0, proc.stderr
    ref = _weights(runs / 'a' / 'checkpoint_last.pth')
    for other in ('b', 'c'):
        got = _weights(runs / other / 'checkpoint_last.pth')
        for sd_ref, sd_got in zip(ref, got):
            assert sd_ref.keys() == sd_got.keys()
            assert all(torch.equal(sd_ref[k], sd_got[k]) for k in sd_ref), other

    def metrics(name):
        return [{k: v for k, v in r.items() if k != 'epoch_time_s'} for r in _records(runs / name)]
    assert metrics('a') == metrics('b') == metrics('c')


def test_pretrained_start_from_authors_checkpoint(small_data_dir, tmp_path):
    authors = ConvNet()
    path = tmp_path / 'checkpoint_step_0090.pth'
    torch.save({'step': 90, 'net_state_dict': authors.state_dict(),
                'optim_state_dict': torch.optim.SGD(authors.parameters(), lr=0.1).state_dict()}, path)
    proc = run_py(['test.py', '--checkpoint', path, '--color_var', '0.020', '--data_dir', small_data_dir,
                   '--save_dir', tmp_path])
    assert proc.returncode == 0, proc.stderr
    assert 'test_acc' in proc.stdout
    runs = tmp_path / 'runs'
    proc = _train(small_data_dir, runs, 'from_authors', '--method', 'lnl', '--lr', '0.001', '--use_pretrain',
                  '--checkpoint', path, '--max_step', '1', '--dry_run')
    assert proc.returncode == 0, proc.stderr
    assert 'initialised from' in (runs / 'from_authors' / 'train.log').read_text()


def test_missing_data_with_no_generate(tmp_path):
    proc = _train(tmp_path / 'nodata', tmp_path / 'runs', 'x', '--color_var', '0.035')
    assert_user_error(proc, 'mnist_10color_jitter_var_0.035.npy', '--no_generate',
                      'python -m dataset.colored_mnist --color_var 0.035')


def test_train_sh_and_test_sh(small_data_dir, tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    from experiments.sweep import run_name
    env = dict(os.environ, DATA_DIR=str(small_data_dir), SAVE_DIR=str(tmp_path / 'runs'), PYTHON=sys.executable,
               OMP_NUM_THREADS='1', COLOR_VAR='0.02')
    proc = subprocess.run(['bash', 'train.sh', '--max_step', '1', '--dry_run', '--no_generate', '--no_progress'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    # the run folders are named as the sweep names them
    assert sorted(os.listdir(tmp_path / 'runs')) == [run_name('baseline', 0.02, 1), run_name('lnl', 0.02, 1)] == \
        ['baseline_var0.020_seed1', 'lnl_var0.020_seed1']
    for run in os.listdir(tmp_path / 'runs'):
        recs = _records(tmp_path / 'runs' / run)
        assert 'test_acc' in recs[-1], run
    assert 'initialised from' in (tmp_path / 'runs' / 'lnl_var0.020_seed1' / 'train.log').read_text()
    proc = subprocess.run(['bash', 'test.sh', str(tmp_path / 'runs' / 'lnl_var0.020_seed1' / 'checkpoint_last.pth')],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert 'test_acc' in proc.stdout and 'conflicting_acc' in proc.stdout
