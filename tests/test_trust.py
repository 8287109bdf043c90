"""Untrusted files, one process per run folder, a killed sweep, resume with options that change the computation
(inputs that must fail cleanly: test_trust_inputs.py)."""
import collections
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import wait_for, ROOT, SMALL_VAR, assert_user_error, fake_mnist, popen, run_py, train_args
from dataset import colored_mnist
from models import ConvNet
from utils import RunLock
import checkpoint


class Payload:
    """Pickles into a call of ``os.system`` that writes a marker file: what an attacker's file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    try:
        with open(f'/proc/{pid}/stat') as fh:
            return fh.read().split(')')[-1].split()[0] != 'Z'
    except OSError:
        return False


# -- 1. files that carry code ------------------------------------------------------------------------

def test_data_file_with_a_payload_is_refused_and_never_runs(tmp_path):
    data_dir = tmp_path / 'data'
    data_dir.mkdir()
    marker = tmp_path / 'pwned'
    data = colored_mnist.generate(fake_mnist(32, 16), SMALL_VAR)
    data['extra'] = Payload(marker)
    np.save(colored_mnist.file_path(str(data_dir), SMALL_VAR), data, allow_pickle=True)
    proc = run_py(train_args(data_dir, tmp_path / 'runs', 'x', '--max_step', 1, '--dry_run'))
    assert_user_error(proc, 'refused to load posix.system', 'only a dict of NumPy arrays')
    assert not marker.exists()


def test_data_reader_accepts_what_the_authors_format_holds(tmp_path):
    import pickle
    arr = np.array({'train_image': np.zeros((2, 28, 28, 3), np.uint8), 'n': np.int64(3), 's': 'x', 'f': 1.5,
                    'l': [1, 2]}, dtype=object)
    for protocol in (2, 3, 4, 5):
        path = tmp_path / f'p{protocol}.npy'
        with open(path, 'wb') as fh:
            np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(arr))
            pickle.dump(arr, fh, protocol=protocol)
        out = colored_mnist.read_npy(str(path)).item()
        assert out['n'] == 3 and out['s'] == 'x' and out['l'] == [1, 2] and out['train_image'].shape == (2, 28, 28, 3)


def _evil_checkpoint(path, marker):
    torch.save({'net_state_dict': ConvNet().state_dict(), 'step': 90, 'extra': Payload(marker)}, path)


def test_checkpoint_with_a_payload_is_refused_without_the_flag(small_data_dir, tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    _evil_checkpoint(path, marker)
    proc = run_py(['test.py', '--checkpoint', path, '--color_var', SMALL_VAR, '--data_dir', small_data_dir])
    assert_user_error(proc, 'holds objects other than tensors', '--trust_checkpoint')
    proc = run_py(train_args(small_data_dir, tmp_path / 'runs', 'x', '--use_pretrain', '--checkpoint', path,
                         '--max_step', 1, '--dry_run'))
    assert_user_error(proc, 'holds objects other than tensors')
    assert not marker.exists()
    # with the flag the user takes the risk, and is told so on one line
    proc = run_py(['test.py', '--checkpoint', path, '--color_var', SMALL_VAR, '--data_dir', small_data_dir,
                   '--method', 'baseline', '--trust_checkpoint'])
    assert proc.returncode == 0, proc.stderr
    assert 'warning:' in proc.stderr and 'full unpickling' in proc.stderr
    assert marker.exists()


def test_dropped_checkpoint_in_a_run_folder_never_runs(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--max_step', 1,
                         '--dry_run')).returncode == 0
    marker = tmp_path / 'pwned'
    _evil_checkpoint(runs / 'r' / 'checkpoint_zzz.pth', marker)
    proc = run_py(['test.py', '-e', 'r', '--save_dir', runs, '--data_dir', small_data_dir])
    assert proc.returncode == 0, proc.stderr
    assert 'checkpoint_zzz' not in proc.stdout and not marker.exists()


def test_our_checkpoints_load_with_weights_only(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'r', '--method', 'lnl', '--max_step', 1,
                         '--dry_run')).returncode == 0
    ckpt = torch.load(runs / 'r' / 'checkpoint_last.pth', map_location='cpu', weights_only=True)
    assert ckpt['format'] == checkpoint.CHECKPOINT_FORMAT and ckpt['options']['method'] == 'lnl'
    assert isinstance(ckpt['rng']['numpy']['keys'], torch.Tensor)


def test_authors_checkpoint_format_loads_with_weights_only(tmp_path):
    # the authors' trainer saved {'step', 'optim_state_dict', 'net_state_dict'} with PyTorch 0.4 (legacy format)
    net = ConvNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net(torch.zeros(2, 3, 28, 28))[0].sum().backward()
    opt.step()
    path = tmp_path / 'authors.pth'
    torch.save({'step': 90, 'optim_state_dict': opt.state_dict(),
                'net_state_dict': collections.OrderedDict(net.state_dict())}, path,
               _use_new_zipfile_serialization=False)
    ckpt = checkpoint.read_checkpoint(str(path))
    assert ckpt['step'] == 90 and set(ckpt['net_state_dict']) == set(net.state_dict())


def test_rng_state_round_trips_through_the_plain_format():
    gen = torch.Generator().manual_seed(3)
    np.random.seed(5)
    state = checkpoint.rng_state(gen)
    a = (np.random.rand(3), torch.rand(2), torch.randint(0, 100, (3,), generator=gen))
    checkpoint.set_rng_state(state, gen)
    b = (np.random.rand(3), torch.rand(2), torch.randint(0, 100, (3,), generator=gen))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


# -- 2. one process per run folder ----------------------------------------------------------------------

def test_second_process_in_a_run_folder_refuses_with_the_holders_pid(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    first = popen(train_args(small_data_dir, runs, 'dup', '--method', 'lnl', '--max_step', 10000))
    try:
        # the first process holds the lock and has written its options (it is training)
        wait_for(lambda: RunLock.holder(str(runs / 'dup')) is not None and (runs / 'dup' / 'options.json').exists(),
              first)
        proc = run_py(train_args(small_data_dir, runs, 'dup', '--method', 'baseline', '--max_step', 1))
        assert_user_error(proc, 'is in use by process', str(first.pid))
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    # released on exit: the run can be resumed now
    assert RunLock.holder(str(runs / 'dup')) is None
    assert json.loads((runs / 'dup' / 'options.json').read_text())['method'] == 'lnl'


def test_lock_is_free_after_a_crash(tmp_path):
    run_dir = tmp_path / 'r'
    proc = subprocess.run([sys.executable, '-c', 'import os, sys; sys.path.insert(0, sys.argv[1]); '
                           'from utils import RunLock; RunLock(sys.argv[2]).acquire(); os._exit(9)',
                           ROOT, str(run_dir)])
    assert proc.returncode == 9 and (run_dir / '.lock').exists()
    assert RunLock.holder(str(run_dir)) is None
    RunLock(str(run_dir)).acquire().release()


def test_fresh_start_over_another_run_needs_overwrite(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'r', '--method', 'lnl', '--max_step', 2, '--save_step', 1,
                         '--dry_run')).returncode == 0
    proc = run_py(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--max_step', 1, '--dry_run'))
    assert_user_error(proc, 'already holds a run', '--resume', '--overwrite')
    assert json.loads((runs / 'r' / 'options.json').read_text())['method'] == 'lnl'
    proc = run_py(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--max_step', 1, '--dry_run',
                         '--overwrite'))
    assert proc.returncode == 0, proc.stderr
    left = sorted(f for f in os.listdir(runs / 'r') if f.startswith('checkpoint_'))
    assert left == ['checkpoint_epoch_0001.pth', 'checkpoint_last.pth']  # the LNL run's epoch 2 is gone
    recs = [json.loads(x) for x in (runs / 'r' / 'results.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in recs] == [1]
    assert checkpoint.read_checkpoint(str(runs / 'r' / 'checkpoint_last.pth'))['options']['method'] == 'baseline'


# -- 3. a killed sweep ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_to_the_sweep_stops_its_training_child_and_relaunch_resumes(small_data_dir, tmp_path):
    out = tmp_path / 'sweep'
    args = ['-m', 'experiments.sweep', '--color_vars', SMALL_VAR, '--methods', 'baseline', '--seeds', '1', '--out', out,
            '--data_dir', small_data_dir, '--no_probe', '--', '--max_step', 3, '--no_generate']
    sweep = popen(args)
    run_dir = out / 'baseline_var0.020_seed1'
    wait_for(lambda: RunLock.holder(str(run_dir)) is not None and (run_dir / 'checkpoint_last.pth').exists(), sweep)
    child = int(RunLock.holder(str(run_dir)))
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + signal.SIGTERM, err
    assert 'relaunch the same command' in err and 'Traceback' not in err
    assert not _alive(child)
    assert RunLock.holder(str(run_dir)) is None
    assert not (run_dir / 'done').exists()
    # the relaunch runs in this process (the local launcher's relaunch after a kill: test_sweep_trust.py)
    split = args.index('--')
    proc = run_py(args[:split] + ['--launcher', 'inprocess'] + args[split:])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = [json.loads(x) for x in (run_dir / 'results.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in recs if 'test_acc' not in r] == [1, 2, 3]
    assert 'resumed from' in (run_dir / 'train.log').read_text()


def test_sweep_never_starts_a_run_whose_folder_is_locked(tmp_path, monkeypatch):
    from experiments import sweep
    run_dir = tmp_path / 'baseline_var0.020_seed1'
    lock = RunLock(str(run_dir)).acquire()
    try:
        spec = {'name': 'baseline_var0.020_seed1', 'run_dir': str(run_dir), 'train': [], 'test': []}
        monkeypatch.setattr(subprocess, 'Popen', lambda *a, **k: pytest.fail('a locked run was started'))
        assert sweep.status(spec) == 'running'
        assert sweep.execute(spec).startswith(f'skipped (process {os.getpid()} is training')
    finally:
        lock.release()


# -- 4. resume with options that change the computation ------------------------------------------------

@pytest.mark.parametrize('extra,shown', [(['--dry_run'], 'dry_run=True'), (['--amp'], 'amp=True'),
                                         (['--no_channels_last'], 'channels_last=False')])
def test_resume_refuses_options_that_change_the_arithmetic(small_data_dir, tmp_path, extra, shown):
    runs = tmp_path / 'runs'
    base = ['--method', 'baseline', '--precision', 'fp32']  # fp32 on every machine; --amp then asks for bf16
    assert run_py(train_args(small_data_dir, runs, 'r', *base, '--max_step', 1)).returncode == 0
    proc = run_py(train_args(small_data_dir, runs, 'r', *base, '--max_step', 2, '--resume', *extra))
    assert_user_error(proc, 'cannot resume', shown)


def test_a_resumed_run_drops_its_done_marker_while_it_trains(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--max_step', 1)).returncode == 0
    assert (runs / 'r' / 'done').exists()
    proc = popen(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--max_step', 10000, '--resume'))
    try:
        wait_for(lambda: 'resumed from' in (runs / 'r' / 'train.log').read_text(), proc)
        assert not (runs / 'r' / 'done').exists()
    finally:
        proc.kill()
        proc.communicate()

