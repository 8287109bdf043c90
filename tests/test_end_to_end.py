"""train.py and test.py as a user runs them, on a small generated data file."""
import json
import os

import pytest
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


def test_evaluate_on_a_stub_network_with_known_predictions():
    """Overall, aligned, conflicting and per-class accuracy and the confusion matrix, by hand, over batches
    of 3. Fails when aligned and conflicting are swapped, on an off-by-one in the per-class accuracy, or when
    the confusion matrix is transposed."""
    import math
    import numpy as np
    from evaluation import evaluate

    class Stub(torch.nn.Module):  # the image holds the prediction
        def forward(self, x):
            return x, torch.nn.functional.one_hot(x[:, 0].long(), 10).float()
    labels = [0, 0, 1, 1, 2, 2, 3, 3]
    preds = [0, 1, 1, 1, 2, 0, 3, 2]
    mean_index = np.array([0, 5, 1, 7, 2, 2, 3, 9])  # aligned: 0, 2, 4, 5, 6; conflicting: 1, 3, 7
    split = type('Split', (), {'images': torch.tensor(preds, dtype=torch.float32)[:, None],
                               'labels': torch.tensor(labels), '__len__': lambda self: 8})()
    res = evaluate(Stub(), split, batch_size=3, num_classes=10, mean_index=mean_index)
    assert res['acc'] == 5 / 8 and res['aligned_acc'] == 4 / 5 and res['conflicting_acc'] == 1 / 3
    assert res['aligned_fraction'] == 5 / 8
    assert res['per_class_acc'][:4] == [0.5, 1.0, 0.5, 0.5] and all(math.isnan(a) for a in res['per_class_acc'][4:])
    expected = np.zeros((10, 10), dtype=int)
    for t, p in zip(labels, preds):
        expected[t, p] += 1
    assert res['confusion'] == expected.tolist() and res['confusion'][2][0] == 1 and res['confusion'][0][2] == 0


@pytest.mark.slow
def test_mid_epoch_resume_across_a_learning_rate_step_is_bit_exact(small_data_dir, tmp_path, monkeypatch):
    """LNL with the learning rate x0.1 every epoch, interrupted in the middle of epoch 2 (its 6th of 4 x 3
    mini-batches), resumed: weights, records and the recorded lr sequence equal those of a straight run."""
    import signal
    import methods
    runs = tmp_path / 'runs'
    common = ['--method', 'lnl', '--lr', '0.01', '--lr_decay_period', '1', '--max_step', '3', '--precision', 'fp32']
    assert _train(small_data_dir, runs, 'straight', *common).returncode == 0
    update, calls = methods.LNL.update, []

    def interrupted(self, *a):
        calls.append(1)
        out = update(self, *a)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return out
    monkeypatch.setattr(methods.LNL, 'update', interrupted)
    assert _train(small_data_dir, runs, 'cut', *common).returncode == 130
    assert [f for f in os.listdir(runs / 'cut') if '_batch_00002' in f]
    monkeypatch.setattr(methods.LNL, 'update', update)
    assert _train(small_data_dir, runs, 'cut', *common, '--resume').returncode == 0
    for a, b in zip(_weights(runs / 'straight' / 'checkpoint_last.pth'), _weights(runs / 'cut' / 'checkpoint_last.pth')):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def metrics(name):
        return [{k: v for k, v in r.items() if k != 'epoch_time_s'} for r in _records(runs / name)]
    assert metrics('cut') == metrics('straight')
    assert [r['lr'] for r in _records(runs / 'cut')] == pytest.approx([0.01, 0.001, 0.0001], rel=1e-9)


@pytest.mark.slow
def test_gray_trains_and_is_tested_on_the_grey_view(small_data_dir, tmp_path, monkeypatch):
    """Every training batch Gray steps on is the luminance view of the coloured digits (the three channels,
    un-normalised, are equal and are the rounded BT.601 luma); test.py feeds it the grey view the tables
    report (the file's test_gray) by default, and the luminance view with --gray_view luminance."""
    import numpy as np
    import methods
    import test as test_py
    from dataset import colored_mnist
    from dataset.tensors import MEAN, STD, normalize, to_gray
    data = colored_mnist.load(colored_mnist.file_path(str(small_data_dir), 0.020))
    grey_train = normalize(to_gray(data['train_image'][:1024]))
    seen = []
    update = methods.Gray.update
    monkeypatch.setattr(methods.Gray, 'update', lambda self, x, c, y: seen.append(x.clone()) or update(self, x, c, y))
    assert _train(small_data_dir, tmp_path / 'runs', 'g', '--method', 'gray', '--max_step', '1').returncode == 0
    assert sum(len(x) for x in seen) == len(data['train_label'])
    for x in seen:
        un = x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
        assert torch.allclose(un[:, 0], un[:, 1], atol=1e-5) and torch.allclose(un[:, 1], un[:, 2], atol=1e-5)
    assert (grey_train - seen[0][:1]).abs().amax(dim=(1, 2, 3)).min() < 1e-6  # one of the file's digits
    fed = []
    evaluate = test_py.evaluate
    monkeypatch.setattr(test_py, 'evaluate', lambda net, split, *a, **k: fed.append(split.images) or
                        evaluate(net, split, *a, **k))
    assert run_py(['test.py', '-e', 'g', '--save_dir', tmp_path / 'runs', '--data_dir', small_data_dir]).returncode == 0
    assert torch.equal(fed[0].contiguous(), normalize(np.repeat(data['test_gray'][..., None], 3, axis=-1)))
    assert run_py(['test.py', '-e', 'g', '--save_dir', tmp_path / 'runs', '--data_dir', small_data_dir,
                   '--gray_view', 'luminance']).returncode == 0
    assert torch.equal(fed[1].contiguous(), normalize(to_gray(data['test_image'])))


@pytest.mark.slow
def test_train_sh_continues_after_an_interruption_and_test_sh_evaluates(small_data_dir, tmp_path):
    """Interrupted during the baseline, `bash train.sh` (the same command) finishes the baseline, then trains
    LNL from it (before: the LNL step failed, 'no intact checkpoint', and --overwrite retrained the baseline);
    the run folders are named as the sweep names them; a train.py option that the recipe sets itself is
    refused with where to set it; test.sh evaluates a checkpoint."""
    import signal
    import subprocess
    import sys
    import time
    from conftest import ROOT
    from utils import RunLock
    env = dict(os.environ, DATA_DIR=str(small_data_dir), SAVE_DIR=str(tmp_path / 'runs'), PYTHON=sys.executable,
               OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    cmd = ['bash', 'train.sh', '--max_step', '4', '--dry_run', '--no_generate']
    base = tmp_path / 'runs' / 'baseline_var0.020_seed1'
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    end = time.time() + 120
    while not ((base / 'checkpoint_last.pth').exists() and RunLock.holder(str(base))) and time.time() < end:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert 'relaunch the same command' in err and not (base / 'done').exists()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'resumed from' in (base / 'train.log').read_text()
    for run in ('baseline_var0.020_seed1', 'lnl_var0.020_seed1'):
        assert 'test_acc' in _records(tmp_path / 'runs' / run)[-1], run
    assert 'initialised from' in (tmp_path / 'runs' / 'lnl_var0.020_seed1' / 'train.log').read_text()
    from experiments import sweep
    from utils import UserError
    with pytest.raises(UserError, match='COLOR_VAR=0.035 bash train.sh'):  # what train.sh passes on to the sweep
        sweep.parse(['--methods', 'baseline', 'lnl', '--out', str(tmp_path / 'runs'), '--', '--color_var', '0.035'])
    assert sorted(os.listdir(tmp_path / 'runs')) == ['baseline_var0.020_seed1', 'lnl_var0.020_seed1']
    proc = subprocess.run(['bash', 'test.sh', str(tmp_path / 'runs' / 'lnl_var0.020_seed1' / 'checkpoint_last.pth')],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert 'test_acc' in proc.stdout and 'conflicting_acc' in proc.stdout
