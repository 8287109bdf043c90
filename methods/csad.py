"""CSAD (Zhu et al., ICCV 2021: cross-sample adversarial debiasing), LNL's successor on the same data, as two
registered methods: ``csad_base`` (its own pretrained baseline) and ``csad`` (started from it).

Ported from its public code (zwvews/csad); networks in ``models/csad.py``. Notation: f the feature extractor
(1024 features), D_c / D_b the content and bias branches (128 each), c the digit classifier on D_c, b the
three colour heads on D_b, M the MI estimator; the bias label of an image is one colour bin per channel,
the floor of the mean of the 14x14 bin map over its stroke positions (:func:`image_color_label`).

* ``csad_base``: Adam at 5e-4 for 40 epochs; the first ``--csad_class_epochs`` (20) train f, D_c, c on the
  digit cross-entropy [``loss_cls``]; the rest train D_b, b on f's detached features with the SUM of the
  three colour cross-entropies [``loss_color``] (their pretrain; the CSAD step below uses the mean).
* ``csad``: from the ``csad_base`` run (f, D_c, c, D_b, b; M starts fresh), Adam at 5e-5, x0.1 after 3
  epochs, 5 epochs. Before the first epoch, ``--csad_mi_passes`` (2) passes over the training set train M
  alone on detached features (a signal stops them after the batch in hand, and ``--resume`` continues them
  where they stopped: :class:`trainer.EpochData`). Per mini-batch:

  1. f, D_c, c step on the digit cross-entropy [``loss_cls``];
  2. ``--csad_bias_steps`` (10) steps of D_b, b on the features of step 1's forward (f before its update),
     the mean of the three colour cross-entropies [``loss_color``];
  3. ``--csad_mi_steps`` (10) steps of M on the detached D_c, D_b features of the updated f [``loss_mi``: the
     last one];
  4. f alone steps on -lambda * M's loss [``loss_adv``] (the same features as step 3: f, D_c, D_b have not
     changed since).

Every network has an Adam of its own (betas 0.9, 0.999; L2 weight decay 5e-4 inside Adam, M's learned
temperatures and scales included); here f, D_c+c, D_b+b and M have one each, which is the same update
(Adam's state is per parameter and the grouped networks always step together). Nothing here depends on
whether ``zero_grad`` zeroes or drops gradients: every optimiser steps right after its own backward.

Where this port differs from their code (see the README's CSAD section): a per-channel mean over that
channel's stroke positions (their ``view(3, -1)`` mixes channels when one channel of a stroke pixel is 0,
which the released palette never makes); the MI passes are full passes over our batch order; evaluation
uses the last epoch's weights, as for every method here (their code prints the test accuracy each epoch).
"""
import torch

from dataset.tensors import IGNORE
from methods.base import Method
from methods.registry import Card, HyperParameter, register
from models import color_loss, cross_entropy
from models.csad import ColorHeads, CSADBias, CSADNet
from models.weights import load_net_weights
from utils import UserError, nonneg_int, positive_int


def image_color_label(colors):
    """(N, 3) int64: per image and channel, the floor of the mean bin over the positions whose bin is not
    ``IGNORE`` (CSAD's bias label, from the (N, 3, 14, 14) colour-bin maps); ``IGNORE`` for a channel with
    no stroke position."""
    valid = colors != IGNORE
    counts = valid.sum(dim=(2, 3))
    sums = torch.where(valid, colors, torch.zeros_like(colors)).sum(dim=(2, 3))
    return torch.where(counts > 0, sums // counts.clamp_min(1), torch.full_like(sums, IGNORE))


class CSADFamily(Method):
    """What csad_base and csad share: the networks, Adam, the per-image bias label and the probe."""
    uses_h = True
    probed = True
    architecture = 'CSAD\'s f, D_c and classifier (conv1, conv2, content, classifier)'
    # Adam's first moments of D_b's weights decay into the denormal range (below 1.2e-38) in csad_base's second
    # phase; on the CPU every operation on them then slows down: its updates took 439 ms instead of 33 ms per
    # batch. Flushed to zero, those values change nothing visible (they are far below float32's rounding of any
    # weight) and the steps keep their speed.
    flush_denormal = True
    in_default_grid = False  # beyond the paper: the sweep runs it when --methods names it

    def __init__(self, opt, device):
        super().__init__(opt, device)
        self.epoch = 0

    @classmethod
    def networks(cls, n_class, feat_ch, num_bins):
        return CSADNet(num_classes=n_class), CSADBias(num_bins=num_bins)

    @classmethod
    def weight_sizes(cls, net_sd, h_sd):
        fc = tuple(getattr(net_sd.get('classifier.2.weight'), 'shape', ()))
        conv = tuple(getattr(net_sd.get('conv1.weight'), 'shape', ()))
        if len(fc) != 2 or conv != (64, 3, 5, 5):
            return None
        return {'n_class': fc[0], 'feat_ch': None,
                'num_bins': tuple(getattr(h_sd.get('heads.0.2.weight'), 'shape', (None,)))[0]}

    def _adam(self, params):
        return torch.optim.Adam(params, lr=self.opt.lr, betas=(0.9, 0.999), weight_decay=self.opt.weight_decay)

    def make_optimizers(self):
        net = self.net
        return {'f': self._adam(list(net.conv1.parameters()) + list(net.conv2.parameters())),
                'g': self._adam(list(net.content.parameters()) + list(net.classifier.parameters())),
                'h': self._adam(self.h.classifier_parameters()),
                'mi': self._adam(self.h.mi.parameters())}

    @staticmethod
    def bias_label(colors):
        return image_color_label(colors)

    @staticmethod
    def probe_features(net, images):
        """D_c's output: the content features CSAD makes bias-invariant."""
        return net.content(net.f(images))

    @classmethod
    def probe_head(cls, feat_ch, num_bins):
        return ColorHeads(num_bins=num_bins)

    def begin_epoch(self, epoch, data, resumed):
        self.epoch = epoch

    def features(self, images):
        """f's features, in float32 (f alone runs under bf16 autocast with ``--precision bf16``)."""
        with self.autocast():
            feat = self._f(images)  # net.f, compiled with --compile (Method.__init__)
        return feat.float()

    def step(self, loss, *names, inputs=None):
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward(inputs=inputs)
        for name in names:
            self.optimizers[name].step()

    def classification_step(self, images, labels):
        feat = self.features(images)
        logits = self.net.g(feat)
        loss_cls = cross_entropy(logits, labels)
        self.step(loss_cls, 'f', 'g')
        return feat, {'loss_cls': loss_cls.detach(), 'acc': self._acc(logits.detach(), labels)}

    def bias_step(self, feat, target, mean):
        """One step of D_b and the heads on detached features: the mean (``mean``) or the sum of the three
        colour cross-entropies."""
        logits = self.h(feat.detach())
        loss = color_loss(logits, target) / (len(logits) if mean else 1)
        self.step(loss, 'h')
        return {'loss_color': loss.detach(), 'color_acc': self._color_acc(logits, target)}


@register
class CSADBase(CSADFamily):
    """CSAD's own baseline (their ``_pretrain``): classification, then the bias branch on frozen f."""
    name, card = 'csad_base', Card('CSAD baseline', 'tab:gray')
    lr = 5e-4
    option_defaults = {'lr': 5e-4, 'max_step': 40, 'lr_decay_period': 40}
    hyper_parameters = (
        HyperParameter('--csad_class_epochs', 'csad_class_epochs', 20,
                               'csad_base: epochs of digit classification before the bias branch trains on the '
                               'frozen features for the rest', type=nonneg_int),
    )

    def update(self, images, colors, labels):
        if self.epoch < self.opt.csad_class_epochs:
            return self.classification_step(images, labels)[1]
        with torch.no_grad():
            feat = self.features(images)
        return self.bias_step(feat, self.bias_label(colors), mean=False)


@register
class CSAD(CSADFamily):
    name, card = 'csad', Card('CSAD', 'tab:purple', published={'0.020': 0.943}, published_by='its authors: about')
    start_from, lr = 'csad_base', 5e-5
    option_defaults = {'lr': 5e-5, 'max_step': 5, 'lr_decay_period': 3}
    hyper_parameters = (
        HyperParameter('--csad_lambda', 'csad_lambda', 1.0, 'CSAD: weight of the adversarial MI loss on f'),
        HyperParameter('--csad_tau', 'csad_tau', 10.0, 'CSAD: initial temperature of the similarity graphs'),
        HyperParameter('--csad_alpha', 'csad_alpha', 1.0, 'CSAD: initial scale of the MI loss\'s two terms'),
        HyperParameter('--csad_bias_steps', 'csad_bias_steps', 10,
                               'CSAD: steps of the bias branch per mini-batch', type=positive_int),
        HyperParameter('--csad_mi_steps', 'csad_mi_steps', 10,
                               'CSAD: steps of the MI estimator per mini-batch', type=positive_int),
        HyperParameter('--csad_mi_passes', 'csad_mi_passes', 2,
                               'CSAD: passes over the training set that train the MI estimator alone before '
                               'the first epoch', type=nonneg_int),
    )

    def __init__(self, opt, device):
        super().__init__(opt, device)
        self.h.mi.reset_scalars(opt.csad_tau, opt.csad_alpha)

    def load_start(self, ckpt, path):
        """Their ``_load_model``: f, D_c, the classifier, D_b and the heads; the MI estimator starts fresh."""
        load_net_weights(self.net, ckpt['net_state_dict'], path, self.architecture)
        own = {k: v for k, v in (ckpt.get('h_state_dict') or {}).items() if not k.startswith('mi.')}
        expected = [k for k in self.h.state_dict() if not k.startswith('mi.')]
        if sorted(own) != sorted(expected):
            raise UserError(f'{path} holds no trained CSAD bias branch (D_b and heads); start csad from a '
                            'csad_base run\'s checkpoint')
        try:
            self.h.load_state_dict(own, strict=False)
        except RuntimeError as exc:
            raise UserError(f'{path}: its bias branch does not fit ({str(exc).splitlines()[0][:120]})') from None
        return 'f, D_c, the classifier, D_b and the colour heads (the MI estimator starts fresh)'

    def mi_step(self, content, bias, target):
        loss = self.h.mi(content.detach(), bias.detach(), target)
        self.step(loss, 'mi')
        return loss.detach()

    def begin_epoch(self, epoch, data, resumed):
        super().begin_epoch(epoch, data, resumed)
        if epoch > 0 or resumed:
            return
        for p in range(self.opt.csad_mi_passes):  # their _train_step_MI, before the first epoch
            for images, colors, _ in data.batches(f'csad MI warm-up {p + 1}/{self.opt.csad_mi_passes}'):
                with torch.no_grad():
                    feat = self.features(images)
                    content, bias = self.net.content(feat), self.h.disentangle(feat)
                self.mi_step(content, bias, self.bias_label(colors))

    def update(self, images, colors, labels):
        opt = self.opt
        target = self.bias_label(colors)
        # 1. f, D_c and the classifier on the digits
        feat, out = self.classification_step(images, labels)
        # 2. the bias branch on the features f gave before that step
        for _ in range(opt.csad_bias_steps):
            out.update(self.bias_step(feat, target, mean=True))
        # 3. the MI estimator on the updated f's detached features
        feat = self.features(images)
        content, bias = self.net.content(feat), self.h.disentangle(feat)
        for _ in range(opt.csad_mi_steps):
            out['loss_mi'] = self.mi_step(content, bias, target)
        # 4. f alone against the estimator (gradients reach only f's weights)
        loss_adv = -opt.csad_lambda * self.h.mi(content, bias, target)
        self.step(loss_adv, 'f', inputs=list(self.net.conv1.parameters()) + list(self.net.conv2.parameters()))
        out['loss_adv'] = loss_adv.detach()
        return out
