"""The three pipelines benchmarks/speed.py times, each as an object whose ``run(k)`` does k training iterations and
returns the seconds they took: ``Ours`` (the project's training loop), ``Floor`` (the update alone on one batch) and
``Reference`` (the authors' DataLoader pipeline)."""
import time

import torch

from benchmarks.reference_pipeline import BATCH_SIZE
from trainer import Trainer

# The epoch index the timed blocks run as: not the first, so a method's work before its first epoch (CSAD's MI
# warm-up passes, once per run) is not counted in every block.
STEADY_EPOCH = 1


def clock(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Ours:
    """Blocks of consecutive batches of one epoch through ``Trainer.train_epoch`` itself.

    A block that starts an epoch lets ``train_epoch`` draw the order from the trainer's generator;
    later blocks of the same epoch continue it through the trainer's mid-epoch resume state
    (``progress``), so the per-batch work is exactly the training loop's.
    """

    def __init__(self, opt, method, split, device):
        self.trainer = Trainer(opt, method, {'train': split}, run_dir=None, logger=None)
        self.split, self.device = split, device
        self.n_batches = split.num_batches(opt.batch_size)
        self.order, self.pos = None, 0

    def run(self, k):
        elapsed = 0.0
        while k > 0:
            tr = self.trainer
            end = min(self.pos + k, self.n_batches)
            if self.pos == 0:
                gen_state = tr.batch_gen.get_state()
                tr.progress = None
            else:
                tr.progress = {'order': self.order, 'pos': self.pos, 'sums': {}}
            t0 = clock(self.device)
            tr.train_epoch(STEADY_EPOCH, self.split, end)
            elapsed += clock(self.device) - t0
            if self.pos == 0:
                # the order train_epoch drew, recomputed (untimed) so the next block continues it
                gen = torch.Generator()
                gen.set_state(gen_state)
                self.order = torch.randperm(len(self.split), generator=gen)
            k -= end - self.pos
            self.pos = end % self.n_batches
        return elapsed


class Floor:
    """``method.update`` on one fixed batch already in memory, nothing else."""

    def __init__(self, method, split, device):
        self.method, self.device = method, device
        self.batch = (split.images[:BATCH_SIZE], split.colors[:BATCH_SIZE], split.labels[:BATCH_SIZE])
        method.train(True)

    def run(self, k):
        t0 = clock(self.device)
        for _ in range(k):
            self.method.update(*self.batch)
        return clock(self.device) - t0


class Reference:
    """The authors' loop: a batch from the DataLoader, copied to the device, one training step.

    Each block starts the loader's workers afresh and shuts them down at its end (the authors'
    loader is not persistent either), so no worker prepares batches while ``ours`` or ``floor``
    is timed. The batches the workers prepare while starting up (``queued``) are taken off
    untimed: that leaves the workers busy and the queue empty, the steady state of a loader that
    cannot keep up (one that can refills it at once), and keeps the start-up out of the clock.
    """

    def __init__(self, method, loader, device, queued):
        self.method, self.loader, self.device, self.queued = method, loader, device, queued
        method.train(True)

    def run(self, k):
        # a block never needs more than one epoch of batches, except on tiny test data
        queued = max(0, min(self.queued, len(self.loader) - k))
        it = iter(self.loader)
        try:
            for _ in range(queued):
                next(it)
            t0 = clock(self.device)
            for _ in range(k):
                try:
                    images, colors, labels = next(it)
                except StopIteration:
                    it = iter(self.loader)
                    images, colors, labels = next(it)
                self.method.update(images.to(self.device), colors.to(self.device),
                                   labels.to(self.device))
            return clock(self.device) - t0
        finally:
            del it  # shuts the workers down before the next block
