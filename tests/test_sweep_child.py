"""A run's steps (train.py, then test.py), or a pack's (train_pack.py, then each run's test.py), in one child
process of the sweep (experiments/sweep/child.py)."""
import json

from experiments.sweep import runner


def commands(log):
    return [line for line in log.read_text().splitlines() if line.startswith('$ ')]


def test_steps_run_in_one_child_stop_at_the_first_failure_and_name_it(tmp_path):
    log = tmp_path / 'sweep.log'
    ok = ['train.py', '--help']  # exits 0
    failing = ['test.py', '-e', 'nothing', '--save_dir', str(tmp_path)]  # a UserError: exit 2
    with open(log, 'a') as fh:
        assert runner.run_child_steps([ok, failing], fh) == ('test.py', 2)
    lines = commands(log)
    assert [line.split()[2].rsplit('/', 1)[-1] for line in lines] == ['train.py', 'test.py'], lines
    assert lines[1].endswith('test.py -e nothing --save_dir ' + str(tmp_path))  # a command to paste
    assert 'error: ' in log.read_text() and 'Traceback' not in log.read_text()

    log.unlink()
    with open(log, 'a') as fh:  # the first step fails: the second never starts
        assert runner.run_child_steps([failing, ok], fh) == ('test.py', 2)
    assert len(commands(log)) == 1


def test_a_packs_tests_run_after_its_training_each_into_its_own_log_whatever_the_others(tmp_path):
    ok = ['train.py', '--help']
    failing = ['test.py', '-e', 'nothing', '--save_dir', str(tmp_path)]
    logs = [tmp_path / f'run{i}.log' for i in range(3)]
    tests = [(failing, str(logs[0])), (ok, str(logs[1])), (failing, str(logs[2]))]
    with open(logs[0], 'a') as fh:
        assert runner.run_child_steps([ok], fh, tests=tests) == (('train.py', 0), [2, 0, 2])
    assert [[line.split()[2].rsplit('/', 1)[-1] for line in commands(log)] for log in logs] == \
        [['train.py', 'test.py'], ['train.py'], ['test.py']]
    assert 'error: ' in logs[2].read_text() and 'error: ' not in logs[1].read_text()

    with open(logs[0], 'a') as fh:  # the training fails: no test starts
        assert runner.run_child_steps([failing], fh, tests=tests[1:]) == (('test.py', 2), [None, None])
    assert len(commands(logs[1])) == 1


def test_a_sweep_run_starts_one_process_for_training_and_test(small_data_dir, tmp_path, monkeypatch):
    from conftest import run_py
    started, real_child = [], runner.run_child

    def run_child(cmd, *args, **kwargs):
        started.append(cmd)
        return real_child(cmd, *args, **kwargs)
    monkeypatch.setattr(runner, 'run_child', run_child)
    out = tmp_path / 'sweep'
    proc = run_py(['-m', 'experiments.sweep', '--color_vars', '0.020', '--methods', 'baseline', '--seeds', '1', '--out', out,
                   '--data_dir', small_data_dir, '--launcher', 'local', '--no_probe', '--', '--dry_run',
                   '--max_step', '1'])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(started) == 1 and started[0][1:3] == ['-m', 'experiments.sweep.child'], started
    run = out / 'baseline_var0.020_seed1'
    assert [json.loads(line) for line in (run / 'results.jsonl').read_text().splitlines()][-1].get('test_acc') \
        is not None
    assert [line.split()[2].rsplit('/', 1)[-1] for line in commands(run / 'sweep.log')] == ['train.py', 'test.py']
