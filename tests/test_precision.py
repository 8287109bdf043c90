"""--precision: fp32, bf16, or auto (bf16 where the device computes it natively); the run records which."""
import json

import torch

from conftest import run_py
from option import get_option
import utils


def test_auto_picks_bf16_only_where_the_cpu_has_it(monkeypatch):
    cpu = torch.device('cpu')
    monkeypatch.setattr(utils.runtime, 'cpu_features', lambda: {'avx2', 'avx512f', 'avx512_bf16'})
    opt = get_option(['-e', 'x', '--precision', 'auto'])
    assert utils.resolve_precision(opt, cpu) == 'bf16' and opt.amp and opt.precision_requested == 'auto'
    assert utils.resolve_precision(get_option(['-e', 'x']), cpu) == 'bf16'  # auto is the default
    monkeypatch.setattr(utils.runtime, 'cpu_features', lambda: {'avx2', 'amx_bf16'})
    assert utils.resolve_precision(get_option(['-e', 'x', '--precision', 'auto']), cpu) == 'bf16'
    monkeypatch.setattr(utils.runtime, 'cpu_features', lambda: {'avx2', 'avx512f'})
    opt = get_option(['-e', 'x', '--precision', 'auto'])
    assert utils.resolve_precision(opt, cpu) == 'fp32' and not opt.amp


def test_explicit_choices_and_the_amp_alias(monkeypatch):
    monkeypatch.setattr(utils.runtime, 'cpu_features', lambda: set())
    cpu = torch.device('cpu')
    opt = get_option(['-e', 'x'])
    assert opt.precision == 'auto' and utils.resolve_precision(opt, cpu) == 'fp32'  # auto, no native bf16 here
    opt = get_option(['-e', 'x', '--amp'])
    assert utils.resolve_precision(opt, cpu) == 'bf16' and opt.amp and opt.precision_requested == 'bf16'
    opt = get_option(['-e', 'x', '--precision', 'bf16'])
    assert utils.resolve_precision(opt, cpu) == 'bf16' and opt.amp
    # resolving twice (train.py, then build_method) keeps what was asked for
    utils.resolve_precision(opt, cpu)
    assert opt.precision_requested == 'bf16'


def test_a_run_records_its_precision_and_resume_keeps_it(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    base = ['train.py', '-e', 'p', '--data_dir', small_data_dir, '--save_dir', runs, '--no_generate', '--no_progress',
            '--method', 'baseline', '--dry_run']
    assert run_py(base + ['--max_step', 1, '--precision', 'bf16']).returncode == 0
    opts = json.loads((runs / 'p' / 'options.json').read_text())
    assert opts['precision'] == 'bf16' and opts['amp'] is True and opts['precision_requested'] == 'bf16'
    assert 'precision bf16' in (runs / 'p' / 'train.log').read_text()
    proc = run_py(base + ['--max_step', 2, '--resume', '--precision', 'fp32'])  # another precision: refused
    assert proc.returncode != 0 and "precision='fp32' (checkpoint: 'bf16')" in proc.stderr
    assert run_py(base + ['--max_step', 2, '--resume', '--precision', 'bf16']).returncode == 0


def test_bf16_on_a_cpu_that_emulates_it_is_warned_about(monkeypatch):
    from run_setup import warnings_for
    cpu = torch.device('cpu')
    monkeypatch.setattr(utils.runtime, 'cpu_features', lambda: {'avx2'})
    lines = warnings_for(get_option(['-e', 'x', '--method', 'baseline', '--precision', 'bf16']), cpu)
    assert len(lines) == 1 and 'emulates' in lines[0] and '--precision auto or fp32' in lines[0], lines
    assert warnings_for(get_option(['-e', 'x', '--method', 'baseline', '--precision', 'fp32']), cpu) == []
    monkeypatch.setattr(utils.runtime, 'cpu_features', lambda: {'avx2', 'avx512_bf16'})
    assert warnings_for(get_option(['-e', 'x', '--method', 'baseline', '--precision', 'bf16']), cpu) == []
