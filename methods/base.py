"""The base of every method: f∘g (``net``), h, their optimisers and schedulers, and what a method declares."""
import contextlib
import re
import warnings

import torch

from models import ColorPredictor, ConvNet, accuracy, color_accuracy, cross_entropy
from models.weights import load_net_weights


class Method:
    """Base of every method: owns f∘g (``net``), h, their optimisers and schedulers.

    ``update(images, colors, labels)`` performs all optimiser steps of one mini-batch and returns a
    dict of 0-d tensors (``float()`` them to read; kept as tensors so that the loop does not
    synchronise with the device on every iteration).

    What a subclass declares for the rest of the code:

    ``name``             the ``--method`` value and registry key
    ``card``             how reports show it (:class:`methods.registry.Card`: name, colour, its authors' numbers)
    ``gray``             trained on the luminance view of the images, tested on a grey view (test.py --gray_view)
    ``uses_h``           has a colour predictor h that is trained (checkpointed, evaluated by test.py)
    ``start_from``       ``None``, or the method whose run of the same sigma^2 and seed it starts from
    ``lr``               the learning rate of its runs in the authors' recipe (the sweep, train.sh)
    ``probed``           the bias-leakage probe is run for it after training (the sweep) and reported
    ``hyper_parameters`` its own options (:class:`HyperParameter`); run-defining for its runs
    ``option_defaults``  train.py defaults of its own for common options (``max_step``, ``lr``,
                         ``lr_decay_period``), used when the command line does not give them
    ``architecture``     what its checkpoints hold, for the error on a file of another architecture
    ``flush_denormal``   train with denormal floats flushed to zero on the CPU (``torch.set_flush_denormal``)
    ``in_default_grid``  a row of the sweep's default grid (the paper's Fig. 4); else run when asked for
    ``packable``         its runs can train packed (``train_pack.py``): its update reduces every loss with the
                         ``members`` argument of :mod:`models.losses` and backpropagates through :meth:`backward`,
                         and its networks take ``members`` (``self.members`` runs as one; 1 alone)

    What a method with networks of its own overrides (the defaults are the paper's f∘g and h):
    :meth:`networks` and :meth:`weight_sizes` (test.py rebuilds the networks from a checkpoint with them),
    :meth:`make_optimizers`, :meth:`bias_label` (the target h learns, from the colour-bin maps),
    :meth:`probe_features` and :meth:`probe_head` (the bias-leakage probe), :meth:`load_start` (what a
    run started from another run's checkpoint takes from it) and :meth:`begin_epoch` (work before an epoch).
    """
    name = None
    card = None
    gray = False
    uses_h = False
    start_from = None
    lr = 0.01
    probed = False
    hyper_parameters = ()
    option_defaults = {}
    architecture = 'an f∘g with bn0, conv1..conv4, fc'
    flush_denormal = False
    in_default_grid = True
    packable = False

    def __init__(self, opt, device, members=1):
        self.opt = opt
        self.device = device
        self.members = members
        fmt = torch.channels_last if opt.channels_last else torch.contiguous_format
        net, h = self.networks(opt.n_class, opt.feat_ch, opt.num_bins, **({'members': members} if members > 1 else {}))
        self.net = net.to(device, memory_format=fmt)
        self.h = h.to(device, memory_format=fmt)
        self.optimizers = self.make_optimizers()
        self.schedulers = {
            name: torch.optim.lr_scheduler.StepLR(o, step_size=opt.lr_decay_period, gamma=opt.lr_decay_rate)
            for name, o in self.optimizers.items()}
        self._f, self._g = self.net.f, self.net.g
        if opt.compile:
            self._f, self._g = torch.compile(self.net.f), torch.compile(self.net.g)

    @classmethod
    def networks(cls, n_class, feat_ch, num_bins, members=1):
        """``(net, h)``, freshly initialised: ``net(x)`` returns ``(features, logits)``, ``net.f`` the features
        h and the probe read, ``net.g`` the logits from them; ``h(features)`` a list of colour logits, one per
        channel (R, G, B). ``members``: that many as one (a packable method's)."""
        return (ConvNet(num_classes=n_class, feat_ch=feat_ch, members=members),
                ColorPredictor(in_ch=feat_ch, num_bins=num_bins, members=members))

    @classmethod
    def weight_sizes(cls, net_sd, h_sd):
        """``{'n_class', 'feat_ch', 'num_bins'}`` read from the shapes of a checkpoint's weights (``num_bins`` None
        when the file has no h); ``None`` when the weights are not of this method's architecture."""
        shape = {k: tuple(v.shape) for k, v in list(net_sd.items()) + list(h_sd.items()) if hasattr(v, 'shape')}
        if len(shape.get('fc.weight', ())) != 2 or len(shape.get('conv1.weight', ())) != 4:
            return None
        return {'n_class': shape['fc.weight'][0], 'feat_ch': shape['conv1.weight'][0],
                'num_bins': shape.get('heads.0.pred_conv2.weight', (None,))[0]}

    def make_optimizers(self):
        """The named optimisers (the first one's learning rate is the one logged): SGD for f∘g, and for h
        when the method trains one."""
        optimizers = {'net': self._sgd(self.net.parameters())}
        if self.uses_h:
            optimizers['h'] = self._sgd(self.h.parameters())
        return optimizers

    @staticmethod
    def bias_label(colors):
        """The target h learns and is scored on, from the (N, 3, 14, 14) colour-bin maps: the maps themselves."""
        return colors

    @staticmethod
    def probe_features(net, images):
        """The features the bias-leakage probe reads: f's feature map."""
        return net.f(images)

    @classmethod
    def probe_head(cls, feat_ch, num_bins):
        """A fresh colour predictor for the probe, of h's architecture."""
        return ColorPredictor(in_ch=feat_ch, num_bins=num_bins)

    def load_start(self, ckpt, path):
        """Initialise from another run's checkpoint (``--use_pretrain``); returns what was taken, for the log.
        The paper's recipe: f and g; h starts fresh."""
        load_net_weights(self.net, ckpt['net_state_dict'], path, self.architecture)
        return 'f and g'

    def begin_epoch(self, epoch, data, resumed):
        """Called before each epoch's batches (``resumed``: the epoch continues from a checkpoint taken inside
        its batches). ``data`` draws what extra passes need (see :class:`trainer.EpochData`); a run stopped inside
        those passes resumes with ``resumed`` false, and ``data.batches()`` continues the passes where they
        stopped. Nothing by default."""

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
        with warnings.catch_warnings():
            # an optimiser whose networks do not train in some epochs (csad_base's bias branch in its first
            # phase) has not stepped when its schedule does; the schedule is meant to advance all the same
            warnings.filterwarnings('ignore', message=re.escape('Detected call of `lr_scheduler.step()` before'))
            for s in self.schedulers.values():
                s.step()

    def lr_now(self):
        return next(iter(self.optimizers.values())).param_groups[0]['lr']

    def update(self, images, colors, labels):
        raise NotImplementedError

    def classify(self, images, labels):
        """``(features, logits, digit cross-entropy)`` of f∘g (call it under :meth:`autocast`; the loss in float32)."""
        feat = self._f(images)
        logits = self._g(feat)
        return feat, logits, cross_entropy(logits.float(), labels, members=self.members)

    @staticmethod
    def backward(loss):
        """Backpropagate a loss: one run's (0-d), or the sum of a pack's members' ((K,): each member's weights get
        the gradient of its own loss only)."""
        (loss.sum() if loss.dim() else loss).backward()

    def _acc(self, logits, labels):
        return accuracy(logits, labels, members=self.members)

    def _color_acc(self, color_logits, target):
        """The colour predictor's bin accuracy over the positions that are not ignored."""
        correct, counted = color_accuracy([lg.detach() for lg in color_logits], target, members=self.members)
        return correct / counted.clamp_min(1)
