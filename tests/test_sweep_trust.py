"""A sweep's table holds only what was asked for: runs that start from another start from its finished state,
finished runs are checked against the request, test records belong to the run's last epoch, cut record lines
are repaired, and run folders never write through links or outside --save_dir."""
import json
import os
import signal

import pytest

from conftest import wait_for, SMALL_VAR, assert_user_error, popen, run_py, train_args
import run_folder
from experiments import records, sweep
from utils import RunLock, append_line, read_jsonl, sha256_file


def _sweep_args(data_dir, out, *extra, methods=('baseline', 'lnl'), train=('--max_step', 2)):
    return ['-m', 'experiments.sweep', '--color_vars', SMALL_VAR, '--methods', *methods, '--seeds', '1',
            '--out', out, '--data_dir', data_dir, '--no_probe', *extra, '--', '--dry_run', '--no_generate',
            *train]


def _lines(proc):
    """{run name: its result line} of a sweep's summary (``proc``: a finished process or its stdout)."""
    out = {}
    for line in getattr(proc, 'stdout', proc).splitlines():
        parts = line.rsplit(' ', 1)
        if len(parts) == 2 and '_var' in parts[1]:
            out[parts[1]] = parts[0].strip()
    return out


def _epochs(run_dir):
    path = run_dir / 'results.jsonl'
    return [r['epoch'] for r in read_jsonl(path) if 'test_acc' not in r] if path.exists() else []


# -- 1. a run starts only from a finished run ------------------------------------------------------------

@pytest.mark.slow
def test_lnl_never_starts_from_a_killed_baseline_and_the_relaunch_starts_it_from_the_finished_one(
        small_data_dir, tmp_path):
    """The baseline's training process is killed mid-run: the sweep reports it failed and does not start
    LNL. The relaunch finishes the baseline, then trains LNL from the checkpoint its done marker names, and
    LNL records that file's SHA-256. (Before: LNL started from the 2-epoch checkpoint_last.pth.)"""
    out = tmp_path / 'sweep'
    args = _sweep_args(small_data_dir, out, '--launcher', 'local', '--unlearn_max_step', 1, train=('--max_step', 8))
    base = out / 'baseline_var0.020_seed1'
    proc = popen(args)
    wait_for(lambda: len(_epochs(base)) >= 1 and RunLock.holder(str(base)) is not None, proc)
    os.kill(int(RunLock.holder(str(base))), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stdout + stderr
    lines = _lines(stdout)
    assert lines['baseline_var0.020_seed1'].startswith('failed'), stdout + stderr
    assert lines['lnl_var0.020_seed1'].startswith('not started (baseline_var0.020_seed1 is not finished'), stdout
    assert not (out / 'lnl_var0.020_seed1' / 'options.json').exists()

    # the relaunch (in this process: the launchers share the dependency and resume logic) resumes the baseline
    proc = run_py([('inprocess' if a == 'local' else a) for a in args])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _epochs(base)[-1] == 8
    start = base / (base / 'done').read_text().strip().rsplit('/', 1)[-1]
    opts = json.loads((out / 'lnl_var0.020_seed1' / 'options.json').read_text())
    assert opts['checkpoint'] == str(start) and opts['pretrain_sha256'] == sha256_file(start)


def _checkpoint_file(path, epoch, **options):
    """A small checkpoint file of a baseline run: its epoch and options (defaults: finished at epoch ``epoch``
    on sigma^2 = 0.020 with the default data), no weights."""
    import torch
    opts = dict({'method': 'baseline', 'color_var': 0.02, 'max_step': epoch, 'palette': 'released',
                 'data_seed': None, 'dry_run': False}, **options)
    torch.save({'format': 'lnl-checkpoint-v1', 'epoch': epoch, 'options': opts, 'net_state_dict': {}}, path)
    return path


def test_a_run_locked_by_another_process_is_no_start(tmp_path):
    """Another sweep still trains the baseline (it holds the folder's lock, even with an old done marker)."""
    run_dir = tmp_path / 'baseline_var0.020_seed1'
    run_dir.mkdir()
    _checkpoint_file(run_dir / 'checkpoint_last.pth', 2)
    (run_dir / 'options.json').write_text(json.dumps({'method': 'baseline', 'max_step': 2}))
    (run_dir / 'done').write_text(str(run_dir / 'checkpoint_last.pth') + '\n')
    assert run_folder.finished_checkpoint(str(run_dir)) == str(run_dir / 'checkpoint_last.pth')
    lock = RunLock(str(run_dir)).acquire()
    try:
        assert run_folder.finished_checkpoint(str(run_dir)) is None
    finally:
        lock.release()
    os.remove(run_dir / 'done')
    assert run_folder.finished_checkpoint(str(run_dir)) is None


def test_a_done_marker_is_followed_only_to_a_checkpoint_of_the_last_epoch(tmp_path):
    """A done marker edited to name an older checkpoint (or left from a run since asked for more epochs) does not
    make the run finished: the checkpoint it names must be of the run's --max_step."""
    run_dir = tmp_path / 'baseline_var0.020_seed1'
    run_dir.mkdir()
    (run_dir / 'options.json').write_text(json.dumps({'method': 'baseline', 'max_step': 3}))
    _checkpoint_file(run_dir / 'checkpoint_epoch_0002.pth', 2, max_step=3)
    _checkpoint_file(run_dir / 'checkpoint_last.pth', 3)
    (run_dir / 'done').write_text('checkpoint_epoch_0002.pth\n')
    spec = {'base': {'name': run_dir.name, 'run_dir': str(run_dir)}}

    def why():
        assert run_folder.finished_checkpoint(str(run_dir)) is None
        reason = sweep.start_checkpoint(spec)[1]
        assert reason.startswith(f'{run_dir.name} is not finished (')
        return reason
    assert 'names a checkpoint of epoch 2, not of its last epoch 3' in why()
    (run_dir / 'done').write_text('checkpoint_last.pth\n')
    assert run_folder.finished_checkpoint(str(run_dir)) == str(run_dir / 'checkpoint_last.pth')
    (run_dir / 'options.json').write_text(json.dumps({'method': 'baseline', 'max_step': 5}))  # asked for more
    assert 'epoch 3, not of its last epoch 5' in why()
    (run_dir / 'options.json').write_text('{"method": "basel')  # damaged: the marker is not to blame
    assert 'its options.json is missing or damaged (no max_step)' in why()
    (run_dir / 'options.json').write_text(json.dumps({'method': 'baseline', 'max_step': 3}))
    (run_dir / 'done').write_text('train.log\n')
    assert "its done marker names 'train.log', not a checkpoint file" in why()
    (run_dir / 'done').write_text('checkpoint_last.pth\n')
    (run_dir / 'checkpoint_last.pth').write_bytes(b'not a checkpoint')
    assert 'the checkpoint its done marker names (checkpoint_last.pth) does not load' in why()
    os.remove(run_dir / 'done')
    assert 'it has no done marker' in why()


def test_a_base_checkpoint_is_a_start_the_sweep_would_take_itself(tmp_path):
    """--base_checkpoint FILE (BASELINE=FILE bash train.sh): a finished baseline on the data of the runs asked for,
    and a dry run only for a dry run; otherwise one line that says which and why."""
    base = ['-m', 'experiments.sweep', '--color_vars', '0.020', '--methods', 'lnl', '--seeds', '1', '--out',
            tmp_path / 'sweep', '--data_dir', tmp_path / 'data', '--list']

    def start(name, epoch=30, **options):
        return ['--base_checkpoint', _checkpoint_file(tmp_path / name, epoch, **options)]
    assert run_py(base + start('good.pth')).returncode == 0
    assert_user_error(run_py(base + start('unfinished.pth', 10, max_step=30)),
                      'is not a finished run (epoch 10 of the 30 its run asked for)')
    assert_user_error(run_py(base + start('other_palette.pth', palette='supplementary_names')),
                      'supplementary_names palette', '--palette supplementary_names')
    assert_user_error(run_py(base + ['--palette', 'supplementary_names'] + start('released.pth')),
                      'released palette, and the runs asked for use the supplementary_names palette')
    assert_user_error(run_py(base + start('seed7.pth', data_seed=7)), '--data_seed 7', '--data_seed 2019')
    assert run_py(base + start('seed7b.pth', data_seed=7) + ['--', '--data_seed', '7']).returncode == 0
    assert_user_error(run_py(base + start('dry.pth', dry_run=True)), 'is a --dry_run checkpoint')
    assert run_py(base + start('dry2.pth', dry_run=True) + ['--', '--dry_run']).returncode == 0
    assert run_py(base + start('real.pth') + ['--', '--dry_run']).returncode == 0
    # the shipped baseline starts the runs it fits
    proc = run_py(['-m', 'experiments.sweep', '--color_vars', '0.020', '--methods', 'lnl', '--seeds', '2', '--out',
                   tmp_path / 'x', '--data_dir', tmp_path / 'data', '--base_checkpoint',
                   'pretrained/baseline_var0.020_seed2.pth', '--list'])
    assert proc.returncode == 0 and proc.stdout.split() == ['new', 'lnl_var0.020_seed2'], proc.stdout + proc.stderr


def test_a_folder_of_base_checkpoints_starts_each_run_from_its_own_file(tmp_path):
    """--base_checkpoint DIR (pretrained/): every run starts from the file named as its sigma^2 and seed's baseline
    run, one sweep over several variances and seeds; a missing file, or a file whose content is not what its name
    says, is one line before any run."""
    folder = tmp_path / 'weights'
    folder.mkdir()
    for cv, seed in ((0.020, 1), (0.025, 1), (0.020, 2), (0.025, 2)):
        _checkpoint_file(folder / f'baseline_var{cv:.3f}_seed{seed}.pth', 30, color_var=cv, random_seed=seed)
    base = ['--methods', 'lnl', 'blindeye', '--out', tmp_path / 'sweep', '--data_dir', tmp_path / 'data',
            '--base_checkpoint', folder]
    args = sweep.parse([str(a) for a in ['--color_vars', '0.020', '0.025', '--seeds', '1', '2'] + base])
    starts = {s['name']: s['base_file'] for s in sweep.make_specs(args)}
    assert len(starts) == 8
    for name, path in starts.items():
        method, rest = name.split('_', 1)
        assert path == str(folder / f'baseline_{rest}.pth'), name
    assert run_py(['-m', 'experiments.sweep', '--color_vars', '0.025', '--seeds', '2', '--list'] + base).returncode == 0
    assert_user_error(run_py(['-m', 'experiments.sweep', '--color_vars', '0.030', '--seeds', '1', '--list'] + base),
                      'has no baseline_var0.030_seed1.pth, the start of the runs at sigma^2 0.030 seed 1')
    (folder / 'baseline_var0.020_seed2.pth').unlink()
    _checkpoint_file(folder / 'baseline_var0.020_seed2.pth', 30, color_var=0.02, random_seed=1)
    assert_user_error(run_py(['-m', 'experiments.sweep', '--color_vars', '0.020', '--seeds', '2', '--list'] + base),
                      'is a run of --random_seed 1, and its name says seed 2')
    _checkpoint_file(folder / 'baseline_var0.020_seed2.pth', 30, color_var=0.025, random_seed=2)
    assert_user_error(run_py(['-m', 'experiments.sweep', '--color_vars', '0.020', '--seeds', '2', '--list'] + base),
                      'was trained on sigma^2 = 0.025, and its name says 0.020')
    assert_user_error(run_py(['-m', 'experiments.sweep', '--color_vars', '0.020', '--seeds', '1', '--list'] + base[:-1]
                             + [tmp_path / 'none']), 'no such file or folder')


def test_a_base_checkpoint_for_methods_of_two_starts_names_them(tmp_path):
    proc = run_py(['-m', 'experiments.sweep', '--color_vars', '0.020', '--methods', 'lnl', 'csad', '--seeds', '1',
                   '--out', tmp_path / 'sweep', '--data_dir', tmp_path / 'data', '--list',
                   '--base_checkpoint', _checkpoint_file(tmp_path / 'b.pth', 30)])
    assert_user_error(proc, 'lnl from a baseline run', 'csad from a csad_base run')


# -- 2. finished runs against the request ----------------------------------------------------------------

def test_a_relaunch_with_other_options_is_refused_redone_with_overwrite_or_extended(small_data_dir, tmp_path):
    out = tmp_path / 'sweep'
    inproc = ('--launcher', 'inprocess')
    assert run_py(_sweep_args(small_data_dir, out, *inproc)).returncode == 0
    lnl_sha = json.loads((out / 'lnl_var0.020_seed1' / 'options.json').read_text())['pretrain_sha256']

    # another run-defining option: refused, named, nothing trained
    proc = run_py(_sweep_args(small_data_dir, out, *inproc, train=('--max_step', 2, '--lr_decay_period', 5)))
    assert proc.returncode == 1
    lines = _lines(proc)
    assert lines['baseline_var0.020_seed1'].startswith('refused') and '--lr_decay_period 5 (run: 40)' in \
        lines['baseline_var0.020_seed1'] and '--overwrite' in lines['baseline_var0.020_seed1']
    assert lines['lnl_var0.020_seed1'].startswith('not started')
    # fewer epochs than the run has: refused as well
    proc = run_py(_sweep_args(small_data_dir, out, *inproc, train=('--max_step', 1)))
    assert proc.returncode == 1 and '--max_step 1 (run: 2)' in _lines(proc)['baseline_var0.020_seed1']
    assert _epochs(out / 'baseline_var0.020_seed1') == [1, 2]

    # more epochs: the baseline is extended and re-tested; LNL's start changed, so it is trained again
    proc = run_py(_sweep_args(small_data_dir, out, *inproc, train=('--max_step', 3)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = _lines(proc)
    assert lines['baseline_var0.020_seed1'].startswith('finished (extended')
    assert lines['lnl_var0.020_seed1'].startswith('finished (trained again: baseline_var0.020_seed1 changed')
    assert _epochs(out / 'baseline_var0.020_seed1') == [1, 2, 3]
    assert records.load_runs(out)[0]['test']['epoch'] == 3
    assert json.loads((out / 'lnl_var0.020_seed1' / 'options.json').read_text())['pretrain_sha256'] != lnl_sha

    # the same request again: nothing to do
    proc = run_py(_sweep_args(small_data_dir, out, *inproc, train=('--max_step', 3)))
    assert proc.returncode == 0 and set(_lines(proc).values()) == {'skipped'}, proc.stdout

    # --overwrite trains the mismatched runs again
    proc = run_py(_sweep_args(small_data_dir, out, *inproc, '--overwrite', methods=('baseline',),
                              train=('--max_step', 2, '--lr_decay_period', 5)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _lines(proc)['baseline_var0.020_seed1'].startswith('finished (trained again, --overwrite')
    assert json.loads((out / 'baseline_var0.020_seed1' / 'options.json').read_text())['lr_decay_period'] == 5


def test_precision_counts_as_run_defining_in_the_comparison(tmp_path):
    run = tmp_path / 'baseline_var0.020_seed1'
    run.mkdir()
    spec = {'run_dir': str(run), 'train': ['-e', 'x', '--method', 'baseline', '--precision', 'fp32']}
    (run / 'options.json').write_text(json.dumps({'method': 'baseline', 'precision': 'bf16', 'amp': True,
                                                  'precision_requested': 'bf16', 'max_step': 100}))
    diffs, extend = sweep.differences(spec)
    assert ('precision', 'bf16', 'fp32') in diffs and not extend
    spec['train'][-1] = 'bf16'
    assert sweep.differences(spec) == ([], False)


def test_a_test_record_of_an_earlier_epoch_is_named_and_not_counted(tmp_path, capsys):
    from experiments import collect_results
    run = tmp_path / 'runs' / 'baseline_var0.020_seed1'
    run.mkdir(parents=True)
    (run / 'options.json').write_text(json.dumps({'method': 'baseline', 'color_var': 0.02, 'random_seed': 1}))
    recs = [{'epoch': 1, 'monitor_test_acc': 0.3}, {'tag': 'test', 'test_acc': 0.31, 'epoch': 1, 'color_var': 0.02},
            {'epoch': 2, 'monitor_test_acc': 0.4},
            {'tag': 'test', 'test_acc': 0.9, 'epoch': 2, 'color_var': 0.035}]  # another sigma^2
    (run / 'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
    with pytest.raises(Exception, match='no finished run'):
        collect_results.main([str(tmp_path / 'runs'), '--no_plot'])
    err = capsys.readouterr().err
    assert "its 'test' record evaluates epoch 1, but the run trained to epoch 2" in err
    append_line(str(run / 'results.jsonl'), json.dumps({'tag': 'test', 'test_acc': 0.42, 'epoch': 2,
                                                        'color_var': 0.02}))
    agg = collect_results.main([str(tmp_path / 'runs'), '--no_plot'])
    assert agg['cells'][('baseline', '0.020')]['values'] == [0.42]


def test_a_probe_result_is_kept_when_a_plain_test_follows():
    recs = [{'epoch': 3}, {'tag': 'test', 'test_acc': 0.5, 'epoch': 3, 'probe_color_acc': 0.7},
            {'tag': 'test', 'test_acc': 0.5, 'epoch': 3}]
    test, stale = records.current_test(recs)
    assert test['probe_color_acc'] == 0.7 and stale is None


# -- 3. a cut last line ----------------------------------------------------------------------------------

def test_a_record_written_after_a_cut_line_stays_whole(tmp_path, capsys):
    path = tmp_path / 'results.jsonl'
    path.write_text(json.dumps({'epoch': 1}) + '\n' + '{"epoch": 2, "loss_c')  # a kill during the write
    append_line(str(path), json.dumps({'tag': 'test', 'test_acc': 0.5}))
    assert read_jsonl(str(path)) == [{'epoch': 1}, {'tag': 'test', 'test_acc': 0.5}]
    assert 'results.jsonl, line 2: not a JSON record' in capsys.readouterr().err


def test_test_py_after_a_cut_line_leaves_a_test_record(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--dry_run', '--max_step', 1)
                  ).returncode == 0
    with open(runs / 'r' / 'results.jsonl', 'a') as fh:
        fh.write('{"epoch": 2, "lo')
    proc = run_py(['test.py', '-e', 'r', '--save_dir', runs, '--data_dir', small_data_dir, '--no_generate'])
    assert proc.returncode == 0, proc.stderr
    assert records.load_runs(runs)[0]['test'] is not None


# -- 4, 5. links and run names ---------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['.lock', 'results.jsonl', 'train.log'])
def test_a_link_in_a_run_folder_is_refused_and_the_outside_file_untouched(small_data_dir, tmp_path, name):
    runs = tmp_path / 'runs'
    (runs / 'r').mkdir(parents=True)
    outside = tmp_path / 'outside.txt'
    outside.write_text('keep me\n')
    target = outside if name == '.lock' else tmp_path / 'created_outside'
    os.symlink(target, runs / 'r' / name)
    proc = run_py(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--dry_run', '--max_step', 1))
    assert_user_error(proc, 'is a symbolic link')
    assert outside.read_text() == 'keep me\n' and not (tmp_path / 'created_outside').exists()


def test_append_line_refuses_a_link(tmp_path):
    from utils import UserError
    outside = tmp_path / 'outside.jsonl'
    outside.write_text('')
    os.symlink(outside, tmp_path / 'results.jsonl')
    with pytest.raises(UserError, match='symbolic link'):
        append_line(str(tmp_path / 'results.jsonl'), '{}')
    assert outside.read_text() == ''


@pytest.mark.parametrize('name', ['../../escape', '/tmp/abs_run', '', '.', 'x' * 300])
def test_a_run_name_is_one_folder_name(small_data_dir, tmp_path, name):
    runs = tmp_path / 'a' / 'runs'
    proc = run_py(train_args(small_data_dir, runs, name, '--method', 'baseline', '--dry_run', '--max_step', 1))
    assert proc.returncode == 2 and 'exp_name' in proc.stderr, proc.stderr
    assert not runs.exists() and not (tmp_path / 'escape').exists() and not os.path.exists('/tmp/abs_run')


def test_the_resume_command_of_an_overwritten_run_drops_overwrite():
    from train import command_line
    line = command_line(['train.py', '-e', 'r', '--overwrite', '--max_step', '3'], drop_resume=True)
    assert line == 'python train.py -e r --max_step 3'


# -- 7, 8. signals ---------------------------------------------------------------------------------------

def test_ctrl_c_to_the_smoke_sweep_stops_it_with_130(small_data_dir, tmp_path):
    out = tmp_path / 'smoke'
    proc = popen(['-m', 'experiments.sweep', '--smoke', '--out', out, '--data_dir', small_data_dir,
                  '--', '--no_generate', '--max_step', 1000])
    base = out / 'baseline_var0.020_seed1'
    wait_for(lambda: len(_epochs(base)) >= 1, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert 'relaunch the same command' in stderr
    assert not any((out / f'{m}_var0.020_seed1' / 'options.json').exists() for m in ('lnl', 'blindeye', 'gray'))


def test_a_dry_run_resumed_after_an_interrupt_equals_a_straight_run(small_data_dir, tmp_path, monkeypatch):
    """The interrupt arrives in epoch 2's only batch; the resumed run goes on with epoch 3, as the straight
    run does (before: it trained a second batch in epoch 2)."""
    import methods
    import torch
    runs = tmp_path / 'runs'
    base = ['--method', 'baseline', '--dry_run', '--max_step', 3, '--precision', 'fp32']
    assert run_py(train_args(small_data_dir, runs, 'straight', *base)).returncode == 0
    calls = []
    update = methods.Baseline.update

    def interrupted_update(self, *a):
        calls.append(1)
        out = update(self, *a)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the trainer's handler saves after this batch
        return out
    monkeypatch.setattr(methods.Baseline, 'update', interrupted_update)
    assert run_py(train_args(small_data_dir, runs, 'cut', *base)).returncode == 130
    monkeypatch.setattr(methods.Baseline, 'update', update)
    assert run_py(train_args(small_data_dir, runs, 'cut', *base, '--resume')).returncode == 0

    def numbers(name):
        return [{k: v for k, v in r.items() if k != 'epoch_time_s'} for r in read_jsonl(str(runs / name / 'results.jsonl'))]
    assert numbers('cut') == numbers('straight')
    a = torch.load(runs / 'cut' / 'checkpoint_last.pth', weights_only=True)['net_state_dict']
    b = torch.load(runs / 'straight' / 'checkpoint_last.pth', weights_only=True)['net_state_dict']
    assert all(torch.equal(a[k], b[k]) for k in a)

