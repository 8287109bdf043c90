"""Per-class stroke-colour statistics of a Colored-MNIST file, compared with the authors' released file.

``released_color_stats_0.020.csv`` (beside this module) holds the statistics of the authors' released
``mnist_10color_jitter_var_0.020.npy``, training split, per digit class, with the estimator described
in its header: per image, flatten the (28, 28, 3) uint8 image in row-major order, keep the elements
greater than 2 and take the first three as (r, g, b); ``mean_*`` is the class mean (0..255),
``var_*`` the class variance of value / 255. :func:`class_stats` is that estimator;
:func:`compare` puts a file beside the released numbers; :func:`check_file` is the generator's ``--check``
(the comparison printed, and written into a README section with ``--readme``).

Usage::

    python -m dataset.colored_mnist --check data/mnist_10color_jitter_var_0.020.npy
"""
import os
import sys

import numpy as np

from dataset.palettes import palette_of
from dataset.validation import load
from utils import replace_readme_section

REFERENCE_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'released_color_stats_0.020.csv')
REFERENCE_VAR = 0.020
MEAN_TOL = 1.0     # 0..255 units
VAR_TOL = 0.002    # variance of value / 255
CHANNELS = 'RGB'


def read_reference(path=REFERENCE_CSV):
    """``(means, variances)``, each (10, 3) float64, from the released statistics CSV."""
    rows = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith('#') or line.startswith('digit'):
                continue
            rows.append([float(x) for x in line.split(',')])
    table = np.array(rows, dtype=np.float64)
    order = np.argsort(table[:, 0])
    table = table[order]
    if table.shape != (10, 7) or not (table[:, 0] == np.arange(10)).all():
        raise ValueError(f'{path}: expected one row per digit 0..9 with 7 columns')
    return table[:, 1:4], table[:, 4:7]


def first_three_bright(images, threshold=2, chunk=8192):
    """(N, 3) float64: per image, the first three elements > ``threshold`` of the flattened image.

    The estimator of the released statistics. For a flat stroke colour whose three channels are all
    above the threshold this is the colour itself; a channel at or below it is skipped, so the
    estimate of a channel near 0 borrows from the next channel (exactly as in the released numbers).
    """
    out = np.zeros((len(images), 3), dtype=np.float64)
    for start in range(0, len(images), chunk):
        flat = images[start:start + chunk].reshape(min(chunk, len(images) - start), -1)
        bright = flat > threshold
        # stable argsort of "not bright" puts the bright positions first, in their original order
        idx = np.argsort(~bright, axis=1, kind='stable')[:, :3]
        out[start:start + len(flat)] = np.take_along_axis(flat, idx, axis=1)
    return out


def class_stats(images, labels, num_classes=10):
    """``(means, variances, counts)``: (C, 3), (C, 3), (C,) by the released file's estimator."""
    est = first_three_bright(images)
    labels = np.asarray(labels)
    means = np.full((num_classes, 3), np.nan)
    variances = np.full((num_classes, 3), np.nan)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    for k in range(num_classes):
        e = est[labels == k]
        if len(e):
            means[k] = e.mean(0)
            variances[k] = (e / 255.0).var(0)
    return means, variances, counts


def compare(images, labels, reference=None):
    """Statistics of ``images`` beside the released ones: a dict with the differences and the worst cells."""
    ref_m, ref_v = read_reference() if reference is None else reference
    means, variances, counts = class_stats(images, labels)
    dm, dv = means - ref_m, variances - ref_v
    im = np.unravel_index(np.nanargmax(np.abs(dm)), dm.shape)
    iv = np.unravel_index(np.nanargmax(np.abs(dv)), dv.shape)
    return {'means': means, 'variances': variances, 'counts': counts, 'ref_means': ref_m, 'ref_vars': ref_v,
            'mean_diff': dm, 'var_diff': dv,
            'worst_mean': (int(im[0]), CHANNELS[im[1]], float(dm[im])),
            'worst_var': (int(iv[0]), CHANNELS[iv[1]], float(dv[iv]))}


def format_comparison(result, mean_tol=MEAN_TOL, var_tol=VAR_TOL):
    lines = ['digit     n   mean R,G,B (this file)      released                    difference            '
             'var difference (x1e-3)']
    for k in range(len(result['means'])):
        m, r, d, dv = result['means'][k], result['ref_means'][k], result['mean_diff'][k], result['var_diff'][k]
        lines.append(f'{k:>5} {result["counts"][k]:>5}   '
                     f'{m[0]:6.1f},{m[1]:6.1f},{m[2]:6.1f}   {r[0]:6.1f},{r[1]:6.1f},{r[2]:6.1f}   '
                     f'{d[0]:+5.2f},{d[1]:+5.2f},{d[2]:+5.2f}   '
                     f'{1e3 * dv[0]:+5.2f},{1e3 * dv[1]:+5.2f},{1e3 * dv[2]:+5.2f}')
    k, ch, d = result['worst_mean']
    kv, chv, dv = result['worst_var']
    lines.append(f'worst mean: digit {k} {ch} {d:+.2f} (tolerance +-{mean_tol}); '
                 f'worst variance: digit {kv} {chv} {dv:+.4f} (tolerance +-{var_tol})')
    return '\n'.join(lines)


def within_tolerance(result, mean_tol=MEAN_TOL, var_tol=VAR_TOL):
    return abs(result['worst_mean'][2]) <= mean_tol and abs(result['worst_var'][2]) <= var_tol


def markdown_comparison(result, command, mean_tol=MEAN_TOL, var_tol=VAR_TOL):
    """The comparison as a Markdown table under the command that produced it (for the README)."""
    lines = [f'`{command}`', '',
             '| digit | images | this file: mean R, G, B | released | difference | variance difference (×10⁻³) |',
             '|---|---|---|---|---|---|']
    for k in range(len(result['means'])):
        m, r, d, dv = result['means'][k], result['ref_means'][k], result['mean_diff'][k], result['var_diff'][k]
        lines.append(f'| {k} | {result["counts"][k]} | {m[0]:.1f}, {m[1]:.1f}, {m[2]:.1f} | '
                     f'{r[0]:.1f}, {r[1]:.1f}, {r[2]:.1f} | {d[0]:+.2f}, {d[1]:+.2f}, {d[2]:+.2f} | '
                     f'{1e3 * dv[0]:+.2f}, {1e3 * dv[1]:+.2f}, {1e3 * dv[2]:+.2f} |')
    k, ch, d = result['worst_mean']
    kv, chv, dv = result['worst_var']
    verdict = 'within' if within_tolerance(result, mean_tol, var_tol) else '**outside**'
    lines += ['', f'Worst mean: digit {k} {ch} {d:+.2f} (tolerance ±{mean_tol}); worst variance: digit {kv} {chv} '
              f'{dv:+.4f} (tolerance ±{var_tol}): {verdict} tolerance.']
    return '\n'.join(lines)


def check_file(path, readme=None, section='palette_check'):
    """``--check``: the released-statistics comparison of one file; exit status 1 when out of tolerance."""
    data = load(path)
    found = palette_of(data['mean_colors']) if 'mean_colors' in data else None
    if len(data['train_label']) != 60000:
        print(f'note: {path} has {len(data["train_label"])} training images, the released file 60000')
    result = compare(data['train_image'], data['train_label'])
    print(f'{path}: per-class stroke colour of the training split vs the released sigma^2 = 0.020 file '
          f'({REFERENCE_CSV})')
    print(format_comparison(result))
    ok = within_tolerance(result)
    print('within tolerance' if ok else 'OUT OF TOLERANCE')
    if readme:
        command = f'python -m dataset.colored_mnist --check {path}'
        head = (f'Palette recorded in the file: {found or "no known palette"}.\n\n' if 'mean_colors' in data
                else 'The file records no palette.\n\n')
        replace_readme_section(readme, section, head + markdown_comparison(result, command))
        print(f'wrote the comparison into {readme} ({section})')
    if not ok:
        sys.exit(1)
