"""Autograd helpers of the methods: the gradient-reversal layer and a module frozen for its weights only."""
import contextlib

import torch


class GradReverse(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``-scale``."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.neg() * ctx.scale, None


def grad_reverse(x, scale):
    return GradReverse.apply(x, scale)


@contextlib.contextmanager
def frozen(module):
    """Let gradients flow through ``module`` to its input without computing its weight gradients."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
