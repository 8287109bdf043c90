"""experiments.campaign: a step trains what is not committed and copies records and the baseline's weights into
the repository folders; on another machine (an empty --out) the relaunch skips the committed runs and starts LNL
from the committed baseline weights."""
import json

import pytest

from conftest import run_py


def campaign(out, records, weights, data_dir, *extra, methods=('baseline', 'lnl')):
    return run_py(['-m', 'experiments.campaign', '--out', out, '--records', records, '--weights', weights,
                   '--data_dir', data_dir, '--color_vars', '0.020', '--seeds', '1', '--methods', *methods,
                   *extra, '--', '--max_step', '1', '--no_monitor_test'], timeout=600)


@pytest.mark.slow
def test_a_campaign_moves_to_another_machine_with_its_committed_records_and_weights(small_data_dir, tmp_path):
    records, weights = tmp_path / 'repo' / 'records', tmp_path / 'repo' / 'weights'
    # the first machine finishes the baseline; the move comes before its LNL reached the repository
    first = campaign(tmp_path / 'machine1', records, weights, small_data_dir, methods=('baseline',))
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(p.name for p in records.iterdir()) == ['baseline_var0.020_seed1']
    assert 'baseline_var0.020_seed1.pth' in json.loads((weights / 'provenance.json').read_text())['files']

    # another machine: an empty --out, the repository's records and weights
    listed = campaign(tmp_path / 'machine2', records, weights, small_data_dir, '--list')
    assert 'to train: lnl' in listed.stdout and 'baseline' not in listed.stdout.split('to train:')[1]
    second = campaign(tmp_path / 'machine2', records, weights, small_data_dir)
    assert second.returncode == 0, second.stdout + second.stderr
    assert not (tmp_path / 'machine2' / 'baseline_var0.020_seed1').exists()  # not trained again
    opts = json.loads((records / 'lnl_var0.020_seed1' / 'options.json').read_text())
    assert opts['use_pretrain'] and opts['checkpoint'].endswith('weights/baseline_var0.020_seed1.pth')
    prov = json.loads((weights / 'provenance.json').read_text())['files']
    assert {'baseline_var0.020_seed1.pth', 'lnl_var0.020_seed1.pth'} <= set(prov)  # seed 1's LNL is shipped too
    assert prov['lnl_var0.020_seed1.pth']['records'] == 'records/lnl_var0.020_seed1'  # named from the repository
    assert not any(str(tmp_path) in e['command'] for e in prov.values()), prov  # no path of this machine
    precision = opts['precision']  # decided by the campaign for this machine, passed to every run as such
    assert precision in ('fp32', 'bf16') and f'campaign: precision {precision}' in second.stdout
    assert all(f'--precision {precision}' in e['command'] for e in prov.values()), prov
    assert 'every cell committed' in campaign(tmp_path / 'machine2', records, weights, small_data_dir).stdout


def test_auto_precision_is_decided_once_for_the_machine(monkeypatch):
    from experiments import campaign as campaign_module
    from experiments.sweep import devices
    import utils
    monkeypatch.setattr(devices, 'cuda_bf16', lambda: [])
    monkeypatch.setattr(utils.runtime, 'cpu_features', lambda: {'avx2', 'avx512f', 'avx512_bf16'})
    assert campaign_module.run_precision('auto') == ('bf16', 'campaign: precision bf16 (this machine computes '
                                                              'bfloat16 natively)')
    assert campaign_module.run_precision('bf16')[0] == 'bf16'
    monkeypatch.setattr(utils.runtime, 'cpu_features', lambda: {'avx2'})  # emulated bf16: ten times as slow
    precision, line = campaign_module.run_precision('auto')
    assert precision == 'fp32' and 'no native bfloat16' in line
    precision, line = campaign_module.run_precision('bf16')  # asked for: kept, with a warning
    assert precision == 'bf16' and line.startswith('warning:') and '--precision auto' in line
    assert campaign_module.run_precision('fp32') == ('fp32', 'campaign: precision fp32')


def test_list_says_what_this_machine_has_saved_or_finished_of_the_runs_left(tmp_path):
    out = tmp_path / 'out'
    saved = out / 'lnl_var0.020_seed1'  # stopped after three epochs: the relaunch resumes it
    saved.mkdir(parents=True)
    (saved / 'options.json').write_text(json.dumps({'method': 'lnl', 'max_step': 100}))
    (saved / 'results.jsonl').write_text(''.join(json.dumps({'epoch': e, 'epoch_time_s': t}) + '\n'  # median 36 s
                                                 for e, t in ((1, 30.0), (2, 36.0), (3, 40.0)))
                                         + json.dumps({'epoch': 3, 'test_acc': 0.5}) + '\n')
    (saved / 'checkpoint_epoch_0003.pth').write_bytes(b'')
    (out / 'blindeye_var0.020_seed1').mkdir()
    (out / 'blindeye_var0.020_seed1' / 'done').write_text('checkpoint_epoch_0100.pth\n')
    (out / 'gray_var0.020_seed1').mkdir()  # an empty folder: nothing saved
    for name, method, precision, seconds in (('baseline_var0.025_seed1', 'baseline', 'fp32', 20.0),
                                             ('gray_var0.025_seed1', 'gray', 'bf16', 10.0)):
        committed = tmp_path / 'records' / name  # another machine's runs: only those of the precision asked count
        committed.mkdir(parents=True)
        (committed / 'options.json').write_text(json.dumps({'method': method, 'precision': precision}))
        (committed / 'results.jsonl').write_text(json.dumps({'epoch': 1, 'epoch_time_s': seconds}) + '\n')
    listed = run_py(['-m', 'experiments.campaign', '--out', out, '--records', tmp_path / 'records', '--weights',
                     tmp_path / 'weights', '--color_vars', '0.020', '--seeds', '1', '--precision', 'fp32', '--list'])
    assert listed.returncode == 0, listed.stderr
    assert ('sigma^2 0.020 seed 1: to train: baseline lnl blindeye gray (in --out: lnl at epoch 3/100, about 1.0 h '
            'left, blindeye finished)\n') in listed.stdout, listed.stdout
    # how long the rest takes: 97 epochs of 36 s (this machine's LNL) and 100 of 20 s (the committed fp32 baseline);
    # the finished BlindEye takes none, and Gray has no epoch time in fp32
    assert listed.stdout.splitlines()[-1] == ('4 runs left at 1 (sigma^2, seed); about 1.5 h of training, 0.8 h at 2 '
                                              'runs at once (epoch times: baseline 20 s (committed fp32 runs), lnl 36 s '
                                              '(this machine)); no epoch time for gray_var0.020_seed1'), listed.stdout


def test_a_dry_run_is_never_harvested_over_a_real_runs_records(small_data_dir, tmp_path):
    out, records, name = tmp_path / 'out', tmp_path / 'records', 'baseline_var0.020_seed1'
    assert run_py(['train.py', '-e', name, '--save_dir', out, '--data_dir', small_data_dir, '--no_generate',
                   '--dry_run', '--max_step', '1', '--no_progress']).returncode == 0
    assert run_py(['test.py', '-e', name, '--save_dir', out, '--data_dir', small_data_dir]).returncode == 0
    (records / name).mkdir(parents=True)
    real = json.dumps({'method': 'baseline', 'color_var': 0.02, 'max_step': 100})
    (records / name / 'options.json').write_text(real)
    proc = run_py(['-m', 'experiments.campaign', '--out', out, '--records', records, '--weights', tmp_path / 'w',
                   '--color_vars', '0.020', '--seeds', '1', '--methods', 'baseline', '--harvest', 'cmd', '--',
                   '--dry_run'])
    assert proc.returncode == 0 and 'holds a real run' in proc.stderr, proc.stdout + proc.stderr
    assert (records / name / 'options.json').read_text() == real and not (records / name / 'results.jsonl').exists()


def test_the_variances_of_a_seed_alike_train_in_one_sweep(tmp_path, monkeypatch):
    """Variances with the same methods left and the same kind of start are one sweep (a core that BlindEye frees
    takes the next variance's run instead of idling until LNL ends), each run from its own baseline file; the others
    are sweeps of their own, in the campaign's order."""
    import shutil
    from experiments import campaign as campaign_module
    from utils import REPO_ROOT
    records, weights = tmp_path / 'records', tmp_path / 'weights'
    weights.mkdir()
    for cv in ('0.040', '0.045'):  # committed baselines: their LNL and BlindEye start from the weights
        name = f'baseline_var{cv}_seed1'
        shutil.copytree(f'{REPO_ROOT}/docs/results/paper_e100/{name}', records / name)
        shutil.copy(f'{REPO_ROOT}/pretrained/{name}.pth', weights)
    calls, harvested = [], []

    def sweep_main(call, on_run_end):  # a run ends: its records are copied then, and again when the sweep ends
        calls.append(call)
        on_run_end({'x': 'finished'})
        harvested.append('run ended')
    monkeypatch.setattr(campaign_module.sweep, 'main', sweep_main)
    monkeypatch.setattr(campaign_module, 'harvest', lambda args, cv, seed, command: harvested.append(cv))
    code = campaign_module.main(['--out', str(tmp_path / 'out'), '--records', str(records), '--weights', str(weights),
                                 '--color_vars', '0.040', '0.050', '0.045', '--seeds', '1', '--methods', 'baseline',
                                 'lnl', 'blindeye', '--precision', 'fp32'])
    assert code == 0

    def part(call, flag):
        i = call.index(flag) + 1
        return call[i:next((j for j in range(i, len(call)) if call[j].startswith('--')), len(call))]
    assert [part(c, '--color_vars') for c in calls] == [['0.040', '0.045'], ['0.050']]
    assert [part(c, '--methods') for c in calls] == [['lnl', 'blindeye'], ['baseline', 'lnl', 'blindeye']]
    assert part(calls[0], '--base_checkpoint') == [str(weights)] and '--base_checkpoint' not in calls[1]
    assert harvested == [0.040, 0.045, 'run ended', 0.040, 0.045, 0.050, 'run ended', 0.050]
