"""The networks of the paper's MNIST experiments (Kim et al., CVPR 2019, Sec. 4.1).

* ``ConvNet`` is f followed by g as one module, with the authors' parameter names
  (``bn0, conv1, conv2, conv3, conv4, fc``) so that their checkpoints (``net_state_dict``) load.
  ``ConvNet.f`` returns the 32x14x14 feature map that h reads; ``ConvNet.g`` maps it to logits.
* The input BatchNorm ``bn0`` normalises the images with their batch statistics, which do not depend on any
  weight, so during training ``f`` folds bn0 into conv1's weights and a bias map: the same function and
  gradients, without bn0's own pass over the batch and without the backward convolution down to the
  3-channel input that an unfolded bn0 -> conv1 needs for bn0's gradients; and it max-pools before the ReLU.
  ``fast_f = False`` computes f literally as the authors' code does (the speed benchmark's reference).
* ``ColorPredictor`` is h: one small per-pixel classifier per colour channel (R, G, B), each predicting
  the channel's bin (``value // 32``) at every position of f's feature map.
* ``members = K > 1``: K networks of this architecture as one (runs trained together, ``train_pack.py``): every
  convolution grouped K ways, every BatchNorm over the K members' channels side by side, the linear layer a
  :class:`GroupedLinear`. Member k's images are input channels ``3k..3k+2`` of each batch position, its features
  and logits the k-th block of channels, and member k's weights are the k-th block (along dim 0) of every
  parameter and buffer (:mod:`models.pack`). No weight or statistic is shared between members.
"""
import math

import torch
from torch import nn
import torch.nn.functional as F


class ConvNet(nn.Module):
    """f: BN(3) -> conv5x5 3->32 -> ReLU -> maxpool 3/2 (14x14) -> conv3x3 32->32 -> ReLU.
    g: conv3x3/2 32->64 -> ReLU (7x7) -> conv3x3 64->64 -> ReLU -> avgpool 7 -> linear 64->classes."""

    def __init__(self, num_classes=10, feat_ch=32, members=1):
        super().__init__()
        self.fast_f = True  # False: f exactly as the authors' code writes it (see f)
        self.members = k = members
        self.bn0 = nn.BatchNorm2d(3 * k)
        self.conv1 = nn.Conv2d(3 * k, feat_ch * k, kernel_size=5, stride=1, padding=2, groups=k)
        self.conv2 = nn.Conv2d(feat_ch * k, feat_ch * k, kernel_size=3, stride=1, padding=1, groups=k)
        self.conv3 = nn.Conv2d(feat_ch * k, 64 * k, kernel_size=3, stride=2, padding=1, groups=k)
        self.conv4 = nn.Conv2d(64 * k, 64 * k, kernel_size=3, stride=1, padding=1, groups=k)
        self.fc = nn.Linear(64, num_classes) if k == 1 else GroupedLinear(64, num_classes, k)
        self.reset_parameters()

    def reset_parameters(self):
        """The authors' init: conv weights ~ N(0, 2 / (k*k*C_out)), BN weight 1 and bias 0;
        conv biases and the linear layer keep PyTorch's defaults."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                with torch.no_grad():
                    m.weight.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def f_parameters(self):
        return [p for name, p in self.named_parameters() if name.split('.')[0] in ('bn0', 'conv1', 'conv2')]

    def g_parameters(self):
        return [p for name, p in self.named_parameters() if name.split('.')[0] in ('conv3', 'conv4', 'fc')]

    def f(self, x):
        if not self.fast_f:  # literally as the authors' code computes it
            x = F.max_pool2d(F.relu(self.conv1(self.bn0(x))), kernel_size=3, stride=2, padding=1)
            return F.relu(self.conv2(x))
        if torch.is_grad_enabled() and self.bn0.affine and not x.requires_grad:
            x = self.bn0_conv1_folded(x)
        else:
            x = self.conv1(self.bn0(x))
        # max-pooling before the ReLU: the same values and gradients (ReLU is monotonic and passes no
        # gradient at or below zero), with the ReLU on a quarter of the positions
        x = F.relu(F.max_pool2d(x, kernel_size=3, stride=2, padding=1))
        return F.relu(self.conv2(x))

    def bn0_conv1_folded(self, x):
        """``conv1(bn0(x))`` with all of bn0 moved into conv1. bn0(x) = a' * x + b' per channel, with
        a' = weight / sqrt(var + eps) and b' = bias - a' * mean, where mean and var are x's batch statistics
        in training (the running ones in eval): they depend on no weight, so x needs no gradient. Then
        conv1(bn0(x)) = conv(x, W * a') + conv(b' on the zero-padded image frame, W) + conv1's bias; the
        second term is one image, broadcast over the batch. Running statistics update as bn0's own forward
        updates them."""
        bn = self.bn0
        if bn.training or bn.running_mean is None:
            with torch.no_grad():
                mean, var = channel_moments(x.float())
            if bn.training and bn.track_running_stats:
                bn.num_batches_tracked.add_(1)
                factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
                n = x.numel() // x.shape[1]
                with torch.no_grad():
                    bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), factor)
                    bn.running_var.lerp_((var * (n / max(n - 1, 1))).to(bn.running_var.dtype), factor)
        else:
            mean, var = bn.running_mean, bn.running_var
        scale = bn.weight * torch.rsqrt(var + bn.eps)
        shift = bn.bias - scale * mean
        w, k = self.conv1.weight, self.conv1.groups
        frame = shift.view(1, -1, 1, 1).expand(1, x.shape[1], x.shape[2], x.shape[3])
        shift_map = F.conv2d(frame, w, self.conv1.bias, self.conv1.stride, self.conv1.padding, groups=k)
        if k == 1:
            scaled = w * scale.view(1, -1, 1, 1)
        else:  # member j's filters scale by member j's input channels
            scaled = (w.unflatten(0, (k, -1)) * scale.view(k, 1, -1, 1, 1)).flatten(0, 1)
        return AddImage.apply(F.conv2d(x, scaled, None, self.conv1.stride, self.conv1.padding, groups=k), shift_map)

    def g(self, feat):
        x = F.relu(self.conv3(feat))
        x = F.relu(self.conv4(x))
        if x.is_cuda and torch.are_deterministic_algorithms_enabled():
            return self.fc(x.mean(dim=(2, 3)))  # the same average; its CUDA backward is deterministic
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x):
        feat = self.f(x)
        return feat, self.g(feat)


def channel_moments(x):
    """Per-channel mean and (biased) variance of a (N, C, H, W) batch, as BatchNorm computes them. Sums over
    a (positions, C) view in the tensor's memory order, shifted by the first position's values for
    accuracy: several times faster on the CPU than ``torch.var_mean`` over the same dimensions."""
    c = x.shape[1]
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        v = x.permute(0, 2, 3, 1).reshape(-1, c)
    else:
        v = x.transpose(0, 1).reshape(c, -1).t()
    d = v - v[0]
    mean_d = d.mean(0)
    var = (d.square().mean(0) - mean_d.square()).clamp_min(0)
    return v[0] + mean_d, var


class AddImage(torch.autograd.Function):
    """``batch + image`` for a (N, C, H, W) batch and one (1, C, H, W) image, written into ``batch``. The
    image's gradient, the batch's gradient summed over N, is reduced over a 2-D view in the gradient's
    memory order: a sum over dim 0 of a channels-last 4-D tensor runs more than 10x slower on the CPU than
    the same sum over that view."""

    @staticmethod
    def forward(ctx, batch, image):
        """Adds in place: ``batch`` is a convolution's output, which its backward does not need."""
        ctx.image_dtype = image.dtype
        ctx.mark_dirty(batch)
        return batch.add_(image)

    @staticmethod
    def backward(ctx, grad):
        n, c, h, w = grad.shape
        if grad.is_contiguous():
            summed = grad.reshape(n, -1).sum(0).view(1, c, h, w)
        elif grad.is_contiguous(memory_format=torch.channels_last):
            summed = grad.permute(0, 2, 3, 1).reshape(n, -1).sum(0).view(1, h, w, c).permute(0, 3, 1, 2)
        else:
            summed = grad.sum(0, keepdim=True)
        return grad, summed.to(ctx.image_dtype)


class GroupedLinear(nn.Module):
    """K linear layers ``in_features -> out_features`` side by side: (N, K * in) -> (N, K * out), member k's
    weight the k-th block of rows of ``weight`` (K * out, in); initialised as ``nn.Linear`` is."""

    def __init__(self, in_features, out_features, members):
        super().__init__()
        self.members, self.out_features = members, out_features
        self.weight = nn.Parameter(torch.empty(members * out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members * out_features))
        bound = 1 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)  # nn.Linear's init: kaiming_uniform(a=sqrt(5)) = this bound
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        k = self.members
        w = self.weight.unflatten(0, (k, self.out_features))  # (K, out, in)
        y = torch.bmm(x.unflatten(1, (k, -1)).transpose(0, 1), w.transpose(1, 2))  # (K, N, out)
        return (y.transpose(0, 1) + self.bias.view(k, -1)).flatten(1)


class ColorHead(nn.Module):
    """h for one colour channel: conv3x3 -> BN -> ReLU -> conv3x3 -> logits over ``num_bins``."""

    def __init__(self, in_ch=32, num_bins=8, members=1):
        super().__init__()
        k = members
        self.pred_conv1 = nn.Conv2d(in_ch * k, in_ch * k, kernel_size=3, stride=1, padding=1, groups=k)
        self.pred_bn1 = nn.BatchNorm2d(in_ch * k)
        self.pred_conv2 = nn.Conv2d(in_ch * k, num_bins * k, kernel_size=3, stride=1, padding=1, groups=k)

    def forward(self, feat):
        return self.pred_conv2(F.relu(self.pred_bn1(self.pred_conv1(feat))))


class ColorPredictor(nn.Module):
    """h: one :class:`ColorHead` per colour channel. ``forward`` returns a list of logits
    ``(N, num_bins, H, W)``, one per channel (R, G, B).

    (Running the heads as one concatenated and one grouped convolution gives the same result but
    measured slower on the CPU, so the heads run one after the other.)
    """

    def __init__(self, in_ch=32, num_bins=8, num_channels=3, members=1):
        super().__init__()
        self.members = members
        self.heads = nn.ModuleList(ColorHead(in_ch, num_bins, members) for _ in range(num_channels))

    def forward(self, feat):
        return [head(feat) for head in self.heads]
