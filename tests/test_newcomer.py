"""A newcomer's first hour: the smoke command, TensorBoard, marked smoke numbers, help and warnings."""
import glob
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, assert_user_error, make_small_data, run_py
from utils import RUNS_DIR, read_jsonl


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    """``python -m experiments.sweep --smoke`` on a small data file, once for the module."""
    base = tmp_path_factory.mktemp('smoke')
    data_dir = base / 'data'
    make_small_data(data_dir)
    out = base / 'smoke'
    proc = run_py(['-m', 'experiments.sweep', '--smoke', '--out', out, '--data_dir', data_dir])
    return proc, out


@pytest.mark.slow
def test_smoke_runs_everything_and_says_where_the_outputs_are(smoke):
    proc, out = smoke
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import methods
    assert f'smoke run: {len(methods.METHODS)} runs and the table' in proc.stdout  # every method, CSAD's too
    for name in ('fig4.md', 'fig4.csv', 'fig4.png', 'fig4_curves.png', 'fig4_confusion.png'):
        assert str(out / name) in proc.stdout and (out / name).exists()
    assert (out / 'fig4.md').read_text().startswith('**SMOKE RUN (--dry_run)')
    for method in methods.method_names():
        recs = [json.loads(x) for x in (out / f'{method}_var0.020_seed1' / 'results.jsonl').read_text().splitlines()]
        assert recs and all(r.get('dry_run') is True for r in recs)
        assert any('test_acc' in r for r in recs)


def test_smoke_numbers_never_reach_a_readme(smoke, tmp_path):
    _, out = smoke
    readme = tmp_path / 'README.md'
    readme.write_text('<!-- results:begin -->\n<!-- results:end -->\n')
    proc = run_py(['-m', 'experiments.collect_results', out, '--out_prefix', tmp_path / 'f', '--readme', readme])
    assert_user_error(proc, 'smoke runs', 'not written into a README')
    assert readme.read_text() == '<!-- results:begin -->\n<!-- results:end -->\n'


def test_tensorboard_events_hold_the_train_and_test_scalars(smoke):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, out = smoke
    acc = EventAccumulator(str(out / 'lnl_var0.020_seed1'))
    acc.Reload()
    tags = set(acc.Tags()['scalars'])
    assert {'train/loss_cls', 'train/loss_mi', 'train/loss_color', 'train/monitor_test_acc', 'test/acc',
            'test/aligned_acc', 'test/conflicting_acc', 'test/color_acc', 'test/probe_color_acc'} <= tags, tags
    assert [e.step for e in acc.Scalars('train/loss_cls')] == [1, 2]
    assert 'test/confusion' in acc.Tags()['images']


def test_the_tensorboard_viewer_is_installed():
    proc = subprocess.run([sys.executable, '-m', 'tensorboard.main', '--version_tb'], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
    assert glob.glob(os.path.join(os.path.dirname(sys.executable), 'tensorboard*'))


def test_lnl_from_scratch_and_odd_variances_are_warned_about():
    from option import get_option
    from train import warnings_for
    lines = warnings_for(get_option(['-e', 'x']))
    assert len(lines) == 1 and "paper's recipe starts it from a trained baseline" in lines[0]
    assert warnings_for(get_option(['-e', 'x', '--method', 'lnl', '--use_pretrain', '--checkpoint', 'c'])) == []
    lines = warnings_for(get_option(['-e', 'x', '--method', 'baseline', '--color_var', '0.2']))
    assert len(lines) == 1 and 'outside 0.005..0.1' in lines[0]
    assert warnings_for(get_option(['-e', 'x', '--method', 'gray', '--color_var', '0.05'])) == []


def test_default_folders_do_not_depend_on_the_working_folder():
    from experiments import sweep
    import test as test_py
    from option import get_option
    opt = get_option(['-e', 'x'])
    assert opt.data_dir == os.path.join(ROOT, 'data') and opt.save_dir == os.path.join(ROOT, 'runs')
    args = test_py.build_parser().parse_args(['-e', 'x'])
    assert args.data_dir == opt.data_dir and args.save_dir == opt.save_dir
    assert sweep.parse(['--out', 'o']).data_dir == opt.data_dir


def test_help_texts():
    out = run_py(['-m', 'experiments.sweep', '--help']).stdout
    for flag in ('--color_vars', '--methods', '--seeds', '--launcher', '--smoke'):
        block = out.split(flag, 1)[1].split('\n  --', 1)[0]
        assert len(block.split()) > 3, (flag, block)
    assert 'after a lone --' in out
    out = run_py(['test.py', '--help']).stdout
    assert '(default: None)' not in out and 'checkpoint was trained on)' in out


def test_misplaced_and_misspelled_flags_get_a_hint(tmp_path):
    proc = run_py(['-m', 'experiments.sweep', '--out', tmp_path, '--dry_run'])
    assert_user_error(proc, 'unrecognized arguments: --dry_run', 'go after a lone --')
    proc = run_py(['train.py', '-e', 'x', '--max-step', '3'])
    assert_user_error(proc, '--max-step: did you mean --max_step?')
    proc = run_py(['train.py', '-e', 'x', '--max', '3'])  # no abbreviations
    assert_user_error(proc, 'unrecognized arguments: --max')


def test_smoke_keeps_to_its_own_folder_and_refuses_real_runs(small_data_dir, tmp_path):
    from experiments import sweep
    assert sweep.parse(['--smoke']).out == sweep.SMOKE_DIR and not sweep.SMOKE_DIR.startswith(RUNS_DIR)
    real = tmp_path / 'real' / 'baseline_var0.020_seed1'
    real.mkdir(parents=True)
    (real / 'options.json').write_text(json.dumps({'method': 'baseline', 'dry_run': False}))
    proc = run_py(['-m', 'experiments.sweep', '--smoke', '--out', tmp_path / 'real', '--data_dir', small_data_dir])
    assert_user_error(proc, 'is a real run')
    assert json.loads((real / 'options.json').read_text())['dry_run'] is False


def test_test_py_twice_leaves_one_record_and_warns_on_another_variance(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert run_py(['train.py', '-e', 'r', '--save_dir', runs, '--data_dir', small_data_dir, '--no_generate',
                   '--dry_run', '--max_step', 1]).returncode == 0
    args = ['test.py', '-e', 'r', '--save_dir', runs, '--data_dir', small_data_dir, '--no_generate']
    assert run_py(args).returncode == 0 and run_py(args).returncode == 0
    tests = [r for r in read_jsonl(str(runs / 'r' / 'results.jsonl')) if 'test_acc' in r]
    assert len(tests) == 1
    from dataset import colored_mnist
    from conftest import fake_mnist
    colored_mnist.save(colored_mnist.generate(fake_mnist(), 0.035, seed=3),
                       colored_mnist.file_path(str(small_data_dir), 0.035))
    proc = run_py(args + ['--color_var', '0.035'])
    assert proc.returncode == 0 and 'trained on sigma^2 = 0.020 and is tested on 0.035' in proc.stderr
    assert len([r for r in read_jsonl(str(runs / 'r' / 'results.jsonl')) if 'test_acc' in r]) == 2


def test_messages_that_misled(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert run_py(['train.py', '-e', 'r', '--save_dir', runs, '--data_dir', small_data_dir, '--no_generate',
                   '--dry_run', '--max_step', 1]).returncode == 0
    # a run folder given as --checkpoint
    proc = run_py(['test.py', '--checkpoint', runs / 'r', '--data_dir', small_data_dir])
    assert_user_error(proc, 'is a folder', 'checkpoint_last.pth')
    # a flag that turns something off shows no "(default: True)"
    from option import build_parser
    assert '(default: True)' not in build_parser().format_help()
    # a start that fails before writing anything leaves no folder behind
    proc = run_py(['train.py', '-e', 'nothing', '--save_dir', runs, '--data_dir', tmp_path / 'empty', '--no_generate'])
    assert proc.returncode == 2 and not (runs / 'nothing').exists()


def test_smoke_banner_covers_no_axes_or_labels(tmp_path):
    # the smoke mark sits in its own band above the content: it overlaps no axes, tick label or axis label
    import numpy as np
    from experiments.figures import plot_confusion
    from dataset.palettes import MEAN_COLORS
    confusion = (np.eye(10, dtype=int) * 90 + 1).tolist()
    run = {'seed': 1, 'test': {'confusion': confusion, 'test_acc': 0.9, 'mean_colors': np.asarray(MEAN_COLORS).tolist()},
           'options': {'palette': 'released'}}
    fig_holder = {}
    import experiments.figures as figures
    real_save = figures.save_figure

    def keep(fig, path, banner=None):
        fig_holder['fig'] = fig
        return real_save(fig, path, banner)
    figures.save_figure = keep
    try:
        plot_confusion({'baseline': run, 'lnl': run}, '0.020', str(tmp_path / 'c.png'), banner='SMOKE RUN')
    finally:
        figures.save_figure = real_save
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = fig_holder['fig']
    renderer = FigureCanvasAgg(fig).get_renderer()
    banner = next(t for t in fig.texts if t.get_text() == 'SMOKE RUN').get_window_extent(renderer)
    for ax in fig.axes:
        box = ax.get_tightbbox(renderer)
        assert not box.overlaps(banner), (ax.get_title(), box, banner)


def test_test_py_never_overwrites_the_training_events(smoke, tmp_path, monkeypatch):
    # tensorboardX names an events file by the second it opens it: test.py in the same second as train.py's
    # writer must not replace the training curves
    import shutil
    import time
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, out = smoke
    run = tmp_path / 'lnl_var0.020_seed1'
    shutil.copytree(out / 'lnl_var0.020_seed1', run)
    train_events = sorted(p.name for p in run.iterdir() if p.name.startswith('events.out.tfevents.'))[0]
    second = int(train_events.split('.')[3])
    data_dir = out.parent / 'data'
    monkeypatch.setattr(time, 'time', lambda: second + 0.5)
    proc = run_py(['test.py', '-e', run, '--data_dir', data_dir, '--no_generate'])
    monkeypatch.undo()
    assert proc.returncode == 0, proc.stderr
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert {'train/loss_cls', 'test/acc'} <= set(acc.Tags()['scalars']), acc.Tags()['scalars']


def test_a_dry_run_confusion_figure_carries_the_smoke_mark(small_data_dir, tmp_path):
    """test.py's per-run confusion figure of a --dry_run checkpoint has the smoke band above it (taller than a
    real run's, whose size is the figure's own: 5 inches at 120 dpi)."""
    import matplotlib.image as mpimg
    from conftest import train_args
    runs = tmp_path / 'runs'
    args = train_args(small_data_dir, runs, "r", "--method", "baseline", "--dry_run", "--max_step", 1)
    assert run_py(args).returncode == 0
    assert run_py(['test.py', '-e', 'r', '--save_dir', runs, '--data_dir', small_data_dir]).returncode == 0
    height = mpimg.imread(str(runs / 'r' / 'confusion_test.png')).shape[0]
    assert height > 5 * 120 + 20
