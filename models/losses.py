"""The losses and accuracies of the methods, for one network or for K networks trained as one (``members = K``,
:mod:`models.networks`). With ``members == 1`` each returns a 0-d tensor, the mean over the batch (and positions);
with ``members = K`` a (K,) tensor holding that mean for each member, its logits the k-th block of channels and its
targets the k-th column of a (N, K) label tensor or the k-th block of channels of an (N, K * 3, H, W) colour map.
A packed run backpropagates the sum of its members' losses, so each member's weights get exactly the gradient they
would get alone."""
import torch
import torch.nn.functional as F


def _members_first(logits, members):
    """(N, K * C, ...) logits as (N, K, C, ...)."""
    return logits.unflatten(1, (members, -1))


def color_loss(logits, target, ignore_index=255, members=1):
    """Sum over channels of the per-pixel cross-entropy, background ignored: CE_R + CE_G + CE_B."""
    if members > 1:
        target = target.unflatten(1, (members, -1))  # (N, K, 3, H, W)
        return sum(cross_entropy(lg, target[:, :, c], ignore_index=ignore_index, members=members)
                   for c, lg in enumerate(logits))
    return sum(cross_entropy(lg, target[:, c], ignore_index=ignore_index) for c, lg in enumerate(logits))


def cross_entropy(logits, target, ignore_index=-100, members=1):
    """``F.cross_entropy`` (mean over the positions whose target is not ``ignore_index``). Under
    ``torch.use_deterministic_algorithms`` on CUDA, whose NLL loss has no deterministic kernel, the same
    value from a one-hot mask (:func:`one_hot_cross_entropy`: element-wise products and sums only).
    ``members = K``: (N, K * C[, H, W]) logits and (N, K[, H, W]) targets, one mean per member."""
    if members > 1:
        return one_hot_cross_entropy(_members_first(logits, members).movedim(2, 1), target, ignore_index,
                                     per_member=True)
    if logits.is_cuda and torch.are_deterministic_algorithms_enabled():
        return one_hot_cross_entropy(logits, target, ignore_index)
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def one_hot_cross_entropy(logits, target, ignore_index=-100, per_member=False):
    """Cross-entropy of (N, C[, ...]) logits and (N[, ...]) targets without a gather or an NLL kernel.
    ``per_member``: (N, C, K[, ...]) logits and (N, K[, ...]) targets, a (K,) mean per member."""
    logp = F.log_softmax(logits, dim=1)
    valid = target != ignore_index
    onehot = F.one_hot(torch.where(valid, target, torch.zeros_like(target)), logits.shape[1])
    nll = -(logp * onehot.movedim(-1, 1).to(logp.dtype)).sum(dim=1)
    if per_member:
        dims = [d for d in range(nll.dim()) if d != 1]
        return (nll * valid).sum(dims) / valid.sum(dims)
    return (nll * valid).sum() / valid.sum()


def _mean_but_members(x, members):
    """Mean over every dimension of an (N, K, ...) tensor but the members' (``members > 1``), else over all."""
    if members > 1:
        return x.mean([d for d in range(x.dim()) if d != 1])
    return x.mean()


def neg_entropy(logits, members=1):
    """Mean over batch and positions of sum_bins p log p (the negative entropy), averaged over the
    channels; from log-softmax so that it stays finite when h is certain."""
    terms = []
    for lg in logits:
        lg = _members_first(lg, members) if members > 1 else lg
        dim = 2 if members > 1 else 1
        logp = F.log_softmax(lg, dim=dim)
        terms.append(_mean_but_members((logp.exp() * logp).sum(dim=dim), members))
    return sum(terms) / len(terms)


def uniform_cross_entropy(logits, members=1):
    """BlindEye's confusion loss: CE(uniform, p) = -mean_bins log p, averaged over positions and channels."""
    terms = []
    for lg in logits:
        lg = _members_first(lg, members) if members > 1 else lg
        dim = 2 if members > 1 else 1
        terms.append(_mean_but_members(-F.log_softmax(lg, dim=dim).mean(dim=dim), members))
    return sum(terms) / len(terms)


def accuracy(logits, labels, members=1):
    """The fraction of the batch whose digit is predicted correctly."""
    if members > 1:
        return (_members_first(logits, members).argmax(2) == labels).float().mean(0)
    return (logits.argmax(1) == labels).float().mean()


def color_accuracy(logits, target, ignore_index=255, members=1):
    """Fraction of non-background (pixel, channel) positions whose bin h predicts correctly.
    Returns (correct, counted) as tensors so callers can sum without synchronising."""
    if members > 1:
        target = target.unflatten(1, (members, -1))
        correct = counted = 0
        for c, lg in enumerate(logits):
            mask = target[:, :, c] != ignore_index
            hit = (_members_first(lg, members).argmax(2) == target[:, :, c]) & mask
            correct = correct + hit.sum((0, 2, 3))
            counted = counted + mask.sum((0, 2, 3))
        return correct, counted
    correct = torch.zeros((), device=target.device)
    counted = torch.zeros((), device=target.device)
    for c, lg in enumerate(logits):
        mask = target[:, c] != ignore_index
        correct = correct + ((lg.argmax(1) == target[:, c]) & mask).sum()
        counted = counted + mask.sum()
    return correct, counted
