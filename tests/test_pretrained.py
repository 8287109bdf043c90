"""The shipped weights (pretrained/): the documented command reproduces their recorded accuracy exactly on the
real test set; an export keeps weights only and round-trips; the sweep and train.sh start LNL from a baseline
given as a file (the shipped one) and record its SHA-256."""
import json
import os
import subprocess

import pytest
import torch

from conftest import ROOT, SMALL_VAR, assert_user_error, make_small_data, run_py, train_args
from dataset import colored_mnist
from experiments import records
from experiments.pretrained import MAX_BYTES, PRETRAINED_DIR
from utils import read_jsonl, sha256_file



def provenance():
    with open(os.path.join(PRETRAINED_DIR, 'provenance.json'), encoding='utf-8') as fh:
        return json.load(fh)


@pytest.fixture(scope='module')
def data_020(real_020, tmp_path_factory):
    """The sigma^2 = 0.020 file, generated from the verified raw MNIST (conftest's real_020)."""
    data_dir = tmp_path_factory.mktemp('data020')
    colored_mnist.save(real_020[1], colored_mnist.file_path(str(data_dir), 0.020))
    return data_dir


@pytest.mark.slow
def test_shipped_weights_reproduce_their_recorded_accuracy(data_020):
    """The Baseline and LNL files of sigma^2 = 0.020 (the data of the other variances would take the suite too
    long to generate, and each file is a second or more of evaluation: `python -m experiments.pretrained` checks
    every file)."""
    prov = {k: e for k, e in provenance()['files'].items() if e['color_var'] == '0.020'
            and e['method'] in ('baseline', 'lnl')}
    assert {'baseline', 'lnl'} == {e['method'] for e in prov.values()}
    proc = run_py(['-m', 'experiments.pretrained', '--data_dir', data_020, '--no_generate', '--color_vars', '0.020',
                   '--methods', 'baseline', 'lnl'])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'all {len(prov)} shipped files reproduce' in proc.stdout and 'gray_' not in proc.stdout, proc.stdout
    assert_user_error(run_py(['-m', 'experiments.pretrained', '--methods', 'csad']), 'no shipped file of method csad')
    for name, entry in prov.items():
        row = next(line.split() for line in proc.stdout.splitlines() if line.startswith(name))
        assert row[5] == row[6] == f'{entry["test_acc"]:.4f}' and row[7] == 'yes', row
        # the committed records of the run say the same, and the file is weights only
        test, _ = records.current_test(read_jsonl(os.path.join(ROOT, entry['records'], 'results.jsonl')),
                                       entry['color_var'], gray_view=entry.get('gray_view'))
        assert test['test_acc'] == entry['test_acc'] and test['epoch'] == entry['epoch']
        path = os.path.join(PRETRAINED_DIR, name)
        assert os.path.getsize(path) < MAX_BYTES and sha256_file(path) == entry['sha256']
        ckpt = torch.load(path, weights_only=True)
        assert not {'optimizers', 'schedulers', 'rng', 'optim_state_dict'} & set(ckpt)
        assert ('h_state_dict' in ckpt) == (entry['method'] in ('lnl', 'blindeye'))


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A small finished baseline, tested, exported into its own pretrained folder (once for the module; the
    tests that change its files work on copies)."""
    tmp_path = tmp_path_factory.mktemp('exported')
    small_data_dir = tmp_path / 'data'
    make_small_data(small_data_dir)
    runs, records_dir, out = tmp_path / 'runs', tmp_path / 'records', tmp_path / 'pretrained'
    name = f'baseline_var{SMALL_VAR:.3f}_seed1'
    proc = run_py(train_args(small_data_dir, runs, name, '--method', 'baseline', '--color_var', SMALL_VAR,
                             '--max_step', 1, '--threads', 1))
    assert proc.returncode == 0, proc.stderr
    assert run_py(['test.py', '-e', name, '--save_dir', runs, '--data_dir', small_data_dir]).returncode == 0
    (records_dir / name).mkdir(parents=True)
    (records_dir / name / 'results.jsonl').write_bytes((runs / name / 'results.jsonl').read_bytes())
    proc = run_py(['-m', 'experiments.pretrained', '--export', runs / name, '--dir', out, '--records', records_dir,
                   '--commit', 'abc', '--command', 'train it'])
    assert proc.returncode == 0, proc.stderr
    return out, out / (name + '.pth'), small_data_dir


def test_export_round_trip_and_tampering(exported, tmp_path):
    import shutil
    out = tmp_path / 'pretrained'
    shutil.copytree(exported[0], out)
    path, data_dir = out / exported[1].name, exported[2]
    ckpt = torch.load(path, weights_only=True)
    # the records are named from the repository that holds the weights folder, not from this code's checkout
    entry = json.loads((out / 'provenance.json').read_text())['files'][path.name]
    assert entry['records'] == f'records/{path.stem}', entry['records']
    assert set(ckpt) == {'format', 'epoch', 'config', 'options', 'net_state_dict'}
    assert not any(isinstance(v, str) and v.startswith('/') for v in ckpt['options'].values())  # no local paths
    proc = run_py(['-m', 'experiments.pretrained', '--dir', out, '--data_dir', data_dir, '--no_generate'])
    assert proc.returncode == 0 and 'yes' in proc.stdout, proc.stdout + proc.stderr
    # a recorded accuracy the weights do not give: exit status 1, the row says NO
    prov_path = out / 'provenance.json'
    prov = json.loads(prov_path.read_text())
    entry = next(iter(prov['files'].values()))
    entry['test_acc'] = entry['test_acc'] + 1 / 256
    prov_path.write_text(json.dumps(prov))
    proc = run_py(['-m', 'experiments.pretrained', '--dir', out, '--data_dir', data_dir, '--no_generate'])
    assert proc.returncode == 1 and ' NO ' in proc.stdout, proc.stdout
    # a changed file is refused before it is read
    with open(path, 'r+b') as fh:
        fh.seek(-1, 2)
        byte = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([byte[0] ^ 1]))
    assert_user_error(run_py(['-m', 'experiments.pretrained', '--dir', out, '--data_dir', data_dir]),
                      'does not match the SHA-256')


def test_sweep_starts_lnl_from_a_baseline_file(exported, tmp_path):
    _, path, data_dir = exported
    out = tmp_path / 'sweep'
    base = ['-m', 'experiments.sweep', '--color_vars', '0.020', '--seeds', '1', '--out', out, '--data_dir', data_dir,
            '--no_probe', '--launcher', 'inprocess']
    proc = run_py(base + ['--methods', 'lnl', '--base_checkpoint', path, '--', '--max_step', '1', '--threads', '1'])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    opts = json.loads((out / 'lnl_var0.020_seed1' / 'options.json').read_text())
    assert opts['use_pretrain'] and opts['pretrain_sha256'] == sha256_file(path)
    assert not (out / 'baseline_var0.020_seed1').exists()
    # the folder of shipped files: the run starts from the file of its sigma^2 and seed
    folder_out = tmp_path / 'from_folder'
    proc = run_py([folder_out if a == out else a for a in base]
                  + ['--methods', 'lnl', '--base_checkpoint', path.parent, '--', '--max_step', '1', '--threads', '1'])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    opts = json.loads((folder_out / 'lnl_var0.020_seed1' / 'options.json').read_text())
    assert opts['checkpoint'] == str(path) and opts['pretrain_sha256'] == sha256_file(path)
    assert_user_error(run_py(base + ['--methods', 'baseline', 'lnl', '--base_checkpoint', path]),
                      'methods that start from a baseline only')
    assert_user_error(run_py(base[:3] + ['0.035'] + base[4:] + ['--methods', 'lnl', '--base_checkpoint', path]),
                      'was trained on sigma^2')
    assert_user_error(run_py(base + ['--methods', 'lnl', '--base_checkpoint', tmp_path / 'none.pth']), 'no such file')


def test_train_sh_hands_the_shipped_or_given_baseline_to_the_sweep(tmp_path):
    # train.sh's part: the sweep it starts (shown by a stand-in interpreter that prints its arguments) trains
    # LNL only, from the shipped file or from the file given (made absolute before train.sh changes folder);
    # the sweep's part is test_sweep_starts_lnl_from_a_baseline_file
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)

    def sweep_args(baseline):
        env = dict(os.environ, PYTHON=str(fake), BASELINE=baseline)
        proc = subprocess.run(['bash', os.path.join(ROOT, 'train.sh'), '--max_step', '3'], capture_output=True,
                              text=True, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    args = sweep_args('pretrained')
    assert args[args.index('--methods') + 1:args.index('--seeds')] == ['lnl']
    assert args[args.index('--base_checkpoint') + 1] == 'pretrained/baseline_var0.020_seed2.pth'
    assert os.path.isfile(os.path.join(ROOT, args[args.index('--base_checkpoint') + 1]))
    assert args[args.index('--') + 1:] == ['--max_step', '3']
    env_035 = dict(os.environ, PYTHON=str(fake), BASELINE='pretrained', COLOR_VAR='0.035')
    proc = subprocess.run(['bash', os.path.join(ROOT, 'train.sh')], capture_output=True, text=True, env=env_035,
                          cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=60)
    args = proc.stdout.splitlines()  # the shipped baseline of that sigma^2 and seed, no note
    assert args[args.index('--base_checkpoint') + 1] == 'pretrained/baseline_var0.035_seed1.pth' and not proc.stderr
    proc = subprocess.run(['bash', os.path.join(ROOT, 'train.sh')], capture_output=True, text=True,
                          env=dict(env_035, COLOR_VAR='0.033'), cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 2 and proc.stdout == '' and 'no baseline is shipped for COLOR_VAR=0.033' in proc.stderr
    args = sweep_args('mine.pth')
    assert args[args.index('--base_checkpoint') + 1] == str(tmp_path / 'mine.pth')
    args = sweep_args('train')
    assert '--base_checkpoint' not in args and args[args.index('--methods') + 1:args.index('--seeds')] == \
        ['baseline', 'lnl']
