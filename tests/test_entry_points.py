"""Each command-line entry point once in its own interpreter, as a user runs it: a mistake is one ``error:``
line with exit status 2 and no traceback. Every other test calls the same ``main(argv)`` in-process
(``conftest.run_py``), which is faster and checks the same code."""
import pytest

from conftest import assert_user_error, run_py, run_subprocess

ENTRY_POINTS = {
    'train.py': (['train.py'], ['-e', 'x', '--use_pretrain', '--save_dir', '{tmp}'],
                 '--use_pretrain needs --checkpoint'),
    'train_pack.py': (['train_pack.py'], ['--run', '-e x --method csad', '--run', '-e y --method csad'],
                      'does not train packed'),
    'test.py': (['test.py'], ['-e', 'nothing', '--save_dir', '{tmp}'], 'no checkpoint in'),
    'sweep': (['-m', 'experiments.sweep'], ['--methods', 'lnl', '--out', '{tmp}'], 'lnl starts from the baseline run'),
    'collect_results': (['-m', 'experiments.collect_results'], ['{tmp}/missing'], 'does not exist'),
    'parity': (['-m', 'experiments.parity'], ['{tmp}/missing'], 'does not exist'),
    'ab': (['-m', 'experiments.ab'], ['a={tmp}/missing', 'b={tmp}/missing'], 'does not exist'),
    'generator': (['-m', 'dataset.colored_mnist'], ['--color_var', '-0.1'], 'must be a positive number'),
    'pretrained': (['-m', 'experiments.pretrained'], ['--dir', '{tmp}'], 'provenance.json does not exist'),
    'speed': (['benchmarks/speed.py'], ['--n_images', '5'], '--n_images must be at least the batch size'),
    'csad_parity': (['-m', 'experiments.csad_parity'], ['--their_code', '{tmp}'], 'no models.py'),
    'campaign': (['-m', 'experiments.campaign'], ['--out', 'runs/campaign'], 'is inside the repository'),
}


@pytest.mark.parametrize('name', sorted(ENTRY_POINTS))
def test_entry_point_in_its_own_interpreter(name, tmp_path):
    command, bad, fragment = ENTRY_POINTS[name]
    proc = run_subprocess(command + [a.replace('{tmp}', str(tmp_path)) for a in bad])
    assert_user_error(proc, fragment)
    lines = proc.stderr.strip().splitlines()  # argparse's usage lines may come first
    assert proc.returncode == 2 and [ln for ln in lines if 'error' in ln] == lines[-1:], proc.stderr


@pytest.mark.parametrize('name', sorted(ENTRY_POINTS))
def test_help(name):
    proc = run_py(ENTRY_POINTS[name][0] + ['--help'])
    assert proc.returncode == 0 and proc.stdout.startswith('usage:') and not proc.stderr, proc.stderr
