"""PNG figures, the parts every command draws with: matplotlib without a screen, an atomic write, a banner, a
confusion matrix with each class's colour along its axes; a grid of input images for TensorBoard."""
import numpy as np

from utils.files import atomic_open


def pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


# Inches added above a figure for its banner.
BANNER_HEIGHT = 0.45


def add_banner(fig, banner):
    """``banner`` in red, boxed, in a band added above the figure's content (a smoke run's mark): the figure
    grows by :data:`BANNER_HEIGHT` and every axes and figure text keeps its size and place in inches, so
    the banner covers nothing."""
    height = fig.get_figheight()
    scale = height / (height + BANNER_HEIGHT)
    fig.set_figheight(height + BANNER_HEIGHT)
    for ax in fig.axes:
        x0, y0, width, h = ax.get_position(original=True).bounds
        ax.set_position([x0, y0 * scale, width, h * scale])
    for text in fig.texts:
        x, y = text.get_position()
        text.set_position((x, y * scale))
    fig.text(0.5, (1 + scale) / 2, banner, ha='center', va='center', fontsize=11, fontweight='bold', color='red',
             bbox=dict(facecolor='white', edgecolor='red', boxstyle='round,pad=0.3'))


def save_figure(fig, path, banner=None):
    """Write ``fig`` to ``path`` as a PNG atomically and close it; ``banner`` goes above its content
    (:func:`add_banner`)."""
    plt = pyplot()
    if banner:
        add_banner(fig, banner)
    with atomic_open(path, 'wb') as fh:
        fig.savefig(fh, format='png', dpi=120)
    plt.close(fig)
    return path


def draw_confusion(ax, confusion, title, colors):
    """A row-normalised confusion matrix on ``ax``, each class's colour (``colors``, RGB in 0..1) drawn along
    both axes."""
    from matplotlib.patches import Rectangle
    conf = np.asarray(confusion, dtype=np.float64)
    conf = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    n = len(conf)
    ax.imshow(conf, cmap='Blues', vmin=0, vmax=1, extent=(-0.5, n - 0.5, n - 0.5, -0.5))
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f'{conf[i, j]:.2f}'.lstrip('0') if conf[i, j] < 1 else '1', ha='center',
                    va='center', fontsize=6, color='white' if conf[i, j] > 0.5 else 'black')
        ax.add_patch(Rectangle((i - 0.5, -1.4), 1, 0.8, color=colors[i % len(colors)], clip_on=False))
        ax.add_patch(Rectangle((-1.4, i - 0.5), 0.8, 1, color=colors[i % len(colors)], clip_on=False))
    ax.set_xlim(-1.5, n - 0.5)
    ax.set_ylim(n - 0.5, -1.5)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel('predicted digit')
    ax.set_ylabel('true digit')
    ax.set_title(title, fontsize=10)


def confusion_png(confusion, path, title, mean_colors, banner=None):
    """One run's confusion matrix (test.py), the class mean colours (RGB bytes) along both axes; ``banner``
    above it (a smoke run's mark)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5))
    draw_confusion(ax, confusion, title, np.asarray(mean_colors) / 255.0)
    fig.tight_layout()
    return save_figure(fig, path, banner)


def image_grid(images, ncol=8, padding=2):
    """Images (N, H, W, C) tiled ``ncol`` to a row with ``padding`` zero pixels around each, as one (H', W', C)
    array of their dtype: the layout of torchvision's ``make_grid`` (which costs a second of imports)."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    ncol = min(ncol, n)
    nrow = -(-n // ncol)
    grid = np.zeros((nrow * (h + padding) + padding, ncol * (w + padding) + padding, c), dtype=images.dtype)
    for i, image in enumerate(images):
        y, x = padding + (i // ncol) * (h + padding), padding + (i % ncol) * (w + padding)
        grid[y:y + h, x:x + w] = image
    return grid
