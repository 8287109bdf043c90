"""The one training loop every method shares: epochs of mini-batches, logging, per-epoch evaluation and
checkpoints into a run folder, with a clean stop on SIGINT/SIGTERM (the state is saved mid-epoch, or inside a
method's passes before an epoch, and a resumed run continues bit-exactly) and a stop on a diverging run, whose
message gives the remedy: a lower learning rate from the newest checkpoint that training can go on from, or
from the start when there is none.

What a method computes per mini-batch lives in ``methods/``; checkpoint I/O in ``checkpoint.py``;
evaluation in ``evaluation.py``; the command line, data and run folder in ``train.py``.
"""
import contextlib
import copy
import json
import math
import os
import shlex
import signal
import time

import numpy as np
import torch
from tqdm import tqdm

from checkpoint import (CHECKPOINT_FORMAT, check_method_fields, check_resume_options, read_checkpoint, save_checkpoint,
                        set_rng_state)
from models import cross_entropy
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


# The bound on the cross-entropies a checkpoint's epoch recorded and on its f∘g's cross-entropy over a training
# batch, for a checkpoint that training can go on from: a healthy network's stay within a few units (log 10 = 2.3
# at chance), one that has diverged gives thousands or more even where every weight is below WEIGHT_LIMIT.
LOSS_LIMIT = 100.0
BOUNDED_RECORDS = ('loss_cls', 'loss_color')  # cross-entropies; the other losses of a record need only be finite


def record_trains_on(record):
    """Whether an epoch's record (results.jsonl) is that of a run still training: every loss and accuracy finite,
    the cross-entropies (:data:`BOUNDED_RECORDS`) below :data:`LOSS_LIMIT`."""
    if not isinstance(record, dict):
        return False
    for k, v in record.items():
        if (k.startswith('loss') or k.endswith('acc')) and (not isinstance(v, (int, float)) or not math.isfinite(v)):
            return False
    return all(abs(record.get(k, 0)) < LOSS_LIMIT for k in BOUNDED_RECORDS)


class NonFiniteLoss(UserError):
    """Training diverged. ``checkpoint``: the newest checkpoint of the run from which training goes on (None when
    there is none: start again); ``lr``: the lower learning rate to go on with. :meth:`advice` says what to run,
    given the command that ran (train.py passes it)."""

    def __init__(self, what, checkpoint, lr, weights=()):
        self.what, self.checkpoint, self.lr, self.weights = what, checkpoint, lr, weights
        super().__init__(f'{what}; {self.advice()}')

    def advice(self, command=None):
        """The remedy; ``command``: the command that ran, without its ``--lr``, ``--resume`` and ``--overwrite``."""
        cmd = command or 'the same command with'
        lower = f'a lower {" or ".join(self.weights)}' if self.weights else ''
        if self.checkpoint is not None:
            return (f'the newest checkpoint that training can go on from is {self.checkpoint}; continue from it at a '
                    f'lower learning rate{f" (or start again with {lower})" if lower else ""}: {cmd} '
                    f'--lr {self.lr:g} --resume {shlex.quote(self.checkpoint)}')
        return ('no checkpoint of this run is one that training can go on from (none was written, or each gives '
                f'a loss above {LOSS_LIMIT:g} or a non-finite one); start again at a lower learning rate'
                f'{f" (or with {lower})" if lower else ""}: {cmd} --lr {self.lr:g} --overwrite')


class EpochData:
    """What :meth:`methods.Method.begin_epoch` may draw from: the training split, its batch count and size, the
    run's batch-order generator (its draws are part of the resumable state) and a progress bar.

    Its passes stop on SIGINT/SIGTERM as the epochs do: after the batch in hand, the state is saved with the
    position (``progress['before_epoch']``: which pass, its order, the next batch) and :class:`Interrupted` is
    raised. Resumed from there (``resume_at``), ``begin_epoch`` runs again and its passes continue where they
    stopped: the passes before that one yield nothing, that one yields its remaining batches, the later ones are
    drawn as they would have been. So a method's work before an epoch is its passes over :meth:`batches`, with
    nothing between them that a checkpoint would not hold."""

    def __init__(self, trainer, train, n_batches, epoch, resume_at=None):
        self.train, self.n_batches, self.batch_size = train, n_batches, trainer.opt.batch_size
        self._trainer, self._epoch, self._resume_at = trainer, epoch, resume_at
        self._passes = 0  # passes begun so far

    def batches(self, desc):
        """One pass in a fresh random order, as the epochs draw theirs: (images, colors, labels) per batch."""
        t, at = self._trainer, self._resume_at
        p, device = self._passes, self.train.labels.device
        self._passes += 1
        if at is not None and p < at['pass']:
            return  # finished before the run stopped
        if at is not None and p == at['pass']:
            order, start = at['order'].to(device), at['pos']
        else:
            order, start = torch.randperm(len(self.train), generator=t.batch_gen).to(device), 0
        bar = tqdm(total=self.n_batches, initial=start, desc=desc, dynamic_ncols=True, leave=False,
                   disable=t.opt.no_progress)
        for i in range(start, self.n_batches):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.train.images[idx], self.train.colors[idx], self.train.labels[idx]
            bar.update()
            if t.stop_signal is not None:
                bar.close()
                progress = {'before_epoch': {'pass': p, 'order': order.cpu(), 'pos': i + 1}}
                # batch 0 of the epoch: the state before its first batch
                raise Interrupted(t.save(run_folder.batch_checkpoint(self._epoch, 0), self._epoch, progress))
        bar.close()


class StopOnSignal:
    """SIGINT and SIGTERM, while :meth:`signals` is entered, set ``stop_signal``: the training loop saves its state
    at the end of the batch and stops (the handlers before are put back on leaving)."""
    stop_signal = None

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


class Trainer(StopOnSignal):
    """Runs one method over the epochs, logs, evaluates and checkpoints into ``run_dir``."""

    def __init__(self, opt, method, splits, run_dir, logger, writer=None):
        self.opt, self.method, self.splits = opt, method, splits
        self.run_dir, self.logger, self.writer = run_dir, logger, writer
        self.batch_gen = torch.Generator()
        self.batch_gen.manual_seed(opt.random_seed)
        self.start_epoch = 0
        self.progress = None
        self.last_saved = None
        self.test_mean_index = splits['test'].mean_index if 'test' in splits else None

    # -- state --
    def resume(self, path, ckpt):
        check_resume_options(ckpt.get('options', {}), self.opt, path)
        m = self.method
        check_method_fields(ckpt, m, path)
        load_net_weights(m.net, ckpt['net_state_dict'], path, m.architecture)
        if ckpt.get('h_state_dict') is not None:  # a method that trains no h may resume without it
            m.h.load_state_dict(ckpt['h_state_dict'])
        for k, o in m.optimizers.items():
            o.load_state_dict(ckpt['optimizers'][k])
        for k, s in m.schedulers.items():
            s.load_state_dict(ckpt['schedulers'][k])
        set_rng_state(ckpt['rng'], self.batch_gen, self.method.device)
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
        self.last_saved = path
        self._drop_records_after(self.start_epoch)
        where, before = f'epoch {self.start_epoch}', (self.progress or {}).get('before_epoch')
        if before is not None:
            where += f', before its batches (the work before epoch {self.start_epoch + 1}: pass {before["pass"] + 1}, ' \
                     f'batch {before["pos"]})'
        elif self.progress:
            where += f', batch {self.progress["pos"]}'
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
            when = f'by the end of epoch {epoch}' if progress is None else f'in epoch {epoch + 1}'
            raise self.diverged(f'the weights or BatchNorm statistics diverged (non-finite or above {WEIGHT_LIMIT:g}) '
                                f'{when}; not saved')
        path = os.path.join(self.run_dir, name)
        save_checkpoint(path, self.method, epoch, self.batch_gen, progress)
        self.last_saved = path
        return path

    # -- divergence --
    def diverged(self, what):
        """The :class:`NonFiniteLoss` that stops a diverging run: ``what`` happened, and the remedy, a lower
        learning rate from the newest checkpoint that training can go on from (:meth:`trainable_checkpoint`),
        or from the start when there is none. The lower rate: the method's recipe rate when the run's is above
        it, else a tenth of the run's."""
        cls = type(self.method)
        lr = cls.lr if self.opt.lr > cls.lr else self.opt.lr / 10
        weights = sorted({hp.flag for hp in cls.hyper_parameters} & {'--lambda', '--mu'})  # of the adversarial losses
        return NonFiniteLoss(what, self.trainable_checkpoint(), lr, weights)

    def trainable_checkpoint(self):
        """The newest end-of-epoch checkpoint of the run that training can go on from, or None: its epoch's
        record is one of a run still training (:func:`record_trains_on`) and its f∘g, in training mode as the
        resumed run starts, gives a finite cross-entropy below :data:`LOSS_LIMIT` on the first training batch.
        The weights of a diverging run can stay below :data:`WEIGHT_LIMIT` while its loss is in the millions
        (a checkpoint written after one step at a huge learning rate): no lower rate trains on from there."""
        if self.run_dir is None:
            return None
        records = {r['epoch']: r for r in run_folder.read_results(self.run_dir) if 'tag' not in r and 'epoch' in r}
        found = []
        for path in run_folder.checkpoints(self.run_dir):
            ckpt = self._read(path)
            epoch = ckpt.get('epoch')
            if ckpt.get('progress') is None and isinstance(epoch, int) and record_trains_on(records.get(epoch)):
                found.append((epoch, path))
        for _, path in sorted(found, key=lambda c: -c[0]):  # the newest first (stable: by time within one epoch)
            if self._trains_on(self._read(path)):
                return path
        return None

    @staticmethod
    def _read(path):
        try:
            ckpt = read_checkpoint(path)
        except UserError:
            return {}
        return ckpt if ckpt.get('format') == CHECKPOINT_FORMAT else {}

    def _trains_on(self, ckpt):
        net = copy.deepcopy(self.method.net)
        try:
            net.load_state_dict(ckpt['net_state_dict'])
        except (RuntimeError, KeyError, TypeError):
            return False
        train = self.splits['train']
        n = min(self.opt.batch_size, len(train))
        net.train(True)
        with torch.no_grad():
            loss = cross_entropy(net.g(net.f(train.images[:n])).float(), train.labels[:n])
        return bool(torch.isfinite(loss)) and float(loss) < LOSS_LIMIT

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
                self.end_epoch(record, epoch)
        return self.last_saved

    def end_epoch(self, record, epoch):
        """After the weights and schedules of epoch ``epoch`` (0-based) are final: evaluate, log ``record`` with the
        evaluation, and save the checkpoint that a resume starts from (and the kept one every --save_step epochs)."""
        opt = self.opt
        record.update(self.evaluate_epoch())
        record['epoch'] = epoch + 1
        self.log_epoch(record)
        self.save(run_folder.LAST, epoch + 1)
        if (epoch + 1) % opt.save_step == 0 or epoch + 1 == opt.max_step:
            self.save(run_folder.epoch_checkpoint(epoch + 1), epoch + 1)

    def train_epoch(self, epoch, train, n_batches):
        opt, m = self.opt, self.method
        m.train(True)
        progress, self.progress = self.progress, None
        if progress is not None and 'before_epoch' not in progress:  # resuming in the middle of this epoch
            m.begin_epoch(epoch, EpochData(self, train, n_batches, epoch), resumed=True)
            order, pos = progress['order'].to(train.labels.device), progress['pos']
            sums = {k: torch.as_tensor(v) for k, v in progress['sums'].items()}
        else:  # from its start, or resuming inside the work before it (its passes continue where they stopped)
            resume_at = progress['before_epoch'] if progress is not None else None
            m.begin_epoch(epoch, EpochData(self, train, n_batches, epoch, resume_at), resumed=False)
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
                raise self.diverged(f'non-finite {k} in epoch {epoch + 1}; training stopped')
        record['lr'] = m.lr_now()
        record['epoch_time_s'] = time.time() - t0
        return record

    def check_finite(self, out, epoch, i):
        for k, v in out.items():
            if not torch.isfinite(v).all():
                raise self.diverged(f'non-finite {k} in epoch {epoch + 1}, batch {i + 1}; training stopped')

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
