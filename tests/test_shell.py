"""train.sh and test.sh: their own --help, test.sh after BASELINE=pretrained or on runs not trained yet, the note on
the shipped baseline's seed. A stand-in interpreter records each call instead of running Python: nothing trains."""
import os
import subprocess

import pytest

from conftest import ROOT


@pytest.fixture
def shell(tmp_path):
    """Run ``bash SCRIPT ARGS`` with a stand-in $PYTHON that logs each call's arguments; returns (proc, calls)
    with calls a list of argument lists."""
    log = tmp_path / 'calls'
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\n{ echo CALL; printf "%s\\n" "$@"; } >> "$CALLS"\n')
    fake.chmod(0o755)

    def run(script, *args, **env):
        if log.exists():
            log.unlink()
        full = dict(os.environ, PYTHON=str(fake), CALLS=str(log), SAVE_DIR=str(tmp_path / 'runs'),
                    DATA_DIR=str(tmp_path / 'data'))
        full.update(env)
        for key in ('COLOR_VAR', 'SEED', 'BASELINE'):
            if key not in env:
                full.pop(key, None)
        proc = subprocess.run(['bash', os.path.join(ROOT, script), *args], capture_output=True, text=True,
                              env=full, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=60)
        text = log.read_text() if log.exists() else ''
        calls = [c.strip('\n').split('\n') for c in text.split('CALL\n')[1:]]
        return proc, calls
    return run


def _trained(tmp_path, name):
    (tmp_path / 'runs' / name).mkdir(parents=True)
    (tmp_path / 'runs' / name / 'checkpoint_last.pth').write_bytes(b'')


@pytest.mark.parametrize('flag', ['--help', '-h'])
def test_train_sh_help_is_its_own_and_starts_nothing(shell, tmp_path, flag):
    proc, calls = shell('train.sh', '--max_step', '2', flag)
    assert proc.returncode == 0 and calls == [], (proc.stderr, calls)
    for word in ('COLOR_VAR', 'SEED', 'BASELINE', 'pretrained', 'SAVE_DIR', 'Extra arguments', '--overwrite'):
        assert word in proc.stdout, word
    assert not (tmp_path / 'runs').exists()


def test_test_sh_help_shows_its_variables_and_test_py_help_once(shell):
    proc, calls = shell('test.sh', '--help')
    assert proc.returncode == 0, proc.stderr
    assert 'COLOR_VAR' in proc.stdout and 'SEED' in proc.stdout
    assert calls == [['test.py', '--help']]


def test_test_sh_after_baseline_pretrained_evaluates_the_lnl_run(shell, tmp_path):
    _trained(tmp_path, 'lnl_var0.020_seed1')  # what BASELINE=pretrained bash train.sh leaves: no baseline run
    proc, calls = shell('test.sh')
    assert proc.returncode == 0, proc.stderr
    assert [c[:3] for c in calls] == [['test.py', '-e', 'lnl_var0.020_seed1']]
    assert 'no baseline run' in proc.stderr
    _trained(tmp_path, 'baseline_var0.020_seed1')
    proc, calls = shell('test.sh', '--probe')
    assert [c[2] for c in calls] == ['baseline_var0.020_seed1', 'lnl_var0.020_seed1'] and calls[0][-1] == '--probe'


def test_test_sh_without_runs_hints_the_train_sh_command_of_its_variance_and_seed(shell):
    proc, calls = shell('test.sh', COLOR_VAR='0.035', SEED='2')
    assert proc.returncode != 0 and calls == []
    assert 'COLOR_VAR=0.035 SEED=2' in proc.stderr and 'bash train.sh' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_train_sh_says_the_shipped_baseline_is_seed_2(shell):
    proc, calls = shell('train.sh', '--max_step', '1', BASELINE='pretrained', SEED='3')
    assert proc.returncode == 0, proc.stderr
    (note,) = [ln for ln in proc.stderr.splitlines() if 'seed' in ln.lower()]
    assert 'SEED=3' in note and 'seed-2' in note and 'lnl_var0.020_seed3' in note
    assert calls and calls[0][calls[0].index('--seeds') + 1] == '3'
    proc, _ = shell('train.sh', '--max_step', '1', BASELINE='pretrained', SEED='2')
    assert 'seed-2' not in proc.stderr


@pytest.mark.parametrize('script', ['train.sh', 'test.sh'])
def test_a_colour_variance_with_more_decimals_is_refused_not_rounded(shell, script):
    proc, calls = shell(script, COLOR_VAR='0.0204')
    assert proc.returncode == 2 and calls == [], proc.stderr
    assert 'COLOR_VAR=0.0204 has more than three decimals' in proc.stderr and 'COLOR_VAR=0.020' in proc.stderr


def test_relative_paths_are_taken_from_the_current_folder(shell, tmp_path):
    """The scripts work from the repository folder; the user's relative paths mean the folder the command runs in."""
    proc, calls = shell('test.sh', 'mine.pth', DATA_DIR='data')
    assert proc.returncode == 0, proc.stderr
    assert calls == [['test.py', '--checkpoint', str(tmp_path / 'mine.pth'), '--data_dir', str(tmp_path / 'data')]]
    _trained(tmp_path, 'lnl_var0.020_seed1')
    proc, calls = shell('test.sh', SAVE_DIR='runs')
    assert proc.returncode == 0, proc.stderr
    assert calls[0][calls[0].index('--save_dir') + 1] == str(tmp_path / 'runs')
    proc, calls = shell('train.sh', '--max_step', '1', SAVE_DIR='runs', DATA_DIR='data')
    assert proc.returncode == 0, proc.stderr
    assert calls[0][calls[0].index('--out') + 1] == str(tmp_path / 'runs')
    assert calls[0][calls[0].index('--data_dir') + 1] == str(tmp_path / 'data')
