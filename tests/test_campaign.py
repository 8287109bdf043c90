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
    assert 'every cell committed' in campaign(tmp_path / 'machine2', records, weights, small_data_dir).stdout
