"""utils.plots: the input grid TensorBoard shows is laid out as torchvision's make_grid lays it out."""
import numpy as np
import pytest
import torch

from utils.plots import image_grid


@pytest.mark.parametrize('n', [64, 13, 3])
def test_image_grid_is_make_grids_layout(n):
    torchvision = pytest.importorskip('torchvision')
    images = np.random.default_rng(n).integers(1, 256, size=(n, 28, 28, 3), dtype=np.uint8)
    ours = image_grid(images, ncol=8)
    theirs = torchvision.utils.make_grid(torch.as_tensor(images).permute(0, 3, 1, 2), nrow=8).permute(1, 2, 0)
    assert ours.dtype == np.uint8 and np.array_equal(ours, theirs.numpy())
