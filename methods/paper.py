"""The paper's methods (Kim et al., CVPR 2019, Sec. 3 and 4.1): Baseline, Gray, LNL and BlindEye.

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

"""
from methods.autograd import frozen, grad_reverse
from methods.base import Method
from methods.registry import Card, HyperParameter, register
from models import color_loss, neg_entropy, uniform_cross_entropy


@register
class Baseline(Method):
    name, card = 'baseline', Card('Baseline', 'tab:blue')
    probed = True
    packable = True

    def update(self, images, colors, labels):
        with self.autocast():
            _, logits, loss = self.classify(images, labels)
        self.zero_grad()
        self.backward(loss)
        self.optimizers['net'].step()
        return {'loss_cls': loss.detach(), 'acc': self._acc(logits.detach(), labels)}


@register
class Gray(Baseline):
    name, card = 'gray', Card('Gray', 'tab:green')
    gray = True
    probed = False


@register
class LNL(Method):
    name, card = 'lnl', Card('LNL', 'tab:red')
    uses_h = True
    start_from, lr = 'baseline', 0.001
    probed = True
    packable = True
    hyper_parameters = (
        HyperParameter('--lambda', 'lambda_', 0.01, 'LNL: weight of the negative-entropy (mutual-information) term'),
        HyperParameter('--mu', 'mu', 0.1, 'LNL: gradient-reversal scale'),
        HyperParameter('--optim_semantics', 'optim_semantics', 'current',
                       'LNL: optimiser semantics of step 2: current (today\'s PyTorch: g does not step) or '
                       'pytorch0.4 (the authors\' 2018 PyTorch: zero_grad zeroed in place, so g also steps on a '
                       'zero gradient, i.e. momentum and weight decay); see methods/paper.py', type=str,
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
            feat, logits, loss_cls = self.classify(images, labels)
            with frozen(self.h):
                loss_mi = neg_entropy([lg.float() for lg in self.h(feat)], members=self.members)
            loss = loss_cls + self.opt.lambda_ * loss_mi
        self.zero_grad()
        self.backward(loss)
        self.optimizers['net'].step()
        return {'loss_cls': loss_cls.detach(), 'loss_mi': loss_mi.detach(),
                'acc': self._acc(logits.detach(), labels)}

    def color_step(self, images, colors):
        """Step 2: fresh features from the updated f; h learns the colour through the gradient-reversal
        layer, so f receives -mu times h's gradient. g is not run and, with no gradient, does not step."""
        with self.autocast():
            feat = grad_reverse(self._f(images), self.opt.mu)
            color_logits = [lg.float() for lg in self.h(feat)]
            loss_color = color_loss(color_logits, colors, members=self.members)
        if self.opt.optim_semantics == 'pytorch0.4':
            self.optimizers['net'].zero_grad(set_to_none=False)  # g keeps a zero gradient and steps on it
            self.optimizers['h'].zero_grad()
        else:
            self.zero_grad()
        self.backward(loss_color)
        self.optimizers['net'].step()
        self.optimizers['h'].step()
        return {'loss_color': loss_color.detach(), 'color_acc': self._color_acc(color_logits, colors)}


@register
class BlindEye(Method):
    name, card = 'blindeye', Card('BlindEye', 'tab:orange')
    uses_h = True
    start_from, lr = 'baseline', 0.001
    packable = True
    hyper_parameters = (
        HyperParameter('--alpha', 'alpha', 1.0, 'BlindEye: weight of the confusion loss'),
    )

    def update(self, images, colors, labels):
        opt = self.opt
        with self.autocast():
            feat, logits, loss_cls = self.classify(images, labels)
            with frozen(self.h):
                # CE(uniform, p) = -mean_bins log p, averaged over positions and channels
                loss_conf = uniform_cross_entropy([lg.float() for lg in self.h(feat)], members=self.members)
            color_logits = [lg.float() for lg in self.h(feat.detach())]
            loss_color = color_loss(color_logits, colors, members=self.members)
        # The two objectives touch disjoint parameters (f, g vs h), so one backward serves both.
        self.zero_grad()
        self.backward(loss_cls + opt.alpha * loss_conf + loss_color)
        self.optimizers['net'].step()
        self.optimizers['h'].step()
        return {'loss_cls': loss_cls.detach(), 'loss_conf': loss_conf.detach(),
                'loss_color': loss_color.detach(), 'acc': self._acc(logits.detach(), labels),
                'color_acc': self._color_acc(color_logits, colors)}
