"""The methods (Kim et al., CVPR 2019, Sec. 3 and 4.1) and the registry that every command reads them from.

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
     -mu backward, so f steps to make h worse while h improves. f and h step; g has no gradient.

  Which optimiser semantics step 2 uses is ``--optim_semantics``. ``current`` (the default): today's
  PyTorch, where ``zero_grad()`` sets gradients to None and SGD skips g in step 2, i.e. the authors' code
  run on current PyTorch. ``pytorch0.4``: the authors' code as it ran in 2018, where ``zero_grad()``
  zeroed gradients in place, so step 2 also steps g on a zero gradient (its momentum and weight decay:
  g moves twice per mini-batch); the same update as ``zero_grad(set_to_none=False)`` for f∘g's optimiser.

  The full objective of f, g is therefore ``loss_cls + lambda * loss_mi - mu * loss_color``.
* ``blindeye`` (Alvi et al., ECCV-W 2018): f, g minimise CE(g(f(x)), y) [``loss_cls``] +
  alpha * CE(uniform, h(f(x))) [``loss_conf``] (averaged over R, G, B); h minimises its own
  CE_R + CE_G + CE_B [``loss_color``] on features detached from f.
* ``gray``: the baseline trained on the luminance view of the images and tested on a grey view
  (``dataset.tensors.DEFAULT_GRAY_VIEW``: the file's ``test_gray`` digits; see test.py ``--gray_view``).

Every method logs ``acc`` (train accuracy on the batches it stepped on); methods with h also log
``color_acc`` (h's bin accuracy on non-background positions).

SGD with momentum and weight decay for f∘g and for h, learning rate x ``lr_decay_rate`` every
``lr_decay_period`` epochs (Sec. 4.1 and the authors' scripts).

The registry
------------
``METHODS`` maps ``--method`` names to classes. A class states everything the rest of the code asks
about its method (see :class:`Method`): the command-line options, the sweep's order and learning rates,
test.py's choice of networks and input view, and the report's names all come from here. A new method is
one class decorated with :func:`register`.
"""
import contextlib
import dataclasses
import re
import warnings

import torch
import torch.nn.functional as F

from models import ColorPredictor, ConvNet, color_accuracy, color_loss, cross_entropy, neg_entropy
from utils import nonneg_float, resolve_precision


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

@dataclasses.dataclass(frozen=True)
class HyperParameter:
    """A constant of one method's objective: a train.py option (``flag``, stored as ``dest``) that is
    run-defining for the runs of that method."""
    flag: str
    dest: str
    default: float
    help: str
    type: object = nonneg_float
    choices: tuple = None


class Method:
    """Base of every method: owns f∘g (``net``), h, their optimisers and schedulers.

    ``update(images, colors, labels)`` performs all optimiser steps of one mini-batch and returns a
    dict of 0-d tensors (``float()`` them to read; kept as tensors so that the loop does not
    synchronise with the device on every iteration).

    What a subclass declares for the rest of the code:

    ``name``             the ``--method`` value and registry key
    ``display``          its name in tables and figures
    ``plot_color``       the colour of its curves
    ``gray``             trained on the luminance view of the images, tested on a grey view (test.py --gray_view)
    ``uses_h``           has a colour predictor h that is trained (checkpointed, evaluated by test.py)
    ``start_from``       ``None``, or the method whose run of the same sigma^2 and seed it starts from
    ``lr``               the learning rate of its runs in the authors' recipe (the sweep, train.sh)
    ``probed``           the bias-leakage probe is run for it after training (the sweep) and reported
    ``hyper_parameters`` its own options (:class:`HyperParameter`); run-defining for its runs
    ``option_defaults``  train.py defaults of its own for common options (``max_step``, ``lr``,
                         ``lr_decay_period``), used when the command line does not give them
    ``architecture``     what its checkpoints hold, for the error on a file of another architecture
    ``published``        numbers its authors report, {sigma^2: accuracy}, and ``published_by`` (the label in tables)
    ``flush_denormal``   train with denormal floats flushed to zero on the CPU (``torch.set_flush_denormal``)
    ``in_default_grid``  a row of the sweep's default grid (the paper's Fig. 4); else run when asked for

    What a method with networks of its own overrides (the defaults are the paper's f∘g and h):
    :meth:`networks` and :meth:`weight_sizes` (test.py rebuilds the networks from a checkpoint with them),
    :meth:`make_optimizers`, :meth:`bias_label` (the target h learns, from the colour-bin maps),
    :meth:`probe_features` and :meth:`probe_head` (the bias-leakage probe), :meth:`load_start` (what a
    run started from another run's checkpoint takes from it) and :meth:`begin_epoch` (work before an epoch).
    """
    name = None
    display = None
    plot_color = None
    gray = False
    uses_h = False
    start_from = None
    lr = 0.01
    probed = False
    hyper_parameters = ()
    option_defaults = {}
    architecture = 'an f∘g with bn0, conv1..conv4, fc'
    published, published_by = {}, 'paper'
    flush_denormal = False
    in_default_grid = True

    def __init__(self, opt, device):
        self.opt = opt
        self.device = device
        fmt = torch.channels_last if opt.channels_last else torch.contiguous_format
        net, h = self.networks(opt.n_class, opt.feat_ch, opt.num_bins)
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
    def networks(cls, n_class, feat_ch, num_bins):
        """``(net, h)``, freshly initialised: ``net(x)`` returns ``(features, logits)``, ``net.f`` the features
        h and the probe read, ``net.g`` the logits from them; ``h(features)`` a list of colour logits, one per
        channel (R, G, B)."""
        return ConvNet(num_classes=n_class, feat_ch=feat_ch), ColorPredictor(in_ch=feat_ch, num_bins=num_bins)

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
        from checkpoint import load_net_weights  # checkpoint imports this module
        load_net_weights(self.net, ckpt['net_state_dict'], path, self.architecture)
        return 'f and g'

    def begin_epoch(self, epoch, data, resumed):
        """Called before each epoch's batches (``resumed``: the epoch continues from a checkpoint taken inside
        it). ``data`` draws what extra passes need (see :class:`trainer.EpochData`). Nothing by default."""

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

    @staticmethod
    def _acc(logits, labels):
        return (logits.argmax(1) == labels).float().mean()


METHODS = {}


def register(cls):
    """Class decorator: make ``cls`` a ``--method`` of every command."""
    if not cls.name:
        raise ValueError(f'{cls.__name__} has no name')
    METHODS[cls.name] = cls
    return cls


@contextlib.contextmanager
def registered(*classes):
    """A temporary registry with ``classes`` added (for experiments and tests); the old one returns after."""
    saved = dict(METHODS)
    try:
        for cls in classes:
            register(cls)
        yield METHODS
    finally:
        METHODS.clear()
        METHODS.update(saved)


def method_names():
    return sorted(METHODS)


def hyper_parameters():
    """Every registered method's hyper-parameters, each once (by ``dest``), in registry order."""
    seen = {}
    for cls in METHODS.values():
        for hp in cls.hyper_parameters:
            seen.setdefault(hp.dest, hp)
    return list(seen.values())


def get(name):
    """The class of ``name``; ``KeyError`` names the registered ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f'unknown method {name!r}; registered: {", ".join(method_names())}') from None


def build_method(opt, device):
    resolve_precision(opt, device)
    return get(opt.method)(opt, device)


@register
class Baseline(Method):
    name, display, plot_color = 'baseline', 'Baseline', 'tab:blue'
    probed = True

    def update(self, images, colors, labels):
        with self.autocast():
            logits = self.predict(images)
            loss = cross_entropy(logits.float(), labels)
        self.zero_grad()
        loss.backward()
        self.optimizers['net'].step()
        return {'loss_cls': loss.detach(), 'acc': self._acc(logits.detach(), labels)}


@register
class Gray(Baseline):
    name, display, plot_color = 'gray', 'Gray', 'tab:green'
    gray = True
    probed = False


@register
class LNL(Method):
    name, display, plot_color = 'lnl', 'LNL', 'tab:red'
    uses_h = True
    start_from, lr = 'baseline', 0.001
    probed = True
    hyper_parameters = (
        HyperParameter('--lambda', 'lambda_', 0.01, 'LNL: weight of the negative-entropy (mutual-information) term'),
        HyperParameter('--mu', 'mu', 0.1, 'LNL: gradient-reversal scale'),
        HyperParameter('--optim_semantics', 'optim_semantics', 'current',
                       'LNL: optimiser semantics of step 2: current (today\'s PyTorch: g does not step) or '
                       'pytorch0.4 (the authors\' 2018 PyTorch: zero_grad zeroed in place, so g also steps on a '
                       'zero gradient, i.e. momentum and weight decay); see methods.py', type=str,
                       choices=('current', 'pytorch0.4')),
    )

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
            loss_cls = cross_entropy(logits.float(), labels)
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
        if self.opt.optim_semantics == 'pytorch0.4':
            self.optimizers['net'].zero_grad(set_to_none=False)  # g keeps a zero gradient and steps on it
            self.optimizers['h'].zero_grad()
        else:
            self.zero_grad()
        loss_color.backward()
        self.optimizers['net'].step()
        self.optimizers['h'].step()
        correct, counted = color_accuracy([lg.detach() for lg in color_logits], colors)
        return {'loss_color': loss_color.detach(), 'color_acc': correct / counted.clamp_min(1)}


@register
class BlindEye(Method):
    name, display, plot_color = 'blindeye', 'BlindEye', 'tab:orange'
    uses_h = True
    start_from, lr = 'baseline', 0.001
    hyper_parameters = (
        HyperParameter('--alpha', 'alpha', 1.0, 'BlindEye: weight of the confusion loss'),
    )

    def update(self, images, colors, labels):
        opt = self.opt
        with self.autocast():
            feat = self._f(images)
            logits = self._g(feat)
            loss_cls = cross_entropy(logits.float(), labels)
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


# CSAD (Zhu et al., ICCV 2021), LNL's successor on the same data, lives in a file of its own; importing it
# registers its two methods (csad_base and csad).
import methods_csad  # noqa: E402,F401
