"""What can be checked of the Docker image, the entry scripts, the README and the source files without a Docker
engine."""
import os
import re
import shlex
import subprocess

import pytest

from conftest import ROOT


def _read(name):
    with open(os.path.join(ROOT, name)) as fh:
        return fh.read()


MAX_LINES = 400  # a source file longer than this is doing two jobs
NOT_SOURCE = ('.venv', 'data', 'runs', 'smoke', 'sweeps', 'pretrained', 'docs', '__pycache__')


def test_no_source_file_is_over_the_line_limit():
    long = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in NOT_SOURCE and (d == '.ci' or not d.startswith('.'))]
        for name in files:
            if name.endswith(('.py', '.sh')) or name in ('Dockerfile', 'run'):
                path = os.path.join(folder, name)
                with open(path, encoding='utf-8', errors='replace') as fh:
                    n = sum(1 for _ in fh)
                if n > MAX_LINES:
                    long.append((os.path.relpath(path, ROOT), n))
    assert not long, f'over {MAX_LINES} lines: {long}; split each into the modules of its concepts'


def _dockerfile_instructions():
    text = re.sub(r'\\\n', ' ', _read('Dockerfile'))
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith('#')]


def test_base_image_is_pinned_and_sets_no_cuda_requirement():
    """A plain Python base: the torch wheel brings the CUDA runtime, and no NVIDIA_REQUIRE_CUDA makes the
    container refuse to start on a driver older than a CUDA base image's."""
    froms = [i for i in _dockerfile_instructions() if i.upper().startswith('FROM ')]
    assert len(froms) == 1
    image = froms[0].split()[1]
    name, _, tag = image.partition(':')
    assert name == 'python' and re.match(r'3\.\d+\.\d+-', tag), f'{image}: pin an exact Python image'
    assert not any('NVIDIA_REQUIRE_CUDA' in i for i in _dockerfile_instructions())


def _install_step():
    runs = [i[len('RUN '):] for i in _dockerfile_instructions() if i.startswith('RUN ') and 'pip install' in i]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.parametrize('torch_arg', ['', 'torch==2.14.1+cu126 torchvision==0.29.1+cu126'])
def test_the_image_install_step_installs_the_requirements(tmp_path, torch_arg):
    """The Dockerfile's pip step, run by a shell with a stand-in pip that logs what it is asked to install:
    the pinned requirements by default; with --build-arg TORCH, that torch and the other requirements
    (not the pinned torch as well)."""
    work = tmp_path / 'workspace'
    work.mkdir()
    (work / 'requirements.txt').write_text(_read('requirements.txt'))
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    log = tmp_path / 'pip.log'
    (bindir / 'pip').write_text(f'#!/bin/sh\necho "$@" >> {log}\n'
                                f'if [ "$1 $2" = "install -r" ]; then cat "$3" >> {log}; fi\n')
    (bindir / 'pip').chmod(0o755)
    step = _install_step().replace('/tmp/rest.txt', str(tmp_path / 'rest.txt'))
    env = dict(os.environ, PATH=f'{bindir}:{os.environ["PATH"]}', TORCH=torch_arg)
    proc = subprocess.run(['sh', '-c', step], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    pinned = [ln for ln in _read('requirements.txt').split() if ln.startswith('torch')]
    if torch_arg:
        assert lines[0] == f'install {torch_arg}'
        assert not any(ln in pinned for ln in lines)
        assert 'numpy>=1.24' in lines and 'tqdm>=4.60' in lines
    else:
        assert lines[0] == 'install -r requirements.txt' and all(p in lines for p in pinned)


def test_requirements_installed_and_code_copied():
    ins = _dockerfile_instructions()
    assert any(i.startswith('COPY') and 'requirements.txt' in i for i in ins)
    assert any(re.match(r'COPY \. \.?', i) for i in ins)
    workdir = [i.split()[1] for i in ins if i.startswith('WORKDIR')]
    assert workdir == ['/workspace']
    assert any(i.startswith('CMD') and 'train.sh' in i for i in ins)


def test_requirements_pin_torch():
    req = _read('requirements.txt').split()
    for pkg in ('torch', 'torchvision'):  # pinned to one exact release, whichever it is
        assert any(re.fullmatch(rf'{pkg}==\d+(\.\d+)+', r) for r in req), pkg
    for pkg in ('numpy', 'tensorboardX', 'tqdm', 'matplotlib', 'submitit'):
        assert any(r.startswith(pkg) for r in req), pkg


def test_dockerignore_keeps_data_and_runs_out():
    entries = set(_read('.dockerignore').split())
    assert {'data', 'runs', '.venv', 'venv', '.git'} <= entries
    # the shipped weights go into the image (BASELINE=pretrained, python -m experiments.pretrained): an
    # exception after the rule that leaves checkpoints out (Docker applies the last matching line)
    lines = [ln.strip() for ln in _read('.dockerignore').splitlines()]
    excluded = [i for i, ln in enumerate(lines) if ln in ('**/*.pth', '*.pth', 'pretrained', 'pretrained/*.pth')]
    if excluded:
        assert '!pretrained/*.pth' in lines and lines.index('!pretrained/*.pth') > max(excluded), lines


@pytest.mark.parametrize('script', ['train.sh', 'test.sh', '.ci/run', 'benchmarks/gpu_check.sh'])
def test_entry_scripts_present_executable_and_valid_bash(script):
    path = os.path.join(ROOT, script)
    assert os.access(path, os.X_OK), f'{script} is not executable'
    assert subprocess.run(['bash', '-n', path]).returncode == 0
    mode = subprocess.run(['git', 'ls-files', '-s', script], cwd=ROOT, capture_output=True, text=True).stdout
    if mode:  # in a git checkout the executable bit must be committed too
        assert mode.startswith('100755'), mode


def _readme_commands():
    blocks = re.findall(r'```(?:bash|sh)?\n(.*?)```', _read('README.md'), re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip() and not line.startswith('#')]


def test_documented_docker_commands_reference_existing_paths():
    cmds = _readme_commands()
    build = [c for c in cmds if c.startswith('docker build')]
    run = [c for c in cmds if c.startswith('docker run')]
    assert build and run
    tag = shlex.split(build[0])[shlex.split(build[0]).index('-t') + 1]
    assert shlex.split(build[0])[-1] == '.'
    for cmd in run:
        words = shlex.split(cmd.replace('$PWD', ROOT))
        assert '--gpus' in words and tag in words
        mounts = [words[i + 1] for i, w in enumerate(words) if w == '-v']
        targets = {m.split(':')[1] for m in mounts}
        assert {'/workspace/data', '/workspace/runs'} <= targets
        after = words[words.index(tag) + 1:]
        if after:
            assert after[0] == 'bash' and os.path.exists(os.path.join(ROOT, after[1])), after


def test_ci_runs_the_readme_test_command_verbatim():
    ci = [line.strip() for line in _read('.ci/run').splitlines()]
    test_cmds = [c for c in _readme_commands() if 'pytest' in c]
    assert len(test_cmds) == 1, test_cmds
    assert test_cmds[0] in ci


def test_first_day_times_the_readme_test_command(monkeypatch):
    """benchmarks/first_day.py times the README's test command, not one of its own."""
    import sys
    from benchmarks import first_day
    ran = []
    monkeypatch.setattr(first_day, 'timed', lambda cmd: ran.append(cmd) or {'command': ' '.join(cmd[1:]),
                                                                            'seconds': 1.0, 'returncode': 0})
    assert first_day.main([]) == 0
    test_cmd = next(c for c in _readme_commands() if 'pytest' in c)
    assert ran[0][0] == sys.executable and test_cmd.endswith('python ' + ' '.join(ran[0][1:])), ran[0]
    assert ran[0][1:4] == ['-m', 'pytest', '-q']


def test_gpu_check_refuses_without_a_gpu(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    res = subprocess.run(['bash', os.path.join(ROOT, 'benchmarks', 'gpu_check.sh'), str(tmp_path / 'out')],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert 'no CUDA device' in res.stderr and 'Traceback' not in res.stderr
    assert not (tmp_path / 'out').exists()
