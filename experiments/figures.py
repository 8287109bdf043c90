"""Figures (PNG): the Fig. 4 accuracy plot, the training curves, confusion matrices with the class colours."""
import textwrap

import numpy as np

from methods import display_name, plot_color
from utils import UserError
from utils.plots import draw_confusion, pyplot, save_figure


def plot_fig4(agg, path, title, paper, banner=None):
    """Accuracy against sigma^2, mean ± std over seeds, the paper's curves (``paper``) dashed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for m in agg['methods']:
        cvs = [cv for cv in agg['color_vars'] if (m, cv) in agg['cells']]
        if not cvs:
            continue
        cells = [agg['cells'][(m, cv)] for cv in cvs]
        line = ax.errorbar([float(cv) for cv in cvs], [c['mean'] for c in cells],
                           yerr=[c['std'] or 0.0 for c in cells], fmt='-o', color=plot_color(m), capsize=3,
                           markersize=5, label=f'{display_name(m)} (ours)')
        if paper.get(m):
            keys = sorted(paper[m], key=float)
            ax.plot([float(k) for k in keys], [paper[m][k] for k in keys], '--', color=line[0].get_color(),
                    alpha=0.8, label=f'{display_name(m)} (paper)')
    ax.set_xlabel('colour variance $\\sigma^2$')
    ax.set_ylabel('test accuracy (unbiased test set)')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path, banner)


def plot_curves(curves, path, banner=None):
    """Monitored test accuracy against epoch, one panel per sigma^2, the legend in a column of its own beside
    the panels (it covers no curve). ``curves``: {sigma^2: [(method, [(epoch, acc), ...], start), ...]} in
    drawing order (:func:`records.curves`); a run that started from another run's weights is drawn after
    that run's epochs (x = ``start`` + its own epoch), one whose start is unknown (``start`` None) from 0,
    dotted. None when empty."""
    if not curves:
        return None
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    cvs = sorted(curves, key=float)
    cols = min(len(cvs), 4)
    rows = (len(cvs) + cols - 1) // cols
    legend_width = 1.9
    fig = plt.figure(figsize=(4 * cols + legend_width, 3.2 * rows + 0.5))
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[4] * cols + [legend_width])
    axes = []
    for k in range(rows * cols):
        axes.append(fig.add_subplot(grid[k // cols, k % cols], sharey=axes[0] if axes else None))
    handles = {}
    unknown, continued = False, []
    for ax, cv in zip(axes, cvs):
        right = 1
        for method, points, start in curves[cv]:
            unknown = unknown or start is None
            if start and display_name(method) not in continued:
                continued.append(display_name(method))
            xs = [(start or 0) + p[0] for p in points]
            line, = ax.plot(xs, [p[1] for p in points], ':' if start is None else '-', color=plot_color(method),
                            alpha=0.8, linewidth=1.2, marker='.' if len(points) < 30 else None)
            handles.setdefault(display_name(method), line)
            right = max(right, max(xs))
        ax.set_xlim(0, right + max(1, 0.03 * right))  # whole epochs on the axis, even for a run of one epoch
        ax.set_title(f'$\\sigma^2$ = {cv}', fontsize=10)
        ax.set_xlabel('epoch, its start run\'s included' if continued else 'epoch')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for k, ax in enumerate(axes):
        if k % cols == 0:
            ax.set_ylabel('monitored test accuracy')
    for ax in axes[len(cvs):]:
        ax.axis('off')
    side = fig.add_subplot(grid[:, cols])
    side.axis('off')
    side.legend(list(handles.values()), list(handles), loc='center left', fontsize=8, frameon=False)
    caption = 'Test accuracy during training (one line per seed)'
    if continued:
        caption += (f'\n{" and ".join(continued)} start{"s" if len(continued) == 1 else ""} from another run\'s weights: '
                    'drawn after that run\'s epochs (x = its epochs + their own)')
    if unknown:
        caption += '\ndotted: a run started from a file whose epochs are unknown, drawn from 0'
    width = int(fig.get_figwidth() * 11)  # characters of a 10-point line across the figure
    caption = '\n'.join(textwrap.fill(line, width) for line in caption.split('\n'))
    fig.set_figheight(fig.get_figheight() + 0.17 * caption.count('\n'))
    fig.suptitle(caption, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, banner)


def plot_confusion(chosen, cv, path, banner=None):
    """The class mean colours, then the confusion matrices of ``chosen`` ({method: run}, Baseline and LNL) at
    one sigma^2, like the paper's confusion figure."""
    from dataset.palettes import MEAN_COLORS, PALETTE_NAMES, palette_of
    if not chosen:
        raise UserError(f'--confusion {cv}: no Baseline or LNL run at sigma^2={cv} has a test record '
                        f'with a confusion matrix')
    # the class colours of the data the runs were tested on (records from before files recorded them: the default)
    recorded = next((r['test']['mean_colors'] for r in chosen.values() if r['test'].get('mean_colors')), None)
    mean_colors = np.asarray(recorded, dtype=np.uint8) if recorded is not None else MEAN_COLORS
    palette = palette_of(mean_colors)
    names = PALETTE_NAMES[palette] if palette else [''] * len(mean_colors)
    plt = pyplot()
    colors = mean_colors / 255.0
    fig = plt.figure(figsize=(10, 6.2))
    grid = fig.add_gridspec(2, 2, height_ratios=(1, 5.5))
    strip = fig.add_subplot(grid[0, :])
    strip.imshow(mean_colors[None], aspect='auto', extent=(-0.5, len(colors) - 0.5, 0, 1))
    for k, name in enumerate(names):
        strip.text(k, -0.15, f'{k}: {name}' if name else str(k), ha='center', va='top', fontsize=7)
    strip.set_xlim(-0.5, len(colors) - 0.5)
    strip.set_ylim(-0.6, 1)
    strip.axis('off')
    strip.set_title('Mean colour of each digit class in the training set'
                    + (f' ({palette} palette)' if palette else ''), fontsize=10)
    for col, m in enumerate(('baseline', 'lnl')):
        ax = fig.add_subplot(grid[1, col])
        run = chosen.get(m)
        if run is None:
            ax.axis('off')
            ax.text(0.5, 0.5, f'{display_name(m)}: no run at $\\sigma^2$={cv}', ha='center', va='center')
            continue
        test = run['test']
        draw_confusion(ax, test['confusion'], f'{display_name(m)}, $\\sigma^2$={cv}, seed {run["seed"]}: '
                       f'acc {float(test["test_acc"]):.4f}', colors)
    fig.tight_layout()
    return save_figure(fig, path, banner)
