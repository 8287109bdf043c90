"""benchmarks/gpu_fig4.sh end to end on the CPU at a toy budget (TOY=1: dry runs of one epoch, two variances packed
two to a network): an allocation trains only what an earlier one left, and its records and archives come back."""
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from conftest import ROOT, fake_mnist, run_py
from dataset import colored_mnist


def run_script(out, records, data_dir, **env):
    full = dict(os.environ, TOY='1', VARS='0.020 0.035 0.050', SEEDS='1', PACK='2', METHODS='baseline',
                DATA_DIR=str(data_dir), RECORDS=str(records), PYTHON=sys.executable, OMP_NUM_THREADS='1', **env)
    return subprocess.run(['bash', os.path.join(ROOT, 'benchmarks', 'gpu_fig4.sh'), str(out)], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_gpu_fig4_toy_trains_the_grid_returns_archives_and_continues(small_data_dir, tmp_path):
    for color_var in (0.035, 0.050):
        data = colored_mnist.generate(fake_mnist(), color_var, seed=3)
        colored_mnist.save(data, colored_mnist.file_path(str(small_data_dir), color_var))
    # an earlier allocation finished sigma^2 = 0.020: its records are committed
    records, earlier, name = tmp_path / 'records' / 'gpu_e100', tmp_path / 'earlier', 'baseline_var0.020_seed1'
    assert run_py(['train.py', '-e', name, '--method', 'baseline', '--color_var', '0.020', '--save_dir', earlier,
                   '--data_dir', small_data_dir, '--no_generate', '--dry_run', '--max_step', '1',
                   '--no_progress']).returncode == 0
    assert run_py(['test.py', '-e', name, '--save_dir', earlier, '--data_dir', small_data_dir]).returncode == 0
    (records / name).mkdir(parents=True)
    for f in ('options.json', 'results.jsonl'):
        shutil.copy(earlier / name / f, records / name / f)

    proc = run_script(tmp_path / 'out', records, small_data_dir, RUNS_AT_ONCE='2', FIG_MIN='5')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = sorted(n for n in os.listdir(records) if (records / n).is_dir())
    assert names == [name, 'baseline_var0.035_seed1', 'baseline_var0.050_seed1'], names
    assert all((records / n / 'results.jsonl').is_file() and (records / n / 'options.json').is_file() for n in names)
    out = sorted(os.listdir(tmp_path / 'out'))
    assert out == ['checks.tgz', 'records.tgz', 'summary.txt'], out  # dry runs ship no weights
    with tarfile.open(tmp_path / 'out' / 'records.tgz') as tar:
        assert 'gpu_e100/baseline_var0.035_seed1/results.jsonl' in tar.getnames()
    summary = (tmp_path / 'out' / 'summary.txt').read_text()
    # only what the earlier allocation left is trained, as one pack; the loop then finds nothing left
    assert 'seed 1, sigma^2 0.035 0.050:' in summary and 'sigma^2 0.020' not in summary, summary
    assert 'throughput: 2 epochs trained' in summary and 'every cell has its records' in summary
    assert 'the whole figure (7 sigma^2 x 3 seeds x 1 methods x 1 epochs = 21 epochs)' in summary
    assert json.loads((records / 'baseline_var0.050_seed1' / 'options.json').read_text())['pack'] == 2
