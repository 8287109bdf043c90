"""The mean colours of the ten digit classes (palettes), and which palette a Colored-MNIST file holds.

:data:`PALETTES`: ``released`` (default) reproduces the per-class colour statistics of the authors' released
sigma^2 = 0.020 file; ``supplementary_names`` holds the dictionary RGB values of the colour names in the
paper's supplementary material (five of them differ from the released file by up to 17 units). A generated
file records its palette under the extra key ``mean_colors`` (10, 3) uint8 (:func:`palette_of` names it);
for a file without it (the authors' own, or one generated before files recorded it) the palette is inferred
from its training colours (:func:`infer_palette`). :func:`mean_colors_of` is what a run reads: the file's
mean colours, checked against the ``--palette`` it asks for (:func:`add_palette_argument`).
"""
import numpy as np

from dataset.color_draw import expected_byte_mean
from utils import UserError

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


def check_palette(palette):
    if palette not in PALETTES:
        raise UserError(f'unknown palette {palette!r}; choose one of {", ".join(PALETTES)}')
    return palette


def add_palette_argument(parser):
    """The ``--palette`` option, the same for the generator, train.py and sweep.py."""
    parser.add_argument('--palette', choices=sorted(PALETTES), default=DEFAULT_PALETTE,
                        help=f'mean colours of the ten classes: {DEFAULT_PALETTE} (those of the authors\' released '
                             'files) or supplementary_names (the RGB values of the colour names in the paper\'s '
                             'supplementary material; its files end in _supplementary_names.npy)')


def palette_of(colors):
    """The name of the palette whose colours are ``colors``, or ``None``."""
    for name, pal in PALETTES.items():
        if np.array_equal(pal, colors):
            return name
    return None


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
