"""The one training loop every method shares: epochs of mini-batches, logging, per-epoch evaluation and
checkpoints into a run folder, with a clean stop on SIGINT/SIGTERM (the state is saved mid-epoch and a
resumed run continues bit-exactly) and a stop on a non-finite loss.

What a method computes per mini-batch lives in ``methods/``; checkpoint I/O in ``checkpoint.py``;
evaluation in ``evaluation.py``; the command line, data and run folder in ``train.py``.
"""
import contextlib
import json
import os
import signal
import time

import numpy as np
import torch
from tqdm import tqdm

from checkpoint import check_resume_options, save_checkpoint, set_rng_state
from models.weights import load_net_weights
import run_folder
from evaluation import evaluate
from utils import UserError, append_line, atomic_write_text, read_jsonl

DRY_RUN_EVAL = 256  # samples evaluated per epoch with --dry_run


class Interrupted(Exception):
    pass


WEIGHT_LIMIT = 1e4  # no weight of a healthy f, g or h comes near this (they stay within a few units)


def weights_healthy(method):
    """Whether every weight of f, g and h and every floating buffer (BatchNorm's running statistics) is
    finite and below :data:`WEIGHT_LIMIT` in magnitude: the state of a run that is already diverging is
    never written as a checkpoint."""
    with torch.no_grad():
        for module in (method.net, method.h):
            for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
                if t.numel() and (not torch.isfinite(t).all() or t.abs().max() > WEIGHT_LIMIT):
                    return False
    return True


ADVICE = ('lower --lr and continue with --resume (a changed --lr is allowed on resume), or start again with a '
          'lower --lambda or --mu')


class NonFiniteLoss(UserError):
    pass


class EpochData:
    """What :meth:`methods.Method.begin_epoch` may draw from: the training split, its batch count and size, the
    run's batch-order generator (its draws are part of the resumable state) and a progress bar."""

    def __init__(self, trainer, train, n_batches):
        self.train, self.n_batches, self.batch_size = train, n_batches, trainer.opt.batch_size
        self._trainer = trainer

    def batches(self, desc):
        """One pass in a fresh random order, as the epochs draw theirs: (images, colors, labels) per batch."""
        t = self._trainer
        order = torch.randperm(len(self.train), generator=t.batch_gen).to(self.train.labels.device)
        for i in tqdm(range(self.n_batches), desc=desc, dynamic_ncols=True, leave=False, disable=t.opt.no_progress):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.train.images[idx], self.train.colors[idx], self.train.labels[idx]


class Trainer:
    """Runs one method over the epochs, logs, evaluates and checkpoints into ``run_dir``."""

    def __init__(self, opt, method, splits, run_dir, logger, writer=None):
        self.opt, self.method, self.splits = opt, method, splits
        self.run_dir, self.logger, self.writer = run_dir, logger, writer
        self.batch_gen = torch.Generator()
        self.batch_gen.manual_seed(opt.random_seed)
        self.start_epoch = 0
        self.progress = None
        self.stop_signal = None
        self.last_good = None
        self.last_saved = None
        self.test_mean_index = splits['test'].mean_index if 'test' in splits else None

    # -- state --
    def resume(self, path, ckpt):
        check_resume_options(ckpt.get('options', {}), self.opt, path)
        m = self.method
        load_net_weights(m.net, ckpt['net_state_dict'], path, m.architecture)
        m.h.load_state_dict(ckpt['h_state_dict'])
        for k, o in m.optimizers.items():
            o.load_state_dict(ckpt['optimizers'][k])
        for k, s in m.schedulers.items():
            s.load_state_dict(ckpt['schedulers'][k])
        set_rng_state(ckpt['rng'], self.batch_gen)
        self.start_epoch = ckpt['epoch']
        old_lr = ckpt.get('options', {}).get('lr')
        if old_lr is not None and old_lr != self.opt.lr:  # allowed on resume: the schedule continues from the new rate
            for k, o in m.optimizers.items():
                scale = self.opt.lr / old_lr
                for group in o.param_groups:
                    group['lr'] *= scale
                m.schedulers[k].base_lrs = [b * scale for b in m.schedulers[k].base_lrs]
            self.logger.info(f'--lr changed on resume: {old_lr} -> {self.opt.lr}; the learning rates of every '
                             f'optimiser and schedule are scaled by {self.opt.lr / old_lr:g} from here on')
        self.progress = ckpt.get('progress')
        self.last_good = self.last_saved = path
        self._drop_records_after(self.start_epoch)
        where = f'epoch {self.start_epoch}' + (f', batch {self.progress["pos"]}' if self.progress else '')
        self.logger.info(f'resumed from {path} at {where}')

    def _drop_records_after(self, epoch):
        """Forget training records of epochs the checkpoint does not contain (a run killed between
        logging an epoch and saving it) and partial lines, so a resumed run logs each epoch once."""
        path = run_folder.file(self.run_dir, run_folder.RESULTS)
        if not os.path.exists(path):
            return
        keep = [json.dumps(rec) for rec in read_jsonl(path) if 'tag' in rec or rec.get('epoch', 0) <= epoch]
        atomic_write_text(path, ''.join(k + '\n' for k in keep))

    def save(self, name, epoch, progress=None):
        """Write a checkpoint, only of a healthy state: weights or statistics that are no longer finite (or
        beyond :data:`WEIGHT_LIMIT`) stop the run instead, so the newest checkpoint is always one to resume."""
        if not weights_healthy(self.method):
            raise NonFiniteLoss(f'the weights or BatchNorm statistics diverged (non-finite or above {WEIGHT_LIMIT:g}) '
                                f'by epoch {epoch + (1 if progress is None else 0)}; not saved: the newest checkpoint '
                                f'is {self.last_good or "none (no epoch finished)"}; {ADVICE}')
        path = os.path.join(self.run_dir, name)
        save_checkpoint(path, self.method, epoch, self.batch_gen, progress)
        self.last_saved = self.last_good = path
        return path

    # -- signals --
    def _on_signal(self, signum, frame):
        self.stop_signal = signum

    @contextlib.contextmanager
    def signals(self):
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # -- loop --
    def fit(self):
        opt, m = self.opt, self.method
        train = self.splits['train']
        # --dry_run: an epoch is its first batch (a run resumed after that batch goes on to the next epoch)
        n_batches = 1 if opt.dry_run else train.num_batches(opt.batch_size)
        with self.signals():
            for epoch in range(self.start_epoch, opt.max_step):
                record = self.train_epoch(epoch, train, n_batches)
                m.step_schedulers()
                record.update(self.evaluate_epoch())
                record['epoch'] = epoch + 1
                self.log_epoch(record)
                self.save(run_folder.LAST, epoch + 1)
                if (epoch + 1) % opt.save_step == 0 or epoch + 1 == opt.max_step:
                    self.save(run_folder.epoch_checkpoint(epoch + 1), epoch + 1)
        return self.last_saved

    def train_epoch(self, epoch, train, n_batches):
        opt, m = self.opt, self.method
        m.train(True)
        if self.progress is not None:  # resuming in the middle of this epoch
            m.begin_epoch(epoch, EpochData(self, train, n_batches), resumed=True)
            order, pos = self.progress['order'].to(train.labels.device), self.progress['pos']
            sums = {k: torch.as_tensor(v) for k, v in self.progress['sums'].items()}
            self.progress = None
        else:
            m.begin_epoch(epoch, EpochData(self, train, n_batches), resumed=False)
            order, pos, sums = torch.randperm(len(train), generator=self.batch_gen).to(train.labels.device), 0, {}
        bar = tqdm(total=n_batches, initial=pos, desc=f'{opt.method} epoch {epoch + 1}/{opt.max_step}',
                   dynamic_ncols=True, leave=False, disable=opt.no_progress)
        t0 = time.time()
        for i in range(pos, n_batches):
            idx = order[i * opt.batch_size:(i + 1) * opt.batch_size]
            out = m.update(train.images[idx], train.colors[idx], train.labels[idx])
            for k, v in out.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            sums['n'] = sums.get('n', 0) + 1
            bar.update()
            last = i + 1 == n_batches
            if (i + 1) % opt.log_step == 0 or last or opt.dry_run:
                self.check_finite(out, epoch, i)
                bar.set_postfix({k: f'{float(v):.4f}' for k, v in out.items()})
            if self.stop_signal is not None:
                self.check_finite(out, epoch, i)
                bar.close()
                progress = {'order': order.cpu(), 'pos': i + 1,
                            'sums': {k: torch.as_tensor(v).detach().cpu() for k, v in sums.items()}}
                path = self.save(run_folder.batch_checkpoint(epoch, i + 1), epoch, progress)
                raise Interrupted(path)
        bar.close()
        n = int(sums.pop('n', 1))
        record = {k: float(v) / n for k, v in sums.items()}
        for k, v in record.items():
            if not np.isfinite(v):
                raise NonFiniteLoss(f'non-finite {k} in epoch {epoch + 1}; training stopped, the newest checkpoint '
                                    f'is {self.last_good or "none (no epoch finished)"}; {ADVICE}')
        record['lr'] = m.lr_now()
        record['epoch_time_s'] = time.time() - t0
        return record

    def check_finite(self, out, epoch, i):
        for k, v in out.items():
            if not torch.isfinite(v).all():
                raise NonFiniteLoss(f'non-finite {k} in epoch {epoch + 1}, batch {i + 1}; training stopped, the '
                                    f'newest checkpoint is {self.last_good or "none (no epoch finished)"}; {ADVICE}')

    def evaluate_epoch(self):
        """Validation and test-monitoring metrics of one epoch; with --dry_run on the first
        ``DRY_RUN_EVAL`` samples only (a smoke run checks the path, not the number)."""
        m, out = self.method, {}
        h = m.h if m.uses_h else None
        n = DRY_RUN_EVAL if self.opt.dry_run else None
        if 'val' in self.splits:
            val = self.splits['val']
            res = evaluate(m.net, val.subset(n) if n else val, h, num_classes=self.opt.n_class,
                           bias_label=m.bias_label)
            out['val_acc'] = res['acc']
        if self.opt.monitor_test:
            # monitoring only (the curve in the README); nothing is selected on it
            test, mean_index = self.splits['test'], self.test_mean_index
            if n:
                test, mean_index = test.subset(n), mean_index[:n]
            res = evaluate(m.net, test, h, num_classes=self.opt.n_class, mean_index=mean_index,
                           bias_label=m.bias_label)
            out['monitor_test_acc'] = res['acc']
            out['monitor_conflicting_acc'] = res['conflicting_acc']
            if h is not None:
                out['monitor_test_color_acc'] = res['color_acc']
        return out

    def log_epoch(self, record):
        if self.opt.dry_run:
            record['dry_run'] = True  # a smoke run's numbers check the pipeline; they are not results
        epoch = record['epoch']
        append_line(run_folder.file(self.run_dir, run_folder.RESULTS), json.dumps(record))
        # the learning rate with its significant digits (CSAD's 5e-5 is 0.0001 at four decimals)
        msg = ' '.join(f'{k} {v:.4g}' if k == 'lr' else f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
                       for k, v in record.items())
        self.logger.info(f'[epoch {epoch}] {msg}')
        if self.writer is not None:
            for k, v in record.items():
                if k != 'epoch' and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(f'train/{k}', v, epoch)
            self.writer.flush()
