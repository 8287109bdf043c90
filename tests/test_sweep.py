"""experiments.sweep with its launchers, relaunching, and experiments.collect_results on what it produced."""
import json
import os

import pytest

from conftest import assert_user_error, run_py
from experiments import sweep


def _sweep(small_data_dir, out, launcher, *extra, methods=('baseline', 'lnl')):
    return run_py(['-m', 'experiments.sweep', '--color_vars', '0.020', '--methods', *methods, '--seeds', '1',
                   '--out', out, '--data_dir', small_data_dir, '--launcher', launcher, *extra,
                   '--', '--dry_run', '--max_step', '2'], timeout=600)


def test_local_sweep_relaunch_and_collect(small_data_dir, tmp_path):
    out = tmp_path / 'sweep'
    proc = _sweep(small_data_dir, out, 'local', methods=('baseline',))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(os.listdir(out)) == ['baseline_var0.020_seed1']
    last = [json.loads(x) for x in (out / 'baseline_var0.020_seed1' / 'results.jsonl').read_text().splitlines()][-1]
    assert 'test_acc' in last and 'probe_color_acc' in last

    # a relaunch skips finished runs; a half-finished one (no done marker) is resumed (the relaunches run in
    # this process: the local launcher's relaunch and resume after a kill are tested in test_sweep_trust.py)
    proc = _sweep(small_data_dir, out, 'inprocess', methods=('baseline',))
    assert proc.returncode == 0 and 'skipped    baseline_var0.020_seed1' in proc.stdout, proc.stderr
    os.remove(out / 'baseline_var0.020_seed1' / 'done')
    proc = _sweep(small_data_dir, out, 'inprocess', methods=('baseline',))
    assert proc.returncode == 0, proc.stderr
    assert 'finished   baseline_var0.020_seed1' in proc.stdout
    assert 'resumed from' in (out / 'baseline_var0.020_seed1' / 'train.log').read_text()

    proc = run_py(['-m', 'experiments.collect_results', out])
    assert proc.returncode == 0, proc.stderr
    assert '[paper 0.4055]' in proc.stdout and '[paper 0.8185]' in proc.stdout
    for name in ('fig4.md', 'fig4.csv', 'fig4.png'):
        assert (out / name).exists()
    assert (out / 'fig4.png').read_bytes()[:4] == b'\x89PNG'


def test_submitit_local_executor(small_data_dir, tmp_path):
    pytest.importorskip('submitit')
    out = tmp_path / 'sweep'
    proc = _sweep(small_data_dir, out, 'submitit_local', '--no_probe', methods=('baseline',))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / 'baseline_var0.020_seed1' / 'done').exists()
    assert os.path.isdir(out / '_submitit')


def test_multi_gpu_launcher_assigns_one_device_per_run(small_data_dir, tmp_path, monkeypatch):
    seen = []

    def fake_execute(spec, env=None, **kwargs):
        seen.append((spec['name'], env['CUDA_VISIBLE_DEVICES']))
        return 'finished'
    monkeypatch.setattr(sweep, 'execute', fake_execute)
    monkeypatch.setattr(sweep, 'visible_gpus', lambda: ['0', '1'])
    monkeypatch.setattr('dataset.colored_mnist.ensure', lambda *a, **k: None)
    res = sweep.main(['--color_vars', '0.020', '0.030', '--seeds', '1', '2', '--out', str(tmp_path / 's'),
                      '--launcher', 'multi_gpu'])
    assert len(res) == 16 and {gpu for _, gpu in seen} <= {'0', '1'}
    names = [n for n, _ in seen]
    # every LNL and BlindEye run starts after the baseline it starts from
    for name in names:
        if name.startswith(('lnl', 'blindeye')):
            assert names.index('baseline' + name[name.index('_var'):]) < names.index(name)


def test_sweep_needs_baseline_for_pretrained_methods(tmp_path):
    proc = run_py(['-m', 'experiments.sweep', '--methods', 'lnl', '--out', tmp_path, '--seeds', '1'])
    assert_user_error(proc, 'add baseline to --methods')


def test_unlearn_max_step_sets_the_epochs_of_the_runs_from_a_baseline(tmp_path, monkeypatch):
    from option import get_option
    seen = {}

    def fake_execute(spec, **kwargs):
        seen[spec['method']] = get_option(spec['train'])
        return 'finished'
    monkeypatch.setattr(sweep, 'execute', fake_execute)
    monkeypatch.setattr('dataset.colored_mnist.ensure', lambda *a, **k: None)
    sweep.main(['--color_vars', '0.020', '--seeds', '1', '--out', str(tmp_path / 's'), '--unlearn_max_step', '12',
                '--', '--max_step', '20', '--lr_decay_period', '15'])
    assert {m: o.max_step for m, o in seen.items()} == {'baseline': 20, 'gray': 20, 'lnl': 12, 'blindeye': 12}
    assert {o.lr_decay_period for o in seen.values()} == {15}
    assert seen['lnl'].lr == 0.001 and seen['baseline'].lr == 0.01


@pytest.mark.parametrize('k', [1, 2])
def test_runs_at_once_runs_k_at_a_time_with_the_cores_split(tmp_path, monkeypatch, k):
    import threading
    import time
    if sweep.usable_cores() < 2:
        pytest.skip('needs two cores')
    lock, running, seen = threading.Lock(), [0], []

    def fake_execute(spec, env=None, **kwargs):
        with lock:
            running[0] += 1
            seen.append((spec['name'], running[0], spec['train'][spec['train'].index('--threads') + 1]
                         if '--threads' in spec['train'] else None))
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return 'finished'
    monkeypatch.setattr(sweep, 'execute', fake_execute)
    monkeypatch.setattr('dataset.colored_mnist.ensure', lambda *a, **k: None)
    res = sweep.main(['--color_vars', '0.020', '--methods', 'baseline', 'lnl', '--seeds', '1', '2', '3', '4',
                      '--out', str(tmp_path / 's'), '--runs_at_once', str(k)])
    assert len(res) == 8
    assert max(n for _, n, _ in seen) == k  # k runs at once, never more
    assert {t for _, _, t in seen} == ({None} if k == 1 else {str(sweep.usable_cores() // k)})
    names = [n for n, _, _ in seen]
    for seed in range(1, 5):  # every LNL starts after its own baseline
        assert names.index(f'baseline_var0.020_seed{seed}') < names.index(f'lnl_var0.020_seed{seed}')
    # --threads given to train.py wins over the split
    seen.clear()
    sweep.main(['--color_vars', '0.020', '--methods', 'baseline', '--seeds', '1', '2', '--out', str(tmp_path / 't'),
                '--runs_at_once', '2', '--', '--threads', '2'])
    assert {t for _, _, t in seen} == {'2'}


def test_a_run_waits_for_its_own_base_not_for_every_base(tmp_path, monkeypatch):
    """With two slots, seed 1's baseline quick and seed 2's slow: seed 1's LNL trains while seed 2's baseline
    does (before, the slot idled until every baseline had finished), and never before its own baseline ends."""
    import threading
    import time
    if sweep.usable_cores() < 2:
        pytest.skip('needs two cores')
    lock, events = threading.Lock(), []

    def fake_execute(spec, env=None, **kwargs):
        with lock:
            events.append(('start', spec['name']))
        time.sleep(1.0 if spec['name'] == 'baseline_var0.020_seed2' else 0.1)
        with lock:
            events.append(('end', spec['name']))
        return 'finished'
    monkeypatch.setattr(sweep, 'execute', fake_execute)
    monkeypatch.setattr('dataset.colored_mnist.ensure', lambda *a, **k: None)
    res = sweep.main(['--color_vars', '0.020', '--methods', 'baseline', 'lnl', '--seeds', '1', '2',
                      '--out', str(tmp_path / 's'), '--runs_at_once', '2'])
    assert set(res.values()) == {'finished'} and len(res) == 4
    at = {e: i for i, e in enumerate(events)}
    assert at[('start', 'lnl_var0.020_seed1')] < at[('end', 'baseline_var0.020_seed2')]
    for seed in (1, 2):
        assert at[('end', f'baseline_var0.020_seed{seed}')] < at[('start', f'lnl_var0.020_seed{seed}')]


def test_runs_at_once_refusals(tmp_path):
    base = ['-m', 'experiments.sweep', '--methods', 'baseline', '--out', tmp_path, '--seeds', '1']
    assert_user_error(run_py(base + ['--runs_at_once', '999']), 'each run needs a core of its own')
    assert_user_error(run_py(base + ['--runs_at_once', '2', '--show_output']), 'drop it with --runs_at_once')
    assert_user_error(run_py(base + ['--runs_at_once', '2', '--launcher', 'slurm']), 'goes with --launcher local')


def test_throughput_table():
    from benchmarks.throughput import summarise
    header, rows = summarise([{'k': 1, 'threads_per_run': 2, 'runs': 4, 'wall_s': 200.0,
                               'epoch_s': {'baseline': 10.0, 'lnl': 40.0}},
                              {'k': 2, 'threads_per_run': 1, 'runs': 4, 'wall_s': 125.0,
                               'epoch_s': {'baseline': 16.0, 'lnl': 50.0}}])
    assert rows[1][4] == '1.60x' and rows[0][4] == '1.00x'
    assert rows[1][-2:] == ['450', '144'] and rows[0][-2:] == ['360', '90']  # K x 3600 / epoch time
