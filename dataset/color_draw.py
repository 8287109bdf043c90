"""The colour draw of one channel in the Colored-MNIST protocol, as a distribution.

A channel's value v is drawn from N(mean / 255, sigma^2) truncated to the values whose byte
``floor(255 * v)`` lies in :data:`LOW`..:data:`HIGH` (1..254: the authors' files hold no channel equal to
0 or 255, so out-of-range draws were redrawn, not clipped; the byte is the truncated ``255 * v``, not the
rounded one). :func:`truncated_normal_ppf` is the draw's quantile function (the generator samples through
it, :func:`dataset.colored_mnist.sample_colors`); :func:`expected_byte_mean` is the mean byte it gives (what
:func:`dataset.palettes.infer_palette` predicts a palette's class means from).
"""
import numpy as np
import torch

LOW, HIGH = 1, 254  # the bytes a colour channel may take


def _ndtr(x):
    return torch.special.ndtr(torch.as_tensor(x, dtype=torch.float64)).numpy()


def _ndtri(p):
    return torch.special.ndtri(torch.as_tensor(p, dtype=torch.float64)).numpy()


def truncated_normal_ppf(u, mean, std, low, high):
    """Quantile function of N(mean, std^2) truncated to [low, high) at the probabilities ``u``."""
    a, b = _ndtr((low - mean) / std), _ndtr((high - mean) / std)
    return mean + std * _ndtri(a + u * (b - a))


def expected_byte_mean(mean_colors, sigma2):
    """The mean byte of each palette colour and channel under the protocol's truncated draw (same shape)."""
    mu = np.asarray(mean_colors, dtype=np.float64)
    std = np.sqrt(sigma2) * 255.0
    edges = np.arange(LOW, HIGH + 2, dtype=np.float64)            # byte k <=> 255 v in [k, k + 1)
    cdf = _ndtr((edges[None, :] - mu.reshape(-1, 1)) / std)
    p = np.diff(cdf, axis=1) / (cdf[:, -1:] - cdf[:, :1])
    return (p * edges[:-1]).sum(1).reshape(mu.shape)
