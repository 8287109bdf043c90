"""experiments.parity: paired fp32/bf16 runs, their differences against the spread between seeds."""
import json

import pytest

from conftest import assert_user_error, run_py
from experiments import parity


def _run(root, precision, method, seed, acc):
    folder = root / precision / f'{method}_var0.020_seed{seed}'
    folder.mkdir(parents=True)
    opts = {'method': method, 'color_var': 0.02, 'random_seed': seed, 'precision': precision,
            'amp': precision == 'bf16'}
    (folder / 'options.json').write_text(json.dumps(opts))
    (folder / 'results.jsonl').write_text(json.dumps({'epoch': 1, 'monitor_test_acc': acc}) + '\n'
                                          + json.dumps({'tag': 'test', 'test_acc': acc}) + '\n')


def test_parity_within_and_beyond_the_seed_spread(tmp_path):
    for precision, accs in (('fp32', (0.40, 0.36)), ('bf16', (0.41, 0.37))):
        for seed, acc in zip((1, 2), accs):
            _run(tmp_path, precision, 'baseline', seed, acc)
    for precision, accs in (('fp32', (0.80, 0.79)), ('bf16', (0.70, 0.69))):
        for seed, acc in zip((1, 2), accs):
            _run(tmp_path, precision, 'lnl', seed, acc)
    readme = tmp_path / 'README.md'
    readme.write_text('<!-- precision_parity:begin -->\n<!-- precision_parity:end -->\n')
    proc = run_py(['-m', 'experiments.parity', tmp_path, '--readme', readme])
    assert proc.returncode == 0, proc.stderr
    rows = {r['method']: r for r in parity.verdicts(parity.pairs(parity.records.load_runs(tmp_path)))}
    base, lnl = rows['baseline'], rows['lnl']
    assert base['diffs'] == pytest.approx([0.01, 0.01]) and base['spread_fp32'] == pytest.approx(0.04)
    assert base['parity'] is True
    assert lnl['mean_diff'] == pytest.approx(-0.10) and lnl['parity'] is False
    text = readme.read_text(encoding='utf-8')
    assert '+0.0100: parity' in text and '-0.1000: NO parity' in text and '| Baseline | 0.020 | 1 |' in text


def test_one_seed_is_not_enough_and_no_pairs_is_an_error(tmp_path):
    _run(tmp_path, 'fp32', 'baseline', 1, 0.4)
    _run(tmp_path, 'bf16', 'baseline', 1, 0.4)
    assert parity.verdicts(parity.pairs(parity.records.load_runs(tmp_path)))[0]['parity'] is None
    only = tmp_path / 'only'
    _run(only, 'fp32', 'lnl', 1, 0.8)
    assert_user_error(run_py(['-m', 'experiments.parity', only]), 'both fp32 and bf16')
