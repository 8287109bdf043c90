"""Drawing shared by test.py and collect_results.py."""
import numpy as np


def draw_confusion(ax, confusion, title, colors):
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
