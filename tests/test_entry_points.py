"""Each command-line entry point once in its own interpreter, as a user runs it: a mistake is one ``error:``
line with exit status 2 and no traceback. Every other test calls the same ``main(argv)`` in-process
(``conftest.run_py``), which is faster and checks the same code."""
import subprocess
import sys

import pytest

from conftest import ROOT, assert_user_error, run_py, run_subprocess

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


def _entry_point(body):
    """A Python program whose main (under utils.run_main, as every entry point's) runs ``body``."""
    return [sys.executable, '-c', f'import sys\nsys.path.insert(0, {ROOT!r})\nfrom utils import run_main\n'
                                  f'def main():\n    {body}\nsys.exit(run_main(main))']


def test_a_reader_that_went_away_ends_the_command_quietly():
    """`python -m experiments.campaign --list | head -1`: no traceback when head has gone, exit 141 as for any
    tool; a broken pipe that is not standard output's (a child's) stays an error with its traceback."""
    proc = subprocess.Popen(_entry_point('import time; time.sleep(0.5); [print("line", i) for i in range(5)]'),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes before the first line
    assert proc.wait(timeout=60) == 141 and proc.stderr.read() == b''
    proc = subprocess.run(_entry_point('raise BrokenPipeError(32, "a child went")'), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and proc.stderr.rstrip().endswith('BrokenPipeError: [Errno 32] a child went')
