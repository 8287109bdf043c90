"""Bad input, signals, kills during a save, resume mismatches and non-finite losses."""
import json
import os
import signal

import numpy as np
import pytest
import torch

from conftest import wait_for, SMALL_VAR, assert_user_error, fake_mnist, popen, run_py, train_args
from dataset import colored_mnist
from models import ConvNet
import checkpoint


# -- bad data files through train.py ------------------------------------------------------------

@pytest.mark.parametrize('case', ['truncated', 'random', 'wrong_type', 'wrong_shape', 'wrong_dtype', 'labels'])
def test_train_rejects_bad_data_files(tmp_path, case):
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    path = colored_mnist.file_path(str(data_dir), SMALL_VAR)
    data = colored_mnist.generate(fake_mnist(32, 16), SMALL_VAR)
    fragment = {'truncated': 'truncated or not a Colored-MNIST file', 'random': 'truncated or not',
                'wrong_type': 'not the dict', 'wrong_shape': 'expected (N,28,28,3)',
                'wrong_dtype': 'expected uint8', 'labels': 'outside 0..9'}[case]
    if case in ('truncated', 'random'):
        colored_mnist.save(data, path)
        raw = open(path, 'rb').read()
        open(path, 'wb').write(raw[:1000] if case == 'truncated' else np.random.default_rng(1).bytes(4000))
    elif case == 'wrong_type':
        np.save(path, np.array(['not', 'a', 'dict']), allow_pickle=True)
    else:
        if case == 'wrong_shape':
            data['train_image'] = data['train_image'][..., :2]
        elif case == 'wrong_dtype':
            data['train_image'] = data['train_image'].astype(np.float64)
        else:
            data['test_label'] = data['test_label'].astype(np.int64) - 3
        np.save(path, data, allow_pickle=True)
    proc = run_py(train_args(data_dir, tmp_path / 'runs', 'x', '--max_step', 1, '--dry_run'))
    assert_user_error(proc, path, fragment)


# -- bad checkpoints ----------------------------------------------------------------------------

def _bad_checkpoint(tmp_path, case):
    path = tmp_path / f'{case}.pth'
    if case == 'random':
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif case == 'not_a_checkpoint':
        torch.save({'weights': [1, 2]}, path)
    elif case == 'other_architecture':
        torch.save({'net_state_dict': ConvNet(num_classes=5).state_dict()}, path)
    elif case == 'missing_keys':
        sd = ConvNet().state_dict()
        del sd['conv4.weight']
        torch.save({'net_state_dict': sd}, path)
    return path


@pytest.mark.parametrize('case,fragment', [
    ('missing', 'does not exist'), ('random', 'is not a readable PyTorch checkpoint'),
    ('not_a_checkpoint', 'no net_state_dict'), ('other_architecture', 'another architecture'),
    ('missing_keys', "missing ['conv4.weight']"),
])
def test_bad_checkpoints(small_data_dir, tmp_path, case, fragment):
    path = _bad_checkpoint(tmp_path, case)
    proc = run_py(train_args(small_data_dir, tmp_path / 'runs', 'x', '--use_pretrain', '--checkpoint', path,
                              '--max_step', 1, '--dry_run'))
    assert_user_error(proc, str(path), fragment)
    if case != 'other_architecture':  # test.py rebuilds the 5-class net that file describes
        proc = run_py(['test.py', '--checkpoint', path, '--color_var', SMALL_VAR, '--data_dir', small_data_dir])
        assert_user_error(proc, str(path), fragment)


@pytest.mark.parametrize('args,fragment', [
    (['--lr', '0'], '--lr: must be > 0.0'), (['--lr', '-1'], '--lr: must be > 0.0'),
    (['--batch_size', '0'], '--batch_size: must be > 0'),
    (['--color_var', '-0.02'], '--color_var: must be a positive number'),
    (['--method', 'nope'], "invalid choice: 'nope'"),
])
def test_bad_options_exit_with_usage_message(tmp_path, args, fragment):
    proc = run_py(['train.py', '-e', 'x', '--save_dir', tmp_path] + args)
    assert_user_error(proc, fragment)


# -- signals ------------------------------------------------------------------------------------

@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_resume_continues(small_data_dir, tmp_path, sig):
    runs = tmp_path / 'runs'
    args = train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--max_step', 10000)
    proc = popen(args)
    wait_for(lambda: os.path.exists(runs / 'r' / 'checkpoint_last.pth'), proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert 'Traceback' not in err and '--resume' in err
    saved = [f for f in os.listdir(runs / 'r') if '_batch_' in f]
    assert len(saved) == 1
    ckpt = checkpoint.read_checkpoint(str(runs / 'r' / saved[0]))
    epoch_at_stop = ckpt['epoch']
    # resume with a shorter budget: it picks up the interrupted checkpoint and finishes
    proc = run_py(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--max_step', epoch_at_stop + 1,
                              '--resume'))
    assert proc.returncode == 0, proc.stderr
    assert f'resumed from {runs / "r" / saved[0]}' in (runs / 'r' / 'train.log').read_text()
    assert (runs / 'r' / 'done').exists()


def test_kill_during_save_keeps_last_intact_checkpoint(small_data_dir, tmp_path):
    """SIGKILL a real training process while it writes its third checkpoint, then resume."""
    runs = tmp_path / 'runs'
    marker = tmp_path / 'saving'
    wrapper = (
        'import sys, time, runpy, torch\n'
        'orig = torch.save\n'
        'calls = [0]\n'
        'def slow_save(obj, f, *a, **k):\n'
        '    calls[0] += 1\n'
        '    if calls[0] == 3:\n'
        '        fh = f if hasattr(f, "write") else open(f, "wb")\n'
        '        fh.write(b"half a checkpoint")\n'
        '        fh.flush()\n'
        f'        open({str(marker)!r}, "w").close()\n'
        '        time.sleep(600)\n'
        '    return orig(obj, f, *a, **k)\n'
        'torch.save = slow_save\n'
        'sys.argv = sys.argv[1:]\n'
        'runpy.run_path("train.py", run_name="__main__")\n')
    args = train_args(small_data_dir, runs, 'k', '--method', 'baseline', '--max_step', 5, '--save_step', 1)
    proc = popen(['-c', wrapper] + args)
    wait_for(lambda: os.path.exists(marker), proc)
    proc.kill()
    proc.communicate()
    run = runs / 'k'
    intact = sorted(f for f in os.listdir(run) if f.startswith('checkpoint_'))
    # the checkpoints of epoch 1 exist and load; the one being written never got its final name
    assert intact == ['checkpoint_epoch_0001.pth', 'checkpoint_last.pth']
    for f in intact:
        assert checkpoint.read_checkpoint(str(run / f))['epoch'] == 1
    proc = run_py(args + ['--resume'])
    assert proc.returncode == 0, proc.stderr
    assert checkpoint.read_checkpoint(str(run / 'checkpoint_last.pth'))['epoch'] == 5
    assert not [f for f in os.listdir(run) if f.endswith('.tmp')]
    lines = (run / 'results.jsonl').read_text().splitlines()
    assert [int(__import__('json').loads(x)['epoch']) for x in lines] == [1, 2, 3, 4, 5]


def test_resume_with_other_options_is_refused(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'm', '--method', 'lnl', '--max_step', 1,
                              '--dry_run')).returncode == 0
    proc = run_py(train_args(small_data_dir, runs, 'm', '--method', 'baseline', '--max_step', 2, '--resume'))
    assert_user_error(proc, 'cannot resume', "method='baseline' (checkpoint: 'lnl')")
    proc = run_py(train_args(small_data_dir, runs, 'm', '--method', 'lnl', '--color_var', 0.03, '--max_step', 2,
                              '--resume'))
    assert_user_error(proc, 'color_var=0.03 (checkpoint: 0.02)')


def test_non_finite_loss_stops_with_message(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    proc = run_py(train_args(small_data_dir, runs, 'nan', '--method', 'lnl', '--lr', '1e30', '--log_step', 1,
                              '--max_step', 3))
    assert_user_error(proc, 'non-finite', 'epoch 1')
    assert not (runs / 'nan' / 'done').exists()


def test_a_diverged_state_is_never_saved_and_resume_takes_a_lower_lr(small_data_dir, tmp_path):
    """A run whose weights blow up stops without writing them (every checkpoint in the folder stays finite);
    the advice (lower --lr, --resume) works: the resumed run trains on at the new rate and says so."""
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--dry_run', '--max_step', 1,
                             '--lr', '0.01')).returncode == 0
    proc = run_py(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--dry_run', '--max_step', 3,
                             '--lr', '1e30', '--resume'))
    assert_user_error(proc, '--resume')
    for name in os.listdir(runs / 'r'):
        if name.endswith('.pth'):
            sd = checkpoint.read_checkpoint(str(runs / 'r' / name))['net_state_dict']
            assert all(torch.isfinite(v).all() and v.abs().max() < 1e4 for v in sd.values() if v.is_floating_point())
    proc = run_py(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--dry_run', '--max_step', 2,
                             '--lr', '0.001', '--resume'))
    assert proc.returncode == 0, proc.stderr
    assert '--lr changed on resume: 0.01 -> 0.001' in (runs / 'r' / 'train.log').read_text()
    recs = [json.loads(x) for x in (runs / 'r' / 'results.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in recs] == [1, 2] and recs[-1]['lr'] == pytest.approx(0.001)


def test_a_non_finite_batchnorm_statistic_is_not_healthy():
    import trainer
    from models import ColorPredictor, ConvNet

    class M:
        net, h = ConvNet(), ColorPredictor()
    assert trainer.weights_healthy(M)
    M.net.bn0.running_var[0] = float('inf')
    assert not trainer.weights_healthy(M)
