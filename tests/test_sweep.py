"""experiments.sweep with its launchers, relaunching, and experiments.collect_results on what it produced."""
import json
import os

import pytest

from conftest import assert_user_error, run_py
from experiments import sweep
from experiments.sweep import cli, devices, launchers, runner
from utils import UserError


def _sweep(small_data_dir, out, launcher, *extra, methods=('baseline', 'lnl')):
    return run_py(['-m', 'experiments.sweep', '--color_vars', '0.020', '--methods', *methods, '--seeds', '1',
                   '--out', out, '--data_dir', small_data_dir, '--launcher', launcher, *extra,
                   '--', '--dry_run', '--max_step', '2'], timeout=600)


@pytest.mark.slow
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


@pytest.mark.slow
def test_submitit_local_executor(small_data_dir, tmp_path):
    pytest.importorskip('submitit')
    out = tmp_path / 'sweep'
    proc = _sweep(small_data_dir, out, 'submitit_local', '--no_probe', methods=('baseline',))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / 'baseline_var0.020_seed1' / 'done').exists()
    assert os.path.isdir(out / '_submitit')


def _concurrency(first_wave):
    """A stand-in for ``execute`` that records, for every run, the runs running with it and their
    CUDA_VISIBLE_DEVICES. The first ``first_wave`` runs wait for each other (a barrier: they run at once, or
    the barrier breaks and they fail), so that runs overlap as much as the launcher lets them; no sleep."""
    import threading
    lock, running, seen = threading.Lock(), {}, []
    barrier, calls = threading.Barrier(first_wave, timeout=60), [0]

    def fake_execute(spec, env=None, **kwargs):
        with lock:
            calls[0] += 1
            wave = calls[0] <= first_wave
            device = (env or {}).get('CUDA_VISIBLE_DEVICES')
            running[spec['name']] = device
            seen.append({'name': spec['name'], 'device': device, 'with': dict(running), 'train': spec['train']})
        try:
            if wave:
                barrier.wait()
        finally:
            with lock:
                del running[spec['name']]
        return 'finished'
    return fake_execute, seen


def test_multi_gpu_launcher_assigns_one_device_per_run(tmp_path, monkeypatch):
    fake_execute, seen = _concurrency(first_wave=2)
    monkeypatch.setattr(runner, 'execute', fake_execute)
    monkeypatch.setattr(devices, 'visible_gpus', lambda: ['0', '1'])
    monkeypatch.setattr('dataset.colored_mnist.ensure', lambda *a, **k: None)
    res = sweep.main(['--color_vars', '0.020', '0.030', '--seeds', '1', '2', '--out', str(tmp_path / 's'),
                      '--launcher', 'multi_gpu'])
    assert len(res) == 16 and set(res.values()) == {'finished'}, res
    # two runs at once (the first two met at the barrier), never two on one GPU, and both GPUs used
    assert max(len(s['with']) for s in seen) == 2
    for s in seen:
        assert sorted(s['with'].values()) == sorted(set(s['with'].values())), s['with']
    assert {s['device'] for s in seen} == {'0', '1'}
    names = [s['name'] for s in seen]
    # every LNL and BlindEye run starts after the baseline it starts from
    for name in names:
        if name.startswith(('lnl', 'blindeye')):
            assert names.index('baseline' + name[name.index('_var'):]) < names.index(name)


def test_local_runs_at_once_gives_each_slot_its_own_gpu(tmp_path, monkeypatch):
    """On a machine with GPUs, --runs_at_once K deals them round-robin to the K slots; without, the runs'
    environment is left alone."""
    monkeypatch.setattr(cli, 'usable_cores', lambda: 4)
    monkeypatch.setattr(launchers, 'usable_cores', lambda: 4)
    monkeypatch.setattr('dataset.colored_mnist.ensure', lambda *a, **k: None)
    argv = ['--color_vars', '0.020', '--methods', 'baseline', 'gray', '--seeds', '1', '2', '3']
    for gpus, k, used in ((['3', '5'], 2, {'3', '5'}), (['3', '5'], 4, {'3', '5'}), ([], 2, {None})):
        fake_execute, seen = _concurrency(first_wave=k)
        monkeypatch.setattr(runner, 'execute', fake_execute)
        monkeypatch.setattr(devices, 'visible_gpus', lambda gpus=gpus: gpus)
        res = sweep.main(argv + ['--out', str(tmp_path / f's{k}{len(gpus)}'), '--runs_at_once', str(k)])
        assert set(res.values()) == {'finished'} and len(res) == 6, res
        assert {s['device'] for s in seen} == used and max(len(s['with']) for s in seen) == k
        if gpus and k == len(gpus):  # as many slots as GPUs: no two runs at once on one GPU
            for s in seen:
                assert sorted(s['with'].values()) == sorted(set(s['with'].values())), s['with']
        if gpus and k > len(gpus):  # more slots than GPUs: the GPUs are shared evenly
            assert sorted(s['device'] for s in seen[:k]) == sorted(gpus * (k // len(gpus)))


def test_sweep_needs_baseline_for_pretrained_methods(tmp_path):
    proc = run_py(['-m', 'experiments.sweep', '--methods', 'lnl', '--out', tmp_path, '--seeds', '1'])
    assert_user_error(proc, 'add baseline to --methods')


def test_unlearn_max_step_sets_the_epochs_of_the_runs_from_a_baseline(tmp_path, monkeypatch):
    from option import get_option
    seen = {}

    def fake_execute(spec, **kwargs):
        seen[spec['method']] = get_option(spec['train'])
        return 'finished'
    monkeypatch.setattr(runner, 'execute', fake_execute)
    monkeypatch.setattr('dataset.colored_mnist.ensure', lambda *a, **k: None)
    sweep.main(['--color_vars', '0.020', '--seeds', '1', '--out', str(tmp_path / 's'), '--unlearn_max_step', '12',
                '--', '--max_step', '20', '--lr_decay_period', '15'])
    assert {m: o.max_step for m, o in seen.items()} == {'baseline': 20, 'gray': 20, 'lnl': 12, 'blindeye': 12}
    assert {o.lr_decay_period for o in seen.values()} == {15}
    assert seen['lnl'].lr == 0.001 and seen['baseline'].lr == 0.01


@pytest.mark.parametrize('k', [1, 2])
def test_runs_at_once_runs_k_at_a_time_with_the_cores_split(tmp_path, monkeypatch, k):
    fake_execute, seen = _concurrency(first_wave=k)
    monkeypatch.setattr(runner, 'execute', fake_execute)
    monkeypatch.setattr(cli, 'usable_cores', lambda: 2)
    monkeypatch.setattr(launchers, 'usable_cores', lambda: 2)
    monkeypatch.setattr(devices, 'visible_gpus', lambda: [])
    monkeypatch.setattr('dataset.colored_mnist.ensure', lambda *a, **k: None)
    slots, launch_slots = [], launchers.launch_slots

    def recording_launch_slots(phases, bar, args, given):
        slots.append(given)
        return launch_slots(phases, bar, args, given)
    monkeypatch.setattr(launchers, 'launch_slots', recording_launch_slots)
    res = sweep.main(['--color_vars', '0.020', '--methods', 'baseline', 'lnl', '--seeds', '1', '2', '3', '4',
                      '--out', str(tmp_path / 's'), '--runs_at_once', str(k)])
    assert len(res) == 8 and set(res.values()) == {'finished'}, res
    # k runs at once (the first k met at the barrier), never more: k slots (one run each at a time), and no
    # run saw more than k running
    assert [len(given) for given in slots] == ([] if k == 1 else [k])
    assert max(len(s['with']) for s in seen) == k

    def threads(s):
        return s['train'][s['train'].index('--threads') + 1] if '--threads' in s['train'] else None
    assert {threads(s) for s in seen} == ({None} if k == 1 else {str(2 // k)})
    names = [s['name'] for s in seen]
    for seed in range(1, 5):  # every LNL starts after its own baseline
        assert names.index(f'baseline_var0.020_seed{seed}') < names.index(f'lnl_var0.020_seed{seed}')
    # --threads given to train.py wins over the split
    fake_execute, seen = _concurrency(first_wave=2)
    monkeypatch.setattr(runner, 'execute', fake_execute)
    sweep.main(['--color_vars', '0.020', '--methods', 'baseline', '--seeds', '1', '2', '--out', str(tmp_path / 't'),
                '--runs_at_once', '2', '--', '--threads', '1'])
    assert {threads(s) for s in seen} == {'1'}


def test_a_run_waits_for_its_own_base_not_for_every_base(tmp_path, monkeypatch):
    """With two slots, seed 2's baseline ends only once seed 1's LNL has started: seed 1's LNL trains while
    seed 2's baseline does (a launcher that waits for every baseline would leave that baseline waiting), and
    no LNL starts before its own baseline ends."""
    import threading
    lock, events, lnl1_started = threading.Lock(), [], threading.Event()

    def fake_execute(spec, env=None, **kwargs):
        with lock:
            events.append(('start', spec['name']))
        if spec['name'] == 'lnl_var0.020_seed1':
            lnl1_started.set()
        ok = lnl1_started.wait(timeout=60) if spec['name'] == 'baseline_var0.020_seed2' else True
        with lock:
            events.append(('end', spec['name']))
        return 'finished' if ok else 'failed (seed 1\'s LNL did not start while this baseline trained)'
    monkeypatch.setattr(runner, 'execute', fake_execute)
    monkeypatch.setattr(cli, 'usable_cores', lambda: 2)
    monkeypatch.setattr(launchers, 'usable_cores', lambda: 2)
    monkeypatch.setattr(devices, 'visible_gpus', lambda: [])
    monkeypatch.setattr('dataset.colored_mnist.ensure', lambda *a, **k: None)
    res = sweep.main(['--color_vars', '0.020', '--methods', 'baseline', 'lnl', '--seeds', '1', '2',
                      '--out', str(tmp_path / 's'), '--runs_at_once', '2'])
    assert set(res.values()) == {'finished'} and len(res) == 4, res
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


def test_the_sweep_process_never_initialises_cuda(tmp_path, monkeypatch):
    """Listing runs, comparing a run with a request for --precision auto and handing out slots ask nothing of
    torch.cuda in the sweep's process (a CUDA context there would hold GPU memory for the whole sweep)."""
    import torch
    from utils import cpu_features, NATIVE_BF16_CPU_FLAGS

    def no_cuda(*a, **k):
        raise RuntimeError('the sweep process asked torch.cuda')
    for name in ('is_available', 'device_count', 'get_device_capability', 'get_device_properties', 'init',
                 '_lazy_init', 'current_device', 'is_bf16_supported', 'get_device_name'):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    devices._query.cache_clear()
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    monkeypatch.setattr('dataset.colored_mnist.ensure', lambda *a, **k: None)
    out = tmp_path / 's'
    run = out / 'baseline_var0.020_seed1'
    run.mkdir(parents=True)
    (run / 'options.json').write_text(json.dumps({'method': 'baseline', 'precision': 'bf16', 'amp': True,
                                                  'precision_requested': 'bf16', 'max_step': 2}))
    argv = ['--color_vars', '0.020', '--methods', 'baseline', '--seeds', '1', '--out', str(out)]
    assert sweep.main(argv + ['--list']) == {}
    spec = sweep.make_specs(sweep.parse(argv + ['--', '--max_step', '2']))[0]
    diffs, extend = sweep.differences(spec)  # the run asked for bf16, the request for auto
    auto = devices.auto_precision()
    assert (('precision', 'bf16', auto) in diffs) == (auto != 'bf16') and not extend
    if not devices.cuda_possible():  # a CPU host: auto is what the CPU computes natively
        assert auto == ('bf16' if set(NATIVE_BF16_CPU_FLAGS) & cpu_features() else 'fp32')
        assert devices.visible_gpus() == []
    seen = []
    monkeypatch.setattr(runner, 'execute', lambda spec, env=None, **k: seen.append(env) or 'finished')
    monkeypatch.setattr(cli, 'usable_cores', lambda: 2)
    assert set(sweep.main(argv + ['--seeds', '1', '2', '--runs_at_once', '2']).values()) == {'finished'}
    assert len(seen) == 2


def test_cuda_is_asked_in_a_child_process(monkeypatch):
    """Where a GPU may exist, the devices and their bfloat16 support come from a child process (on a machine
    without one it finds none); CUDA_VISIBLE_DEVICES, when set, is the list of GPUs to hand out."""
    import torch
    available = torch.cuda.is_available()  # asked here by the test, before this process's CUDA is closed off

    def no_cuda(*a, **k):
        raise RuntimeError('the sweep process asked torch.cuda')
    for name in ('device_count', 'init', '_lazy_init', 'get_device_capability', 'is_bf16_supported'):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    children, real_run = [], devices.subprocess.run

    def run(cmd, *a, **k):
        children.append(cmd)
        return real_run(cmd, *a, **k)
    monkeypatch.setattr(devices.subprocess, 'run', run)
    devices._query.cache_clear()
    monkeypatch.setattr(devices, 'cuda_possible', lambda: True)
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    flags = devices.cuda_bf16()
    assert [cmd[-1] for cmd in children] == [devices._QUERY], children  # asked once, of a child process
    assert isinstance(flags, tuple) and all(isinstance(f, bool) for f in flags)
    assert devices.visible_gpus() == list(range(len(flags))) and len(children) == 1  # once per sweep
    if not available:
        assert flags == ()
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,3')
    assert devices.visible_gpus() == ['2', '3']
    devices._query.cache_clear()


def test_the_in_process_steps_do_not_import_the_entry_scripts_as_modules():
    """The in-process launcher runs train.py's and test.py's main from their files: no module named train or test
    (test.py's name would shadow other modules of that name) is imported by the sweep."""
    from conftest import run_subprocess
    code = ('import sys\nfrom experiments.sweep import runner\n'
            'mains = [runner.script_main(s) for s in ("train.py", "test.py")]\n'
            'assert all(callable(m) for m in mains)\n'
            'print(sorted(m for m in ("train", "test") if m in sys.modules))\n')
    proc = run_subprocess(['-c', code])
    assert proc.returncode == 0 and proc.stdout.strip() == '[]', proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_packed_sweep_trains_each_method_as_packs_and_resumes_them(small_data_dir, tmp_path, monkeypatch):
    """--pack 2: the two seeds of each method train as one pack (the LNL pack after the baseline pack it starts
    from), each into its own run folder, evaluated by test.py in the pack's process; a relaunch resumes an unfinished
    pack as one (the command it starts is checked here; test_pack.py checks that train_pack.py resumes such a pack
    exactly)."""
    out = tmp_path / 'sweep'
    args = ['-m', 'experiments.sweep', '--color_vars', '0.020', '--methods', 'baseline', 'lnl', '--seeds', '1', '2',
            '--out', out, '--data_dir', small_data_dir, '--launcher', 'local', '--pack', '2', '--pack_on_cpu',
            '--no_probe', '--', '--dry_run', '--max_step', '1']
    from experiments.sweep import runner
    children, real_child = [], runner.run_child

    def run_child(cmd, *a, **k):
        children.append(cmd)
        return real_child(cmd, *a, **k)
    monkeypatch.setattr(runner, 'run_child', run_child)
    proc = run_py(args, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(children) == 2, children  # a pack trains and evaluates its runs in one process
    names = [f'{m}_var0.020_seed{s}' for m in ('baseline', 'lnl') for s in (1, 2)]
    for name in names:
        assert f'finished   {name}' in proc.stdout, proc.stdout
        opts = json.loads((out / name / 'options.json').read_text())
        assert opts['pack'] == 2
        last = [json.loads(x) for x in (out / name / 'results.jsonl').read_text().splitlines()][-1]
        assert 'test_acc' in last
    assert 'train_pack.py' in (out / 'lnl_var0.020_seed1' / 'sweep.log').read_text()
    assert 'trained in a pack of 2' in (out / 'lnl_var0.020_seed2' / 'sweep.log').read_text()
    for name in names[2:]:  # an unfinished pack: both runs resume, together
        os.remove(out / name / 'done')
    started = []

    def run_child_steps(steps, log, env=None, show=False, tests=None):  # steps and tests that succeed
        started.extend(steps + [step for step, _ in tests or []])
        return (steps[-1][0], 0) if tests is None else ((steps[-1][0], 0), [0] * len(tests))
    monkeypatch.setattr(runner, 'run_child_steps', run_child_steps)
    proc = run_py(args, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(f'finished   {n}' in proc.stdout for n in names[2:]) and 'skipped    baseline' in proc.stdout
    assert [step[0] for step in started] == ['train_pack.py', 'test.py', 'test.py'], started
    assert ' '.join(started[0]).count('--resume') == 2, started[0]  # the pack resumes as one


def test_pack_on_a_cpu_trains_one_by_one_and_refusals(tmp_path):
    args = cli.parse(['--out', str(tmp_path), '--pack', '4', '--', '--device', 'cpu'])
    assert args.pack == 1
    assert cli.parse(['--out', str(tmp_path), '--pack', '4', '--pack_on_cpu', '--', '--device', 'cpu']).pack == 4
    for extra, message in ((['--launcher', 'slurm'], 'goes with --launcher local'),
                           (['--methods', 'csad_base'], 'does not train packed')):
        with pytest.raises(UserError, match=message):
            cli.parse(['--out', str(tmp_path), '--pack', '2', '--pack_on_cpu', *extra])
