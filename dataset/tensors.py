"""Colored-MNIST as tensors prepared once per run, kept in memory (on the GPU when training there).

The authors' loader turned every sample into a PIL image on every epoch (ToTensor, Normalize and a
nearest-neighbour resize for the colour target). The same values are computed here once, for the
whole split, and batches are drawn by index.
"""
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from dataset import colored_mnist

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
# ITU-R BT.601 luma weights (the ones PIL's convert('L') uses), for the Gray method.
LUMA = (0.299, 0.587, 0.114)
IGNORE = 255
NUM_BINS = 8
DRY_RUN_DATA = (1024, 256)  # training and test images a --dry_run loads (the first ones of the file)


def normalize(images_uint8_nhwc):
    """(N,H,W,3) uint8 -> (N,3,H,W) float32, ToTensor then Normalize with the authors' constants."""
    x = torch.as_tensor(np.ascontiguousarray(images_uint8_nhwc)).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def to_gray(images_uint8_nhwc):
    """Luminance with three equal channels, as uint8 (rounded), same shape as the input."""
    luma = np.rint(images_uint8_nhwc.astype(np.float32) @ np.array(LUMA, dtype=np.float32))
    luma = np.clip(luma, 0, 255).astype(np.uint8)
    return np.repeat(luma[..., None], 3, axis=-1)


def color_target(images_uint8_nhwc, num_bins=NUM_BINS):
    """The bias label h predicts: (N,3,14,14) int64.

    Nearest-neighbour 28 -> 14 exactly as PIL's ``Image.resize((14,14), NEAREST)`` picks pixels
    (centre sampling: source index 2*i + 1), then per channel the bin ``value * num_bins // 256`` (for the
    authors' 8 bins: ``value // 32``), so every bin index lies in 0..num_bins-1; channel values equal to
    0 (the background) get the label 255, which the loss ignores.
    """
    if not 1 <= num_bins <= 255:
        from utils import UserError
        raise UserError(f'--num_bins must be between 1 and 255, got {num_bins}')
    small = torch.as_tensor(np.ascontiguousarray(images_uint8_nhwc[:, 1::2, 1::2, :]))
    small = small.permute(0, 3, 1, 2).long()
    target = small * num_bins // 256
    target[small == 0] = IGNORE
    return target.contiguous()


@dataclass
class Split:
    """One split in memory. ``images`` normalised float (N,3,28,28); ``labels`` int64 (N,);
    ``colors`` int64 (N,3,14,14) colour-bin target; ``raw`` the coloured uint8 (N,28,28,3) images
    (also for the grey view, so colour-aligned and colour-conflicting digits can be told apart)."""
    images: torch.Tensor
    labels: torch.Tensor
    colors: torch.Tensor
    raw: np.ndarray
    # (10, 3) uint8: the class mean colours of the file
    mean_colors: np.ndarray = field(default_factory=lambda: colored_mnist.MEAN_COLORS.copy())

    def __len__(self):
        return len(self.labels)

    @cached_property
    def mean_index(self):
        """(N,) index of the mean colour nearest to each image's stroke colour (see :func:`nearest_mean_color`)."""
        return nearest_mean_color(self.raw, self.mean_colors)

    def to(self, device, channels_last=False):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return Split(self.images.to(device, memory_format=fmt), self.labels.to(device),
                     self.colors.to(device), self.raw, self.mean_colors)

    def subset(self, n):
        """The first ``n`` samples (for quick runs and tests)."""
        return Split(self.images[:n], self.labels[:n], self.colors[:n], self.raw[:n], self.mean_colors)

    def num_batches(self, batch_size):
        return (len(self) + batch_size - 1) // batch_size


GRAY_VIEWS = ('luminance', 'original')
# The test view of a grey-input method (Gray) that tables report and the per-epoch monitor uses; test.py
# --gray_view evaluates the other one under the tag test_<view>. See the README ("Gray's test view").
DEFAULT_GRAY_VIEW = 'original'


def view_tag(view):
    """The results.jsonl tag of a test.py evaluation of a grey-input method on ``view``."""
    return 'test' if view == DEFAULT_GRAY_VIEW else f'test_{view}'


def make_split(images_uint8, labels, gray=False, num_bins=NUM_BINS, mean_colors=colored_mnist.MEAN_COLORS,
               original=None):
    """Build a :class:`Split`. With ``gray`` the images are a grey view (the Gray method): the luminance of
    the coloured images, or ``original`` (N,28,28) uint8 when given (the file's ``test_gray``, the MNIST
    digits before colouring) in three equal channels. The colour target always comes from the coloured
    images, so h still has a colour to predict and aligned/conflicting digits are told apart."""
    if gray and original is not None:
        view = np.repeat(np.asarray(original, dtype=np.uint8)[..., None], 3, axis=-1)
    else:
        view = to_gray(images_uint8) if gray else images_uint8
    return Split(images=normalize(view), labels=torch.as_tensor(labels.astype(np.int64)),
                 colors=color_target(images_uint8, num_bins), raw=images_uint8, mean_colors=mean_colors)


def load_splits(path, gray=False, val_size=0, seed=0, num_bins=NUM_BINS, color_var=None,
                which=('train', 'test'), palette=colored_mnist.DEFAULT_PALETTE, log=None, first=None,
                gray_view=None, data_seed=None, check_data_seed=False, seed_found=None):
    """Read one Colored-MNIST file and return ``{'train', 'test'[, 'val']}`` as :class:`Split`.

    ``which`` names the splits to build (the others are not computed). ``val_size`` > 0 holds out that many
    random training images (seeded) for model selection; the test set is never used for it. The class mean
    colours come from the file (``palette`` for a file that does not record them, said through ``log``).
    ``first`` = ``(n_train, n_test)`` keeps only the first images of each split (a smoke run).
    ``check_data_seed``: refuse a file generated with another seed than ``data_seed`` (see
    :func:`colored_mnist.check_seed`); the seed the file records goes to ``seed_found``. ``gray_view``
    (with ``gray``): the test images' grey view, ``luminance`` of the coloured digits or the file's
    ``original`` grey digits (``test_gray``; default :data:`DEFAULT_GRAY_VIEW`); training always uses the
    luminance view.
    """
    gray_view = gray_view or DEFAULT_GRAY_VIEW
    if gray_view not in GRAY_VIEWS:
        raise ValueError(f'gray_view must be one of {GRAY_VIEWS}, got {gray_view!r}')
    original = gray and gray_view == 'original' and 'test' in which
    data = colored_mnist.load(path, color_var=color_var)
    if original and 'test_gray' not in data:
        from utils import UserError
        raise UserError(f'{path} has no test_gray (the grey test digits) for --gray_view original; use --gray_view '
                        'luminance, or a file that holds them (every generated file does)')
    if check_data_seed:  # the file must be the one the run's --data_seed generates
        found = colored_mnist.check_seed(data, path, data_seed)
        if seed_found is not None:
            seed_found(found)
    mean_colors = colored_mnist.mean_colors_of(data, path, palette, log=log, color_var=color_var)
    if first is not None:
        n_train, n_test = first
        data = dict(data, train_image=data['train_image'][:n_train], train_label=data['train_label'][:n_train],
                    test_image=data['test_image'][:n_test], test_label=data['test_label'][:n_test],
                    **({'test_gray': data['test_gray'][:n_test]} if 'test_gray' in data else {}))
    train_img, train_lab = data['train_image'], data['train_label']
    splits = {}
    if val_size and 'train' in which:
        if not 0 < val_size < len(train_lab):
            from utils import UserError
            raise UserError(f'--val_size must be between 1 and {len(train_lab) - 1}, got {val_size}')
        perm = np.random.default_rng(seed).permutation(len(train_lab))
        val_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
        splits['val'] = make_split(train_img[val_idx], train_lab[val_idx], gray, num_bins, mean_colors)
        train_img, train_lab = train_img[train_idx], train_lab[train_idx]
    if 'train' in which:
        splits['train'] = make_split(train_img, train_lab, gray, num_bins, mean_colors)
    if 'test' in which:
        splits['test'] = make_split(data['test_image'], data['test_label'], gray, num_bins, mean_colors,
                                    original=data['test_gray'] if original else None)
    return splits


def nearest_mean_color(images_uint8_nhwc, mean_colors=colored_mnist.MEAN_COLORS):
    """Index (0..9) of the mean colour nearest to each image's stroke colour (N,).

    The authors' files do not record which mean colour a test image was drawn around, so a digit
    counts as colour-aligned when its (flat) stroke colour is nearer to its own class's mean colour
    than to any other: the colour looks like the training bias for that digit. This matches the drawn
    mean most of the time (about 82% of training images at sigma^2 = 0.020) and says what the network
    sees, whichever mean the colour was drawn around.
    """
    flat = images_uint8_nhwc.reshape(len(images_uint8_nhwc), -1, 3).astype(np.float32)
    lit = flat.max(axis=2) > 0
    count = np.maximum(lit.sum(axis=1, keepdims=True), 1)
    color = (flat * lit[..., None]).sum(axis=1) / count
    d = ((color[:, None, :] - np.asarray(mean_colors, dtype=np.float32)[None]) ** 2).sum(-1)
    return d.argmin(axis=1)
