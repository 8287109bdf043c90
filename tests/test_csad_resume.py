"""Resume: CSAD's runs stopped by a signal and resumed end with the same weights, bit for bit, as runs that were
not stopped: csad inside an epoch, csad_base right after its phase switch, and csad inside its MI warm-up (which
stops within a batch). On a training set of 96 images in batches of 32 (three per pass), fp32. And a checkpoint
that lacks what a method needs to resume is refused in one line."""
import os
import signal

import pytest
import torch

import checkpoint
import run_folder
from conftest import SMALL_VAR, assert_user_error, fake_mnist, run_py, train_args
from dataset import colored_mnist
from methods import csad as methods_csad

COMMON = ['--precision', 'fp32', '--batch_size', '32', '--log_step', '1']
CSAD = ['--method', 'csad', '--max_step', '1', '--csad_bias_steps', '2', '--csad_mi_steps', '2'] + COMMON
BASE = ['--method', 'csad_base', '--csad_class_epochs', '1', '--max_step', '2'] + COMMON


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """(data folder, runs folder, csad's start options): a training set of 96 images and a csad_base run of
    one batch that csad starts from."""
    root = tmp_path_factory.mktemp('csad_resume')
    data = colored_mnist.generate(fake_mnist(96, 32), SMALL_VAR, seed=3)
    colored_mnist.save(data, colored_mnist.file_path(str(root / 'data'), SMALL_VAR))
    runs = root / 'runs'
    proc = run_py(train_args(root / 'data', runs, 'base', '--method', 'csad_base', '--dry_run', '--max_step', 1,
                             *COMMON))
    assert proc.returncode == 0, proc.stderr
    return root / 'data', runs, ['--use_pretrain', '--checkpoint', str(runs / 'base' / 'checkpoint_last.pth')]


@pytest.fixture(scope='module')
def straight(tiny):
    """An uninterrupted csad run: the MI warm-up (two passes) and one epoch."""
    data, runs, start = tiny
    proc = run_py(train_args(data, runs, 'straight', *CSAD, *start))
    assert proc.returncode == 0, proc.stderr
    return runs / 'straight'


def _train(tiny, name, *args):
    data, runs, _ = tiny
    return run_py(train_args(data, runs, name, *args))


def _state(run):
    ckpt = checkpoint.read_checkpoint(str(run / 'checkpoint_last.pth'))
    return {'net': ckpt['net_state_dict'], 'h': ckpt['h_state_dict'],
            **{f'optimizer {k}': o['state'] for k, o in ckpt['optimizers'].items()}}


def _assert_same_run(a, b):
    """Every weight, every optimiser moment and every record (but the epoch's time) equal."""
    sa, sb = _state(a), _state(b)
    for part in sa:
        flat_a, flat_b = _flatten(sa[part]), _flatten(sb[part])
        assert flat_a.keys() == flat_b.keys(), part
        for k in flat_a:
            assert torch.equal(flat_a[k], flat_b[k]), (part, k)
    records = [[{k: v for k, v in r.items() if k != 'epoch_time_s'} for r in run_folder.read_results(str(run))]
               for run in (a, b)]
    assert records[0] == records[1]


def _flatten(tree, prefix=''):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f'{prefix}{k}.'))
        return out
    return {prefix: torch.as_tensor(tree)}


def _interrupt_at(monkeypatch, cls, name, calls_before, sig=signal.SIGINT):
    """Patch ``cls.name`` to send ``sig`` to this process during its call number ``calls_before`` (counted from
    1); returns the list the calls are counted in."""
    original, calls = getattr(cls, name), []

    def patched(self, *a, **k):
        calls.append(name)
        if len(calls) == calls_before:
            os.kill(os.getpid(), sig)
        return original(self, *a, **k)
    monkeypatch.setattr(cls, name, patched)
    return calls


def test_csad_stopped_inside_its_first_epoch_resumes_bit_exactly(tiny, straight, monkeypatch):
    """SIGTERM during the second batch of epoch 1 (after the MI warm-up): the state after that batch is saved;
    the resumed run does not repeat the warm-up and ends as the straight run."""
    start = tiny[2]
    _interrupt_at(monkeypatch, methods_csad.CSAD, 'update', 2, signal.SIGTERM)
    assert _train(tiny, 'mid_epoch', *CSAD, *start).returncode == 130
    run = straight.parent / 'mid_epoch'
    assert checkpoint.read_checkpoint(str(run / 'checkpoint_epoch_0000_batch_00002.pth'))['progress']['pos'] == 2
    monkeypatch.undo()
    proc = _train(tiny, 'mid_epoch', *CSAD, *start, '--resume')
    assert proc.returncode == 0, proc.stderr
    _assert_same_run(straight, run)


def test_csad_base_stopped_right_after_its_phase_switch_resumes_bit_exactly(tiny, monkeypatch):
    """csad_base with one epoch of classification: SIGTERM during the first batch of epoch 2 (the first that
    trains the bias branch); the resumed run trains the bias branch too and ends as the straight run."""
    assert _train(tiny, 'base_straight', *BASE).returncode == 0
    _interrupt_at(monkeypatch, methods_csad.CSADBase, 'update', 4, signal.SIGTERM)
    assert _train(tiny, 'base_cut', *BASE).returncode == 130
    run = tiny[1] / 'base_cut'
    assert (run / 'checkpoint_epoch_0001_batch_00001.pth').exists()
    monkeypatch.undo()
    assert _train(tiny, 'base_cut', *BASE, '--resume').returncode == 0
    _assert_same_run(tiny[1] / 'base_straight', run)


def test_csad_stopped_inside_its_mi_warm_up_stops_within_a_batch_and_resumes_bit_exactly(tiny, straight,
                                                                                          monkeypatch):
    """Ctrl-C during the last batch of the warm-up's first pass: the run stops after that batch (no further MI
    step, no training batch) and saves where the warm-up is; resumed, it is stopped again during the second
    batch of the second pass, and resumed again: the warm-up goes on where it stopped each time (no batch
    repeated or skipped, the same batch order) and the run ends as the straight run."""
    start, run = tiny[2], straight.parent / 'warm_up'
    calls = _interrupt_at(monkeypatch, methods_csad.CSAD, 'mi_step', 3)
    updates = _interrupt_at(monkeypatch, methods_csad.CSAD, 'update', 0)
    assert _train(tiny, 'warm_up', *CSAD, *start).returncode == 130
    assert len(calls) == 3 and not updates  # stopped within the batch that was in hand
    saved = checkpoint.read_checkpoint(str(run / 'checkpoint_epoch_0000_batch_00000.pth'))
    assert saved['epoch'] == 0 and saved['progress']['before_epoch']['pass'] == 0
    assert saved['progress']['before_epoch']['pos'] == 3
    monkeypatch.undo()
    calls = _interrupt_at(monkeypatch, methods_csad.CSAD, 'mi_step', 2)
    proc = _train(tiny, 'warm_up', *CSAD, *start, '--resume')
    assert proc.returncode == 130, proc.stderr
    assert len(calls) == 2
    saved = checkpoint.read_checkpoint(str(run / 'checkpoint_epoch_0000_batch_00000.pth'))
    assert (saved['progress']['before_epoch']['pass'], saved['progress']['before_epoch']['pos']) == (1, 2)
    monkeypatch.undo()
    proc = _train(tiny, 'warm_up', *CSAD, *start, '--resume')
    assert proc.returncode == 0, proc.stderr
    assert 'the work before epoch 1: pass 2, batch 2' in (run / 'train.log').read_text()
    _assert_same_run(straight, run)


@pytest.mark.parametrize('field', ['h_state_dict', 'optimizers.h'])
def test_resume_of_a_checkpoint_without_what_the_method_needs_is_one_line(tiny, tmp_path, field):
    """LNL trains h: --resume of a checkpoint without h's weights (or its optimiser's state) names the field
    and the way to start from its weights instead (it was a KeyError)."""
    lnl = ['--method', 'lnl', '--dry_run', *COMMON]
    assert _train(tiny, f'lnl_{field}', *lnl, '--max_step', 1).returncode == 0
    ckpt = torch.load(tiny[1] / f'lnl_{field}' / 'checkpoint_last.pth', weights_only=True)
    if field == 'h_state_dict':
        del ckpt['h_state_dict']
    else:
        del ckpt['optimizers']['h']
    path = tmp_path / 'without.pth'
    torch.save(ckpt, path)
    proc = _train(tiny, f'lnl_{field}', *lnl, '--max_step', 2, '--resume', path)
    assert_user_error(proc, f'{path} lacks {field}', f'--use_pretrain --checkpoint {path}')
    assert proc.stderr.strip().splitlines()[-1].startswith(f'error: {path} lacks'), proc.stderr  # one line
