"""Methods and the one training loop they share (Kim et al., CVPR 2019, Sec. 3 and 4.1).

Notation: x image, y digit, b colour-bin map (3 x 14 x 14, background ignored), f feature extractor,
g label classifier, h colour predictor (one head per colour channel), p = softmax(h(f(x))).

Objectives, with the log key of each term in brackets:

* ``baseline``: f, g minimise CE(g(f(x)), y) [``loss_cls``].
* ``lnl`` (the paper's min-max as the authors' code runs it), two steps per mini-batch:

  1. f, g minimise CE(g(f(x)), y) [``loss_cls``] + lambda * NE [``loss_mi``], where
     NE = mean over batch and positions of sum_bins p log p, averaged over R, G, B (the negative
     entropy of h, background included as in the authors' code). Only f and g step.
  2. A fresh forward pass through the updated f; h minimises CE_R + CE_G + CE_B on h(GRL(f(x)))
     [``loss_color``], background ignored. GRL is identity forward and multiplies the gradient by
     -mu backward, so f steps to make h worse while h improves. f and h step, g does not.

  The full objective of f, g is therefore ``loss_cls + lambda * loss_mi - mu * loss_color``.
* ``blindeye`` (Alvi et al., ECCV-W 2018): f, g minimise CE(g(f(x)), y) [``loss_cls``] +
  alpha * CE(uniform, h(f(x))) [``loss_conf``] (averaged over R, G, B); h minimises its own
  CE_R + CE_G + CE_B [``loss_color``] on features detached from f.
* ``gray``: the baseline trained and tested on the luminance view of the images.

Every method logs ``acc`` (train accuracy on the batches it stepped on); methods with h also log
``color_acc`` (h's bin accuracy on non-background positions).

SGD with momentum and weight decay for f∘g and for h, learning rate x ``lr_decay_rate`` every
``lr_decay_period`` epochs (Sec. 4.1 and the authors' scripts).
"""
import contextlib
import glob
import json
import logging
import os
import pickle
import random
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from models import ColorPredictor, ConvNet, color_accuracy, color_loss, neg_entropy
from utils import UserError, append_line, atomic_path, atomic_write_text

CHECKPOINT_FORMAT = 'lnl-checkpoint-v1'


# --------------------------------------------------------------------------------------------------
# Gradient reversal
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------

class Method:
    """Base of every method: owns f∘g (``net``), h, their optimisers and schedulers.

    ``update(images, colors, labels)`` performs all optimiser steps of one mini-batch and returns a
    dict of 0-d tensors (``float()`` them to read; kept as tensors so that the loop does not
    synchronise with the device on every iteration).
    """
    name = None
    gray = False      # train and test on the luminance view
    uses_h = False    # h is trained and its state matters

    def __init__(self, opt, device):
        self.opt = opt
        self.device = device
        fmt = torch.channels_last if opt.channels_last else torch.contiguous_format
        self.net = ConvNet(num_classes=opt.n_class, feat_ch=opt.feat_ch).to(device, memory_format=fmt)
        self.h = ColorPredictor(in_ch=opt.feat_ch, num_bins=opt.num_bins).to(device, memory_format=fmt)
        self.optimizers = {'net': self._sgd(self.net.parameters())}
        if self.uses_h:
            self.optimizers['h'] = self._sgd(self.h.parameters())
        period, rate = opt.lr_decay_period, opt.lr_decay_rate
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(o, lambda epoch: rate ** (epoch // period))
            for name, o in self.optimizers.items()}
        self._f, self._g = self.net.f, self.net.g
        if opt.compile:
            self._f, self._g = torch.compile(self.net.f), torch.compile(self.net.g)

    def _sgd(self, params):
        return torch.optim.SGD(params, lr=self.opt.lr, momentum=self.opt.momentum,
                               weight_decay=self.opt.weight_decay)

    def autocast(self):
        if self.opt.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def zero_grad(self):
        for o in self.optimizers.values():
            o.zero_grad(set_to_none=True)

    def train(self, mode=True):
        self.net.train(mode)
        self.h.train(mode)

    def predict(self, images):
        return self._g(self._f(images))

    def step_schedulers(self):
        for s in self.schedulers.values():
            s.step()

    def lr(self):
        return self.optimizers['net'].param_groups[0]['lr']

    def update(self, images, colors, labels):
        raise NotImplementedError

    @staticmethod
    def _acc(logits, labels):
        return (logits.argmax(1) == labels).float().mean()


class Baseline(Method):
    name = 'baseline'

    def update(self, images, colors, labels):
        with self.autocast():
            logits = self.predict(images)
            loss = F.cross_entropy(logits.float(), labels)
        self.zero_grad()
        loss.backward()
        self.optimizers['net'].step()
        return {'loss_cls': loss.detach(), 'acc': self._acc(logits.detach(), labels)}


class Gray(Baseline):
    name = 'gray'
    gray = True


class LNL(Method):
    name = 'lnl'
    uses_h = True

    def update(self, images, colors, labels):
        out = self.unlearn_step(images, labels)
        out.update(self.color_step(images, colors))
        return out

    def unlearn_step(self, images, labels):
        """Step 1: f, g on CE + lambda * negative entropy of h. h's weights get no gradient (they would
        be discarded before step 2 anyway), but the gradient flows through h into f."""
        with self.autocast():
            feat = self._f(images)
            logits = self._g(feat)
            loss_cls = F.cross_entropy(logits.float(), labels)
            with frozen(self.h):
                loss_mi = neg_entropy([lg.float() for lg in self.h(feat)])
            loss = loss_cls + self.opt.lambda_ * loss_mi
        self.zero_grad()
        loss.backward()
        self.optimizers['net'].step()
        return {'loss_cls': loss_cls.detach(), 'loss_mi': loss_mi.detach(),
                'acc': self._acc(logits.detach(), labels)}

    def color_step(self, images, colors):
        """Step 2: fresh features from the updated f; h learns the colour through the gradient-reversal
        layer, so f receives -mu times h's gradient. g is not run and, with no gradient, does not step."""
        with self.autocast():
            feat = grad_reverse(self._f(images), self.opt.mu)
            color_logits = [lg.float() for lg in self.h(feat)]
            loss_color = color_loss(color_logits, colors)
        self.zero_grad()
        loss_color.backward()
        self.optimizers['net'].step()
        self.optimizers['h'].step()
        correct, counted = color_accuracy([lg.detach() for lg in color_logits], colors)
        return {'loss_color': loss_color.detach(), 'color_acc': correct / counted.clamp_min(1)}


class BlindEye(Method):
    name = 'blindeye'
    uses_h = True

    def update(self, images, colors, labels):
        opt = self.opt
        with self.autocast():
            feat = self._f(images)
            logits = self._g(feat)
            loss_cls = F.cross_entropy(logits.float(), labels)
            with frozen(self.h):
                # CE(uniform, p) = -mean_bins log p, averaged over positions and channels
                loss_conf = sum(-F.log_softmax(lg.float(), dim=1).mean(dim=1).mean()
                                for lg in self.h(feat)) / len(self.h.heads)
            color_logits = [lg.float() for lg in self.h(feat.detach())]
            loss_color = color_loss(color_logits, colors)
        # The two objectives touch disjoint parameters (f, g vs h), so one backward serves both.
        self.zero_grad()
        (loss_cls + opt.alpha * loss_conf + loss_color).backward()
        self.optimizers['net'].step()
        self.optimizers['h'].step()
        correct, counted = color_accuracy([lg.detach() for lg in color_logits], colors)
        return {'loss_cls': loss_cls.detach(), 'loss_conf': loss_conf.detach(),
                'loss_color': loss_color.detach(), 'acc': self._acc(logits.detach(), labels),
                'color_acc': correct / counted.clamp_min(1)}


METHODS = {cls.name: cls for cls in (Baseline, LNL, BlindEye, Gray)}


def build_method(opt, device):
    resolve_precision(opt, device)
    return METHODS[opt.method](opt, device)


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------

DRY_RUN_EVAL = 256  # samples evaluated per epoch with --dry_run
DRY_RUN_DATA = (1024, 256)  # training and test images a --dry_run loads (the first ones of the file)


@torch.no_grad()
def evaluate(net, split, h=None, batch_size=1000, num_classes=10, mean_index=None):
    """Accuracy of f∘g on ``split`` and, with ``h``, h's colour-bin accuracy. Pure: no loading, no exit.

    Returns a dict: ``acc``, ``aligned_acc`` / ``conflicting_acc`` (digits whose stroke colour is /
    is not nearest to their own class's mean colour, given ``mean_index``), ``per_class_acc``,
    ``confusion`` (rows true, columns predicted), ``color_acc`` when h is given.
    """
    was_training = net.training
    net.eval()
    if h is not None:
        h_training = h.training
        h.eval()
    preds, correct_c, counted_c = [], 0, 0
    for start in range(0, len(split), batch_size):
        x = split.images[start:start + batch_size]
        feat, logits = net(x)
        preds.append(logits.argmax(1))
        if h is not None:
            c, n = color_accuracy(h(feat), split.colors[start:start + batch_size])
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


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

def rng_state(batch_gen):
    """Every random state of a run as tensors and plain Python values (loadable with ``weights_only``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {'torch': torch.get_rng_state(),
             'numpy': {'name': str(name), 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                       'has_gauss': int(has_gauss), 'cached_gaussian': float(gauss)},
             'python': list(random.getstate()), 'batch': batch_gen.get_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, batch_gen):
    torch.set_rng_state(state['torch'])
    npst = state['numpy']
    if isinstance(npst, dict):
        np.random.set_state((npst['name'], npst['keys'].numpy().astype(np.uint32), npst['pos'],
                             npst['has_gauss'], npst['cached_gaussian']))
    else:
        np.random.set_state(npst)
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]) if isinstance(py, list) else py)
    batch_gen.set_state(state['batch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_checkpoint(path, method, epoch, batch_gen, progress=None):
    """Write the whole training state to ``path`` atomically.

    ``epoch`` is the number of finished epochs; ``progress`` (order, position, running sums) is
    set when the checkpoint was written in the middle of an epoch.
    """
    opt = method.opt
    state = {
        'format': CHECKPOINT_FORMAT,
        'epoch': epoch,
        'step': epoch,  # the authors' key
        'options': plain(vars(opt)),
        'config': {'n_class': opt.n_class, 'feat_ch': opt.feat_ch, 'num_bins': opt.num_bins,
                   'method': opt.method},
        'net_state_dict': method.net.state_dict(),
        'h_state_dict': method.h.state_dict(),
        'optim_state_dict': method.optimizers['net'].state_dict(),  # the authors' key
        'optimizers': {k: o.state_dict() for k, o in method.optimizers.items()},
        'schedulers': {k: s.state_dict() for k, s in method.schedulers.items()},
        'rng': rng_state(batch_gen),
        'progress': progress,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def plain(value):
    """``value`` with containers turned into dicts and lists of str, int, float, bool and None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# What a NumPy array needs to be rebuilt from a pickle (no code runs): checkpoints of earlier versions of this
# project hold NumPy's random state as an array.
NUMPY_ARRAY_GLOBALS = [getattr(getattr(np, '_core', None) or np.core, 'multiarray')._reconstruct, np.ndarray,
                       np.dtype] + [type(np.dtype(t)) for t in (np.uint32, np.uint8, np.int64, np.float64)]


def _unreadable(path, exc):
    first = str(exc).splitlines()[0][:120] if str(exc) else ''
    return UserError(f'{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {first})')


def read_checkpoint(path, trust=False, log=None):
    """Load a checkpoint file (ours or the authors') to the CPU; ``UserError`` when it is not one.

    Always with ``torch.load(weights_only=True)``: tensors and plain Python values only, so a file cannot
    run code while it loads. Our checkpoints and the authors' (state dicts and numbers) load that way.
    A file that needs more is refused unless ``trust`` (``--trust_checkpoint``): then it is loaded with
    full unpickling, after a one-line warning through ``log``.
    """
    if not os.path.isfile(path):
        raise UserError(f'checkpoint {path} does not exist; give the path of a .pth file written by '
                        'train.py (e.g. runs/<exp_name>/checkpoint_last.pth)')
    try:
        with torch.serialization.safe_globals(NUMPY_ARRAY_GLOBALS):
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if 'GLOBAL' not in text:  # not a pickle that asks for a class or function: a damaged file
            detail = next((line.strip() for line in text.splitlines() if 'Unsupported' in line), 'UnpicklingError')
            raise UserError(f'{path} is not a readable PyTorch checkpoint ({detail[:120]})') from None
        if not trust:
            raise UserError(f'{path} holds objects other than tensors and plain values, and loading them could '
                            'run code stored in the file; if you trust the file, pass --trust_checkpoint') from None
        (log or (lambda m: print(m, file=sys.stderr)))(
            f'warning: {path}: loading with full unpickling (--trust_checkpoint); this runs any code in the file')
        try:
            ckpt = torch.load(path, map_location='cpu', weights_only=False)
        except Exception as exc2:
            raise _unreadable(path, exc2) from None
    except Exception as exc:  # torch.load raises many types for a file that is not a checkpoint
        raise _unreadable(path, exc) from None
    if not isinstance(ckpt, dict) or 'net_state_dict' not in ckpt:
        raise UserError(f'{path} is not a checkpoint of this project or of the authors\' code '
                        '(no net_state_dict)')
    if not isinstance(ckpt['net_state_dict'], dict):
        raise UserError(f'{path}: net_state_dict is a {type(ckpt["net_state_dict"]).__name__}, not a state dict')
    return ckpt


def load_net_weights(net, state_dict, path):
    """Load f∘g weights (our names are the authors' names); a clear error for another architecture."""
    if not isinstance(state_dict, dict):
        raise UserError(f'{path}: net_state_dict is not a state dict')
    state_dict = {k.replace('module.', '', 1) if k.startswith('module.') else k: v
                  for k, v in state_dict.items()}
    own = net.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise UserError(f'{path} holds another architecture: missing {missing[:4]}, unexpected '
                        f'{unexpected[:4]}; it must be an f∘g with bn0, conv1..conv4, fc')
    wrong = [k for k, v in state_dict.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise UserError(f'{path} holds another architecture: {k} has shape {tuple(state_dict[k].shape)}, '
                        f'expected {tuple(own[k].shape)}')
    net.load_state_dict(state_dict)


def newest_checkpoint(run_dir):
    """The newest checkpoint in ``run_dir`` that loads, or ``None``; unreadable files are skipped."""
    paths = sorted(glob.glob(os.path.join(run_dir, 'checkpoint_*.pth')), key=os.path.getmtime, reverse=True)
    for path in paths:
        try:
            ckpt = read_checkpoint(path)
        except UserError:
            continue
        if ckpt.get('format') == CHECKPOINT_FORMAT:
            return path, ckpt
    return None


# Options that define what a run computes: resuming with other values would mix two runs. Besides the
# data and the objective, the arithmetic (--precision, --no_channels_last, --compile) and --dry_run (one batch per
# epoch) change what an epoch computes. Where it runs (--device, --threads) and how it reports do not.
RUN_DEFINING = ('method', 'color_var', 'lambda_', 'mu', 'alpha', 'batch_size', 'num_bins', 'feat_ch',
                'n_class', 'val_size', 'random_seed', 'momentum', 'weight_decay', 'lr', 'lr_decay_rate',
                'lr_decay_period', 'data_seed', 'palette', 'amp', 'precision', 'channels_last', 'compile',
                'dry_run')


def check_resume_options(ckpt_opts, opt, path):
    diff = [(k, ckpt_opts.get(k), getattr(opt, k)) for k in RUN_DEFINING
            if k in ckpt_opts and ckpt_opts.get(k) != getattr(opt, k)]
    if diff:
        desc = ', '.join(f'{k}={new!r} (checkpoint: {old!r})' for k, old, new in diff)
        raise UserError(f'cannot resume from {path}: it was written with other options: {desc}; '
                        'use the same options or another --exp_name')


# --------------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------------

class Interrupted(Exception):
    pass


WEIGHT_LIMIT = 1e4  # no weight of a healthy f, g or h comes near this (they stay within a few units)


def weights_healthy(method):
    """Whether every weight of f, g and h is finite and below :data:`WEIGHT_LIMIT` in magnitude: a
    checkpoint of a run that is already diverging is not offered as the one to go back to."""
    with torch.no_grad():
        for module in (method.net, method.h):
            for p in module.parameters():
                if not torch.isfinite(p).all() or p.abs().max() > WEIGHT_LIMIT:
                    return False
    return True


class NonFiniteLoss(UserError):
    pass


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
        load_net_weights(m.net, ckpt['net_state_dict'], path)
        m.h.load_state_dict(ckpt['h_state_dict'])
        for k, o in m.optimizers.items():
            o.load_state_dict(ckpt['optimizers'][k])
        for k, s in m.schedulers.items():
            s.load_state_dict(ckpt['schedulers'][k])
        set_rng_state(ckpt['rng'], self.batch_gen)
        self.start_epoch = ckpt['epoch']
        self.progress = ckpt.get('progress')
        self.last_good = path if weights_healthy(self.method) else None
        self.last_saved = path
        self._drop_records_after(self.start_epoch)
        where = f'epoch {self.start_epoch}' + (f', batch {self.progress["pos"]}' if self.progress else '')
        self.logger.info(f'resumed from {path} at {where}')

    def _drop_records_after(self, epoch):
        """Forget training records of epochs the checkpoint does not contain (a run killed between
        logging an epoch and saving it) and partial lines, so a resumed run logs each epoch once."""
        path = os.path.join(self.run_dir, 'results.jsonl')
        if not os.path.exists(path):
            return
        keep = []
        with open(path) as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if 'tag' in rec or rec.get('epoch', 0) <= epoch:
                    keep.append(json.dumps(rec))
        atomic_write_text(path, ''.join(k + '\n' for k in keep))

    def save(self, name, epoch, progress=None):
        path = os.path.join(self.run_dir, name)
        save_checkpoint(path, self.method, epoch, self.batch_gen, progress)
        self.last_saved = path
        if weights_healthy(self.method):
            self.last_good = path  # named by the non-finite-loss guard as the one to go back to
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
        n_batches = train.num_batches(opt.batch_size)
        with self.signals():
            for epoch in range(self.start_epoch, opt.max_step):
                record = self.train_epoch(epoch, train, n_batches)
                m.step_schedulers()
                record.update(self.evaluate_epoch())
                record['epoch'] = epoch + 1
                self.log_epoch(record)
                self.save('checkpoint_last.pth', epoch + 1)
                if (epoch + 1) % opt.save_step == 0 or epoch + 1 == opt.max_step:
                    self.save(f'checkpoint_epoch_{epoch + 1:04d}.pth', epoch + 1)
        return self.last_saved

    def train_epoch(self, epoch, train, n_batches):
        opt, m = self.opt, self.method
        if self.progress is not None:  # resuming in the middle of this epoch
            order, pos = self.progress['order'].to(train.labels.device), self.progress['pos']
            sums = {k: torch.as_tensor(v) for k, v in self.progress['sums'].items()}
            self.progress = None
        else:
            order, pos, sums = torch.randperm(len(train), generator=self.batch_gen).to(train.labels.device), 0, {}
        m.train(True)
        from tqdm import tqdm
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
                path = self.save(f'checkpoint_epoch_{epoch:04d}_batch_{i + 1:05d}.pth', epoch, progress)
                raise Interrupted(path)
            if opt.dry_run:
                break
        bar.close()
        n = int(sums.pop('n', 1))
        record = {k: float(v) / n for k, v in sums.items()}
        for k, v in record.items():
            if not np.isfinite(v):
                raise NonFiniteLoss(f'non-finite {k} in epoch {epoch + 1}; training stopped, the last good '
                                    f'checkpoint is {self.last_good or "none (no epoch finished)"}. '
                                    'Lower --lr, --lambda or --mu and resume or restart')
        record['lr'] = m.lr()
        record['epoch_time_s'] = time.time() - t0
        return record

    def check_finite(self, out, epoch, i):
        for k, v in out.items():
            if not torch.isfinite(v).all():
                raise NonFiniteLoss(f'non-finite {k} in epoch {epoch + 1}, batch {i + 1}; training stopped, '
                                    f'the last good checkpoint is {self.last_good or "none (no epoch finished)"}. '
                                    'Lower --lr, --lambda or --mu and resume or restart')

    def evaluate_epoch(self):
        """Validation and test-monitoring metrics of one epoch; with --dry_run on the first
        ``DRY_RUN_EVAL`` samples only (a smoke run checks the path, not the number)."""
        m, out = self.method, {}
        h = m.h if m.uses_h else None
        n = DRY_RUN_EVAL if self.opt.dry_run else None
        if 'val' in self.splits:
            val = self.splits['val']
            res = evaluate(m.net, val.subset(n) if n else val, h, num_classes=self.opt.n_class)
            out['val_acc'] = res['acc']
        if self.opt.monitor_test:
            # monitoring only (the curve in the README); nothing is selected on it
            test, mean_index = self.splits['test'], self.test_mean_index
            if n:
                test, mean_index = test.subset(n), mean_index[:n]
            res = evaluate(m.net, test, h, num_classes=self.opt.n_class, mean_index=mean_index)
            out['monitor_test_acc'] = res['acc']
            out['monitor_conflicting_acc'] = res['conflicting_acc']
            if h is not None:
                out['monitor_test_color_acc'] = res['color_acc']
        return out

    def log_epoch(self, record):
        if self.opt.dry_run:
            record['dry_run'] = True  # a smoke run's numbers check the pipeline; they are not results
        epoch = record['epoch']
        append_line(os.path.join(self.run_dir, 'results.jsonl'), json.dumps(record))
        msg = ' '.join(f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in record.items())
        self.logger.info(f'[epoch {epoch}] {msg}')
        if self.writer is not None:
            for k, v in record.items():
                if k != 'epoch' and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(f'train/{k}', v, epoch)
            self.writer.flush()


def setup_logger(run_dir, name='lnl'):
    """Log to ``run_dir/train.log`` and to the console (through tqdm so bars are not broken)."""
    logger = logging.getLogger(f'{name}.{run_dir}')
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    logger.propagate = False
    fmt = logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S')
    fh = logging.FileHandler(os.path.join(run_dir, 'train.log'))
    fh.setFormatter(fmt)
    logger.addHandler(fh)

    class TqdmHandler(logging.Handler):
        def emit(self, record):
            from tqdm import tqdm
            tqdm.write(self.format(record), file=sys.stderr)
    th = TqdmHandler()
    th.setFormatter(fmt)
    logger.addHandler(th)
    return logger


def cpu_features():
    """The CPU's feature flags (``/proc/cpuinfo`` on Linux; empty elsewhere)."""
    try:
        with open('/proc/cpuinfo') as fh:
            for line in fh:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


NATIVE_BF16_CPU_FLAGS = ('amx_bf16', 'avx512_bf16')


def native_bf16(device):
    """Whether ``device`` computes bfloat16 natively: a CUDA device that supports it, or a CPU with AMX or
    AVX512-BF16 (elsewhere bf16 autocast is emulated and slower than fp32)."""
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported()
    if device.type == 'cpu':
        return any(f in cpu_features() for f in NATIVE_BF16_CPU_FLAGS)
    return False


def resolve_precision(opt, device):
    """Turn ``--precision auto`` into fp32 or bf16 for ``device``; ``opt.amp`` follows (bf16 autocast)."""
    if not hasattr(opt, 'precision_requested'):
        opt.precision_requested = getattr(opt, 'precision', None) or 'auto'
    if getattr(opt, 'precision', None) in (None, 'auto'):
        opt.precision = 'bf16' if native_bf16(device) else 'fp32'
    opt.amp = opt.precision == 'bf16'
    return opt.precision


def resolve_device(name):
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise UserError(f'--device {name} was asked for but CUDA is not available; use --device cpu')
    return torch.device(name)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def write_options(run_dir, opt):
    atomic_write_text(os.path.join(run_dir, 'options.json'), json.dumps(vars(opt), indent=2, sort_keys=True))
