"""Loading a Colored-MNIST file (ours or the authors') and checking what it holds before a run uses it.

:func:`load` reads a file through :func:`dataset.npy_files.read_npy` (no code runs while it loads) and
:func:`validate` checks the dict: the keys of :data:`KEYS` (``test_gray`` may be absent, as in files that
predate it), their shapes, dtypes and labels 0..9, and the extra keys ``mean_colors`` and ``seed`` when
present. Every problem is one :class:`utils.UserError` naming the file and what to do. :func:`check_seed`
compares the generator seed a file records with the one a run asks for.
"""
import os
import pickle
import zipfile

import numpy as np

from dataset.npy_files import generate_command, read_npy
from utils import UserError

KEYS = {
    'train_image': ((None, 28, 28, 3), np.uint8),
    'train_label': ((None,), None),
    'test_image': ((None, 28, 28, 3), np.uint8),
    'test_label': ((None,), None),
    'test_gray': ((None, 28, 28), np.uint8),
}
OPTIONAL_KEYS = ('test_gray',)  # read only by test.py --gray_view original


def validate(data, path):
    """Check the keys, shapes, dtypes and labels of a loaded dict; ``UserError`` naming ``path``."""
    if not isinstance(data, dict):
        raise UserError(f'{path} holds a {type(data).__name__}, not the dict of a Colored-MNIST file; '
                        f'regenerate it with: {generate_command(os.path.dirname(path) or ".", 0.02)}')
    missing = [k for k in KEYS if k not in data and k not in OPTIONAL_KEYS]
    if missing:
        raise UserError(f'{path} lacks the key(s) {", ".join(missing)}; expected {", ".join(KEYS)}')
    for key, (shape, dtype) in KEYS.items():
        if key not in data:
            continue
        arr = data[key]
        if not isinstance(arr, np.ndarray):
            raise UserError(f'{path}: {key} is a {type(arr).__name__}, expected a numpy array')
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = '(N,' + ','.join(str(s) for s in shape[1:]) + ')'
            raise UserError(f'{path}: {key} has shape {arr.shape}, expected {want}')
        if dtype is not None and arr.dtype != dtype:
            raise UserError(f'{path}: {key} has dtype {arr.dtype}, expected {np.dtype(dtype)}')
        if dtype is None and not np.issubdtype(arr.dtype, np.integer):
            raise UserError(f'{path}: {key} has dtype {arr.dtype}, expected integer labels')
    for split in ('train', 'test'):
        n_img, n_lab = len(data[f'{split}_image']), len(data[f'{split}_label'])
        if n_img != n_lab:
            raise UserError(f'{path}: {n_img} {split} images but {n_lab} {split} labels')
        labels = data[f'{split}_label']
        if n_lab and (labels.min() < 0 or labels.max() > 9):
            raise UserError(f'{path}: {split}_label has values outside 0..9 '
                            f'(min {labels.min()}, max {labels.max()})')
    if 'test_gray' in data and len(data['test_gray']) != len(data['test_image']):
        raise UserError(f'{path}: test_gray has {len(data["test_gray"])} images, '
                        f'test_image has {len(data["test_image"])}')
    if 'mean_colors' in data:
        mc = data['mean_colors']
        if not isinstance(mc, np.ndarray) or mc.shape != (10, 3) or mc.dtype != np.uint8:
            desc = f'{mc.dtype}{mc.shape}' if isinstance(mc, np.ndarray) else type(mc).__name__
            raise UserError(f'{path}: mean_colors is {desc}, expected a (10, 3) uint8 array; '
                            'delete the file and regenerate it')
    if 'seed' in data:
        seed = data['seed']
        if not (isinstance(seed, np.ndarray) and seed.shape == () and np.issubdtype(seed.dtype, np.integer)):
            raise UserError(f'{path}: seed is not an integer; delete the file and regenerate it')
    return data


def check_seed(data, path, seed):
    """The generator seed a file records (None for a file that does not record it: the authors' own, or one
    generated before files recorded it). ``UserError`` when ``seed`` (a run's ``--data_seed``) is given and
    the file was not generated with it; ``None`` accepts the file that is there."""
    recorded = int(data['seed']) if 'seed' in data else None
    if seed is not None and recorded != int(seed):
        found = f'was generated with seed {recorded}' if recorded is not None else \
            'does not record the seed it was generated with'
        raise UserError(f'{path} {found}, but the run asks for --data_seed {seed}: give another --data_dir (the file '
                        'is generated there with that seed), or delete this file')
    return recorded


def load(path, color_var=None):
    """Load and validate a Colored-MNIST file (ours or the authors').

    The authors' format is a pickle; it is read with :func:`read_npy`, which admits only arrays, dicts,
    strings and numbers, so a file cannot run code while it loads.
    """
    if os.path.isdir(path):
        raise UserError(f'{path} is a folder, not a Colored-MNIST file; move it away or use another --data_dir')
    if not os.path.isfile(path):
        hint = (f'; make it with: {generate_command(os.path.dirname(path) or ".", color_var)}'
                if color_var is not None else '')
        raise UserError(f'data file {path} does not exist{hint}')
    try:
        obj = read_npy(path)
        data = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == () \
            else obj
    except UserError:
        raise
    except (ValueError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile,
            UnicodeDecodeError, AttributeError, ImportError, IndexError, TypeError, KeyError, MemoryError,
            SyntaxError) as exc:
        raise UserError(f'{path} is truncated or not a Colored-MNIST file ({type(exc).__name__}: '
                        f'{str(exc)[:120]}); delete it and regenerate it') from None
    return validate(data, path)
