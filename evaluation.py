"""Evaluation: accuracy of f∘g on a split (overall, colour-aligned and colour-conflicting digits, per class,
confusion matrix, h's colour accuracy) and the bias-leakage probe.

The probe measures how much colour can still be read from a trained f's features: f is frozen, a fresh
colour predictor of h's architecture is trained on f's features of the training images for a fixed
budget, then its colour-bin accuracy is measured on the test images. If LNL's own h fails because f
removed the colour (the paper's claim), a fresh predictor fails too; if it fails only because h was
weakened by the adversarial game, the probe recovers the colour.

    python test.py -e RUN --probe      # adds probe_color_acc to the run's results.jsonl
"""
import numpy as np
import torch

from models import ColorPredictor, color_accuracy, color_loss


@torch.no_grad()
def evaluate(net, split, h=None, batch_size=1000, num_classes=10, mean_index=None, bias_label=None):
    """Accuracy of f∘g on ``split`` and, with ``h``, h's colour-bin accuracy. Pure: no loading, no exit.

    Returns a dict: ``acc``, ``aligned_acc`` / ``conflicting_acc`` (digits whose stroke colour is /
    is not nearest to their own class's mean colour, given ``mean_index``), ``per_class_acc``,
    ``confusion`` (rows true, columns predicted), ``color_acc`` when h is given (scored against
    ``bias_label(colors)`` when given, else the colour-bin maps).
    """
    was_training = net.training
    net.eval()
    if h is not None:
        h_training = h.training
        h.eval()
    preds, correct_c, counted_c = [], 0, 0
    for start in range(0, len(split), batch_size):
        x = split.images[start:start + batch_size]
        if x.device.type == 'cpu' and x.dim() == 4:  # the CPU's convolutions and pooling: 2x faster channels-last
            x = x.contiguous(memory_format=torch.channels_last)
        feat, logits = net(x)
        preds.append(logits.argmax(1))
        if h is not None:
            target = split.colors[start:start + batch_size]
            c, n = color_accuracy(h(feat), target if bias_label is None else bias_label(target))
            correct_c, counted_c = correct_c + c, counted_c + n
    net.train(was_training)
    if h is not None:
        h.train(h_training)
    pred = torch.cat(preds).cpu().numpy()
    true = split.labels.cpu().numpy()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (true, pred), 1)
    hit = pred == true
    out = {
        'acc': float(hit.mean()) if len(hit) else float('nan'),
        'per_class_acc': [float(hit[true == k].mean()) if (true == k).any() else float('nan')
                          for k in range(num_classes)],
        'confusion': confusion.tolist(),
    }
    if mean_index is not None:
        aligned = mean_index == true
        out['aligned_acc'] = float(hit[aligned].mean()) if aligned.any() else float('nan')
        out['conflicting_acc'] = float(hit[~aligned].mean()) if (~aligned).any() else float('nan')
        out['aligned_fraction'] = float(aligned.mean())
    if h is not None:
        out['color_acc'] = float(correct_c / max(float(counted_c), 1.0))
    return out


def probe_color_leakage(net, train, test, epochs=1, batch_size=128, lr=0.01, momentum=0.9,
                        weight_decay=5e-4, num_bins=8, feat_ch=32, seed=0, max_train=None, progress=False,
                        features=None, head=None, bias_label=None):
    """Train a fresh h on frozen ``net.f`` features; return its colour-bin accuracy on ``test``
    (``progress``: a progress bar with its ETA). A method with networks of its own gives ``features(net, x)``
    (what is probed), ``head()`` (a fresh predictor for them) and ``bias_label(colors)`` (its target)."""
    from tqdm import tqdm
    device = train.images.device
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = (ColorPredictor(in_ch=feat_ch, num_bins=num_bins) if head is None else head()).to(device)
    features = features or (lambda model, x: model.f(x))
    bias_label = bias_label or (lambda colors: colors)
    opt = torch.optim.SGD(probe.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    was_training = net.training
    net.eval()
    n = len(train) if max_train is None else min(max_train, len(train))
    bar = tqdm(total=epochs * ((n + batch_size - 1) // batch_size), desc='probe', unit='batch', leave=False,
               dynamic_ncols=True, disable=not progress)
    for _ in range(epochs):
        probe.train()
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            with torch.no_grad():
                feat = features(net, train.images[idx])
            loss = color_loss(probe(feat), bias_label(train.colors[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update()
    bar.close()
    probe.eval()
    correct, counted = 0, 0
    with torch.no_grad():
        for start in range(0, len(test), 1000):
            c, k = color_accuracy(probe(features(net, test.images[start:start + 1000])),
                                  bias_label(test.colors[start:start + 1000]))
            correct, counted = correct + c, counted + k
    net.train(was_training)
    return float(correct / max(float(counted), 1.0))
