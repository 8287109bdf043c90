"""A run that diverges stops with a remedy that works: the command it prints, run as printed, trains on with
finite, bounded losses (from the newest checkpoint that training can go on from, or from the start)."""
import math
import shlex

import pytest

import run_folder
import trainer
from conftest import run_py, train_args


def _advice(stderr):
    """The command the error line ends with (``...: python train.py ...``) as an argument list for run_py."""
    line = [x for x in stderr.splitlines() if x.startswith('error: ')][-1]
    assert ': python train.py ' in line, f'the advice names no command to run: {line}'
    args = shlex.split(line.rsplit(': python ', 1)[1])
    assert args[0] == 'train.py'
    return args, line


@pytest.mark.parametrize('lr,extra,remedy', [
    # one step at lr 100 leaves every weight below 1e4 and a loss of 3e5 at the next batch: no checkpoint of the
    # run trains on, at any rate (the advice was --resume from it)
    ('100', [], '--overwrite'),
    # at lr 10 the state after epoch 2 is of the same kind; the one after epoch 1 trains on
    ('10', ['--save_step', '1'], '--resume'),
])
def test_the_printed_remedy_of_a_diverging_run_trains_on(small_data_dir, tmp_path, lr, extra, remedy):
    runs = tmp_path / 'runs'
    args = train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--dry_run', '--max_step', 4,
                      '--precision', 'fp32', '--log_step', 1, '--lr', lr, *extra)
    proc = run_py(args)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr
    advised, line = _advice(proc.stderr)
    proc = run_py(advised)
    assert proc.returncode == 0, proc.stderr
    records = run_folder.read_results(str(runs / 'r'))
    assert [r['epoch'] for r in records] == [1, 2, 3, 4]
    first = 1 if '--resume' in advised else 0  # epoch 1 of a resumed run is the one before the divergence
    for r in records[first:]:
        assert math.isfinite(r['loss_cls']) and r['loss_cls'] < trainer.LOSS_LIMIT, (line, records)
    assert remedy in advised and float(advised[advised.index('--lr') + 1]) < float(lr), line
    if remedy == '--resume':
        assert advised[advised.index('--resume') + 1] == str(runs / 'r' / 'checkpoint_epoch_0001.pth')
