"""The sweep's runs that start from another, through the real ``execute``: a start in another sweep's folder
(--base_dir) waits for no run of this sweep, a base that fails leaves its runs unstarted while the others
finish, and an exception inside one run is that run's failure, not the sweep's end."""
import json
import threading

import pytest

from conftest import run_py
from experiments.sweep import cli, devices, launchers, runner

TRAIN = ['--', '--dry_run', '--max_step', '1', '--no_generate']


def _sweep(data_dir, out, *extra):
    return run_py(['-m', 'experiments.sweep', '--color_vars', '0.020', '--seeds', '1', '--data_dir', data_dir,
                   '--out', out, '--no_probe', *extra, *TRAIN])


def _lines(proc):
    """{run name: its result line} of the sweep's summary."""
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.rsplit(' ', 1)
        if len(parts) == 2 and '_var' in parts[1]:
            out[parts[1]] = parts[0].strip()
    return out


@pytest.fixture
def two_slots(monkeypatch):
    """Two runs at once whatever the machine's cores, no GPU, and a stand-in for test.py's child process
    (an evaluation that succeeds: what these tests check happens before it; training runs for real)."""
    monkeypatch.setattr(cli, 'usable_cores', lambda: 2)
    monkeypatch.setattr(launchers, 'usable_cores', lambda: 2)
    monkeypatch.setattr(devices, 'visible_gpus', lambda: [])
    real_steps = runner.run_child_steps

    def run_child_steps(steps, log, env=None, show=False):
        steps = [step for step in steps if step[0] != 'test.py']
        return real_steps(steps, log, env, show) if steps else ('test.py', 0)
    monkeypatch.setattr(runner, 'run_child_steps', run_child_steps)


def test_a_start_in_base_dir_waits_for_no_run_of_this_sweep(small_data_dir, tmp_path, monkeypatch, two_slots):
    """This sweep trains a baseline of the same name as the one in --base_dir that its LNL starts from: the LNL
    starts from the finished one in --base_dir at once, without waiting for this sweep's baseline (a stand-in that
    ends only once the LNL has started; a launcher that told runs apart by name would have the LNL wait for it)."""
    bases, out = tmp_path / 'bases', tmp_path / 'sweep'
    proc = _sweep(small_data_dir, bases, '--methods', 'baseline', '--launcher', 'inprocess')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    real, lnl_started = runner.execute, threading.Event()

    def execute(spec, **kwargs):
        if spec['run_dir'] == str(out / 'baseline_var0.020_seed1'):
            started = lnl_started.wait(timeout=60)
            return 'finished' if started else 'failed (the LNL waited for this run, not for its start in --base_dir)'
        lnl_started.set()
        return real(spec, **kwargs)
    monkeypatch.setattr(runner, 'execute', execute)
    proc = _sweep(small_data_dir, out, '--methods', 'baseline', 'lnl', '--base_dir', bases, '--runs_at_once', 2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _lines(proc) == {'baseline_var0.020_seed1': 'finished', 'lnl_var0.020_seed1': 'finished'}, proc.stdout
    opts = json.loads((out / 'lnl_var0.020_seed1' / 'options.json').read_text())
    assert opts['use_pretrain'] and opts['checkpoint'].startswith(str(bases / 'baseline_var0.020_seed1'))


def test_a_failing_base_leaves_its_runs_unstarted_and_the_others_finish(small_data_dir, tmp_path, monkeypatch,
                                                                      two_slots):
    out = tmp_path / 'sweep'
    real_steps = runner.run_child_steps

    def run_child_steps(steps, log, env=None, show=False):  # the baseline's training fails; the other runs train
        script, *args = steps[0]
        if script == 'train.py' and args[args.index('--method') + 1] == 'baseline':
            log.write('stand-in: the training fails\n')
            return script, 1
        return real_steps(steps, log, env, show)
    monkeypatch.setattr(runner, 'run_child_steps', run_child_steps)
    proc = _sweep(small_data_dir, out, '--methods', 'baseline', 'lnl', 'blindeye', 'gray', '--runs_at_once', 2)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = _lines(proc)
    assert lines['baseline_var0.020_seed1'].startswith('failed (train.py exit 1'), proc.stdout
    for m in ('lnl', 'blindeye'):
        assert lines[f'{m}_var0.020_seed1'].startswith('not started (baseline_var0.020_seed1 is not finished'), \
            proc.stdout
        assert not (out / f'{m}_var0.020_seed1' / 'options.json').exists()
    assert lines['gray_var0.020_seed1'] == 'finished' and (out / 'gray_var0.020_seed1' / 'done').exists()
    assert proc.stdout.splitlines()[-1].startswith('4 runs in ') and ', 3 failed;' in proc.stdout.splitlines()[-1]


@pytest.mark.parametrize('k', [1, 2])
def test_an_exception_in_a_run_is_that_runs_failure_and_the_sweep_goes_on(small_data_dir, tmp_path, monkeypatch,
                                                                         two_slots, k):
    real = runner.execute

    def execute(spec, **kwargs):
        if spec['method'] == 'baseline':
            raise RuntimeError('the disk went away\nmore detail')
        return real(spec, **kwargs)
    monkeypatch.setattr(runner, 'execute', execute)
    monkeypatch.setattr(runner, 'run_child_steps', lambda steps, *a, **k: (steps[-1][0], 0))  # steps that succeed
    proc = _sweep(small_data_dir, tmp_path / 'sweep', '--methods', 'baseline', 'lnl', 'gray', '--runs_at_once', k)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stdout + proc.stderr
    lines = _lines(proc)
    assert lines['baseline_var0.020_seed1'] == 'failed (RuntimeError: the disk went away)', proc.stdout
    assert lines['lnl_var0.020_seed1'].startswith('not started (baseline_var0.020_seed1 is not finished')
    assert lines['gray_var0.020_seed1'] == 'finished'
    assert proc.stdout.splitlines()[-1].startswith('3 runs in ') and ', 2 failed;' in proc.stdout.splitlines()[-1]


@pytest.mark.parametrize('k', [1, 2])
def test_the_caller_hears_of_each_run_as_it_ends(small_data_dir, tmp_path, monkeypatch, two_slots, capsys, k):
    """sweep.main(on_run_end=...) is told of each run as it ends (the campaign copies its records then, not when the
    whole sweep ends); an error of the caller's is one line, and the runs and the sweep go on."""
    ended = []
    monkeypatch.setattr(runner, 'guarded', lambda spec, **kwargs: 'finished')

    def on_run_end(done):
        ended.append(dict(done))
        if len(ended) == 1:
            raise OSError('no space left')
    results = cli.main(['--color_vars', '0.020', '--seeds', '1', '2', '--methods', 'baseline', 'gray', '--out',
                        str(tmp_path / 'sweep'), '--data_dir', str(small_data_dir), '--runs_at_once', str(k)],
                       on_run_end=on_run_end)
    assert len(ended) == 4 and all(len(d) == 1 for d in ended)
    assert {n: s for d in ended for n, s in d.items()} == results == {
        f'{m}_var0.020_seed{s}': 'finished' for m in ('baseline', 'gray') for s in (1, 2)}
    err = capsys.readouterr().err
    lines = [ln.split('\r')[-1] for ln in err.splitlines() if 'sweep: after' in ln]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith('sweep: after'), err  # a line of its own, not inside the progress bar's
    assert line.endswith(': OSError: no space left') and next(iter(ended[0])) in line
