"""Networks, methods, gradient reversal, checkpoints and options."""
import copy

import pytest
import torch

from models import ColorPredictor, ConvNet, color_loss, neg_entropy
from option import get_option
from conftest import method_options, param_values, toy_batch
import checkpoint
from models.weights import load_net_weights
import methods
import trainer


def _moved(before, module):
    return [not torch.equal(b, p) for b, p in zip(before, module.parameters())]


def test_shapes_and_authors_names():
    net = ConvNet()
    assert [n for n, _ in net.named_children()] == ['bn0', 'conv1', 'conv2', 'conv3', 'conv4', 'fc']
    feat, logits = net(torch.randn(2, 3, 28, 28))
    assert feat.shape == (2, 32, 14, 14) and logits.shape == (2, 10)
    h = ColorPredictor(num_bins=8)
    assert len(h.heads) == 3 and all(lg.shape == (2, 8, 14, 14) for lg in h(feat))
    assert ColorPredictor(num_bins=5, in_ch=16)(torch.randn(1, 16, 14, 14))[0].shape == (1, 5, 14, 14)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('training', [True, False])
def test_fast_f_matches_the_authors_f(channels_last, training):
    """The folded bn0 -> conv1 and the pool-before-ReLU order give the authors' features, gradients (from
    the classifier and from a gradient that enters f directly, as LNL's reversed colour gradient does) and
    bn0 running statistics, over several SGD steps."""
    torch.manual_seed(0)
    fast = ConvNet()
    with torch.no_grad():  # bn0 away from its identity initialisation, so that a and b matter
        fast.bn0.weight.uniform_(0.5, 1.5)
        fast.bn0.bias.uniform_(-0.5, 0.5)
    ref = copy.deepcopy(fast)
    ref.fast_f = False
    x, _, labels = toy_batch(32)
    x = x * 0.7 + 0.3  # channel means away from 0
    x_ref = x  # contiguous: on channels-last input PyTorch's CPU BatchNorm statistics are off by ~1e-4
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opts = [torch.optim.SGD(n.parameters(), lr=0.05, momentum=0.9) for n in (fast, ref)]
    fast.train(training)
    ref.train(training)
    for _ in range(3):
        outs = []
        for net, opt, inp in ((fast, opts[0], x), (ref, opts[1], x_ref)):  # ref.f: the authors' literal f
            feat = net.f(inp)
            logits = net.g(feat)
            loss = torch.nn.functional.cross_entropy(logits, labels) + (feat * feat.detach().flip(0)).mean()
            opt.zero_grad()
            loss.backward()
            outs.append((feat.detach(), [p.grad.clone() for p in net.parameters()]))
            opt.step()
        (feat_a, grads_a), (feat_b, grads_b) = outs
        assert torch.allclose(feat_a, feat_b, atol=1e-5)
        for (name, _), ga, gb in zip(fast.named_parameters(), grads_a, grads_b):
            assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4), name
    # few positions, so that an unbiased and a biased variance would differ visibly in the running estimate
    fast.f(x[:4, :, :6, :6])
    ref.f(x_ref[:4, :, :6, :6])
    for name in ('running_mean', 'running_var', 'num_batches_tracked'):
        assert torch.allclose(getattr(fast.bn0, name).float(), getattr(ref.bn0, name).float(), atol=1e-6), name
    with torch.no_grad():  # evaluation takes the unfolded path: the same features
        assert torch.allclose(fast.f(x), ref.f(x_ref), atol=1e-5)


def test_channel_moments_and_add_image():
    from models.networks import AddImage, channel_moments
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 9, 9, generator=g) * 0.01 + 1000.0  # a large offset: no cancellation
    for batch in (x, x.contiguous(memory_format=torch.channels_last)):
        mean, var = channel_moments(batch)
        ref_var, ref_mean = torch.var_mean(x.double(), dim=(0, 2, 3), correction=0)
        assert torch.allclose(mean.double(), ref_mean, rtol=1e-7) and torch.allclose(var.double(), ref_var, rtol=1e-3)
    for fmt in (torch.contiguous_format, torch.channels_last):
        batch = torch.randn(8, 4, 5, 6, generator=g).contiguous(memory_format=fmt)
        image = torch.randn(1, 4, 5, 6, generator=g, requires_grad=True)
        weight = torch.randn(8, 4, 5, 6, generator=g).contiguous(memory_format=fmt)
        a = batch.clone().requires_grad_()
        (AddImage.apply(a * 1.0, image) * weight).sum().backward()
        assert torch.allclose(image.grad, weight.sum(0, keepdim=True), atol=1e-5)
        assert torch.equal(a.grad, weight)


def test_authors_initialisation():
    """Every conv weight ~ N(0, 2 / (k*k*C_out)) (not PyTorch's uniform default), and reset_parameters puts
    BatchNorm back to weight 1, bias 0 (checked after moving them away from it, so PyTorch's own defaults at
    construction cannot pass for the init)."""
    torch.manual_seed(0)
    net = ConvNet()
    for conv in (net.conv1, net.conv2, net.conv3, net.conv4):
        k, c_out = conv.kernel_size[0], conv.out_channels
        expected = (2 / (k * k * c_out)) ** 0.5
        assert abs(conv.weight.std().item() - expected) < 0.1 * expected, conv
        assert conv.weight.abs().max() > 3 ** 0.5 * expected  # beyond a uniform's bound: a normal draw
    with torch.no_grad():
        net.bn0.weight.fill_(5.0)
        net.bn0.bias.fill_(3.0)
    net.reset_parameters()
    assert torch.equal(net.bn0.weight, torch.ones(3)) and torch.equal(net.bn0.bias, torch.zeros(3))


@pytest.mark.parametrize('method', sorted(methods.METHODS))
def test_three_updates_move_the_right_parameters(method):
    torch.manual_seed(0)
    m = methods.build_method(method_options(method), torch.device('cpu'))
    net0, h0 = param_values(m.net), param_values(m.h)
    for i in range(3):
        out = m.update(*toy_batch(seed=i))
        assert all(torch.isfinite(v) and v.dim() == 0 for v in out.values())
    assert all(_moved(net0, m.net))
    # csad_base's first epochs are classification only: its bias branch trains after --csad_class_epochs
    assert any(_moved(h0, m.h)) == (m.uses_h and method != 'csad_base')
    expected = {'baseline': {'loss_cls', 'acc'}, 'gray': {'loss_cls', 'acc'},
                'lnl': {'loss_cls', 'loss_mi', 'loss_color', 'acc', 'color_acc'},
                'blindeye': {'loss_cls', 'loss_conf', 'loss_color', 'acc', 'color_acc'},
                'csad_base': {'loss_cls', 'acc'},
                'csad': {'loss_cls', 'acc', 'loss_color', 'color_acc', 'loss_mi', 'loss_adv'}}[method]
    assert set(out) == expected
    assert m.predict(toy_batch()[0]).shape == (16, 10)


def test_lnl_step1_leaves_h_unchanged_step2_moves_h_and_f_not_g():
    torch.manual_seed(0)
    m = methods.build_method(method_options('lnl'), torch.device('cpu'))
    x, colors, labels = toy_batch()
    m.update(x, colors, labels)  # momentum buffers exist for every parameter afterwards
    h0, f0, g0 = param_values(m.h), [p.clone() for p in m.net.f_parameters()], [p.clone() for p in m.net.g_parameters()]
    m.unlearn_step(x, labels)
    assert all(torch.equal(a, b) for a, b in zip(h0, m.h.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(f0, m.net.f_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(g0, m.net.g_parameters()))  # step 1 moves g too
    f1, g1 = [p.clone() for p in m.net.f_parameters()], [p.clone() for p in m.net.g_parameters()]
    m.color_step(x, colors)
    assert all(_moved(h0, m.h))
    assert any(not torch.equal(a, b) for a, b in zip(f1, m.net.f_parameters()))
    assert all(torch.equal(a, b) for a, b in zip(g1, m.net.g_parameters()))


def test_lnl_color_step_gives_f_the_reversed_gradient():
    """Step 2 (``color_step``) moves f by +lr * mu * (the gradient of h's colour loss with respect to f), the
    reversed and scaled gradient, moves h by -lr * its own gradient, and leaves g alone (plain SGD here)."""
    torch.manual_seed(0)
    lr, mu = 0.05, 0.3
    m = methods.build_method(method_options('lnl', '--mu', str(mu), '--momentum', '0', '--weight_decay', '0'),
                             torch.device('cpu'))
    m.train(True)
    x, colors, _ = toy_batch()
    net, h = copy.deepcopy(m.net), copy.deepcopy(m.h)  # the same loss without reversal, on copies
    color_loss(h(net.f(x)), colors).backward()
    f_grad = [p.grad.clone() for p in net.f_parameters()]
    h_grad = [p.grad.clone() for p in h.parameters()]
    f0, h0 = [p.clone() for p in m.net.f_parameters()], param_values(m.h)
    g0 = [p.clone() for p in m.net.g_parameters()]
    out = m.color_step(x, colors)
    assert set(out) == {'loss_color', 'color_acc'}
    assert all(gr.abs().max() > 0 for gr in f_grad)
    for p, p0, gr in zip(m.net.f_parameters(), f0, f_grad):
        assert torch.allclose(p, p0 + lr * mu * gr, atol=1e-7)
    for p, p0, gr in zip(m.h.parameters(), h0, h_grad):
        assert torch.allclose(p, p0 - lr * gr, atol=1e-7)
    assert all(torch.equal(a, b) for a, b in zip(g0, m.net.g_parameters()))


def test_lnl_pytorch04_semantics_steps_g_on_a_zero_gradient_in_step_2():
    """--optim_semantics pytorch0.4: after a mini-batch from the same start, f and h are where the current
    semantics put them, and g has made one more SGD step on a zero gradient: buf <- momentum * buf + wd * p,
    p <- p - lr * buf (what zero_grad() that zeroed in place gave the authors' step 2). Fails when the option
    changes nothing (g not stepped), or when f or h move differently."""
    lr, momentum, wd = 0.05, 0.9, 0.0005
    torch.manual_seed(0)
    now = methods.build_method(method_options('lnl'), torch.device('cpu'))
    old = methods.build_method(method_options('lnl', '--optim_semantics', 'pytorch0.4'), torch.device('cpu'))
    old.net.load_state_dict(now.net.state_dict())
    old.h.load_state_dict(now.h.state_dict())
    x, colors, labels = toy_batch()
    now.update(x, colors, labels)
    old.update(x, colors, labels)
    for a, b in zip(list(now.net.f_parameters()) + list(now.h.parameters()),
                    list(old.net.f_parameters()) + list(old.h.parameters())):
        assert torch.equal(a, b)
    for p_now, p_old in zip(now.net.g_parameters(), old.net.g_parameters()):
        buf1, p1 = now.optimizers['net'].state[p_now]['momentum_buffer'], p_now.detach()  # after step 1
        buf2 = momentum * buf1 + wd * p1
        assert torch.allclose(old.optimizers['net'].state[p_old]['momentum_buffer'], buf2, rtol=1e-5, atol=1e-8)
        assert torch.allclose(p_old.detach(), p1 - lr * buf2, rtol=1e-5, atol=1e-8)
        assert not torch.equal(p_old.detach(), p1)


def test_old_lambda_schedule_state_resumes_as_step_lr():
    """Checkpoints of earlier versions hold a LambdaLR state; the StepLR of today reads it and continues."""
    m = methods.build_method(method_options('lnl', '--lr_decay_period', '2', '--lr_decay_rate', '0.5'), torch.device('cpu'))
    old_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    old = torch.optim.lr_scheduler.LambdaLR(old_opt, lambda epoch: 0.5 ** (epoch // 2))
    for _ in range(3):
        old_opt.step()
        old.step()
    m.optimizers['net'].param_groups[0]['lr'] = old_opt.param_groups[0]['lr']  # as the optimiser state restores it
    m.schedulers['net'].load_state_dict(old.state_dict())
    seen = []
    for _ in range(3):
        seen.append(m.lr_now())
        m.optimizers['net'].step()
        m.schedulers['net'].step()
    assert seen == pytest.approx([0.025, 0.0125, 0.0125])


def test_grad_reverse_backward():
    x = torch.randn(4, 5, requires_grad=True)
    up = torch.randn(4, 5)
    y = methods.grad_reverse(x, 0.1)
    assert torch.equal(y, x)
    y.backward(up)
    assert torch.allclose(x.grad, -0.1 * up)


def test_neg_entropy_finite_when_h_is_certain():
    logits = torch.zeros(2, 8, 14, 14)
    logits[:, 3] = 1e4
    val = neg_entropy([logits, logits, logits])
    assert torch.isfinite(val) and abs(val.item()) < 1e-6
    uniform = neg_entropy([torch.zeros(2, 8, 3, 3)])
    assert abs(uniform.item() + torch.log(torch.tensor(8.0)).item()) < 1e-6
    lg = logits.clone().requires_grad_()
    neg_entropy([lg]).backward()
    assert torch.isfinite(lg.grad).all()


def test_blindeye_confusion_loss_is_log_bins_at_uniform():
    torch.manual_seed(0)
    m = methods.build_method(method_options('blindeye'), torch.device('cpu'))
    for head in m.h.heads:
        torch.nn.init.zeros_(head.pred_conv2.weight)
        torch.nn.init.zeros_(head.pred_conv2.bias)
    out = m.update(*toy_batch())
    assert abs(out['loss_conf'].item() - torch.log(torch.tensor(8.0)).item()) < 1e-5


def test_schedule_and_sgd_settings():
    m = methods.build_method(method_options('lnl', '--lr_decay_period', '2', '--lr_decay_rate', '0.5'), torch.device('cpu'))
    seen = []
    for _ in range(5):
        seen.append(m.lr_now())
        m.update(*toy_batch())  # an epoch's optimiser steps come before the scheduler's
        m.step_schedulers()
    assert seen == pytest.approx([0.05, 0.05, 0.025, 0.025, 0.0125])
    g = m.optimizers['h'].param_groups[0]
    assert g['momentum'] == 0.9 and g['weight_decay'] == 0.0005 and set(m.optimizers) == {'net', 'h'}


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = methods.build_method(method_options('lnl'), torch.device('cpu'))
    m.update(*toy_batch())
    m.step_schedulers()
    gen = torch.Generator().manual_seed(3)
    path = checkpoint.save_checkpoint(str(tmp_path / 'c.pth'), m, 1, gen)
    ckpt = checkpoint.read_checkpoint(path)
    assert ckpt['epoch'] == 1 and ckpt['options']['method'] == 'lnl'
    assert set(ckpt) >= {'net_state_dict', 'h_state_dict', 'optimizers', 'schedulers', 'rng', 'optim_state_dict'}
    m2 = methods.build_method(method_options('lnl'), torch.device('cpu'))
    tr = trainer.Trainer(m2.opt, m2, {}, str(tmp_path), __import__('logging').getLogger('t'))
    tr.resume(path, ckpt)
    for a, b in zip(m.net.state_dict().values(), m2.net.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(m.h.state_dict().values(), m2.h.state_dict().values()):
        assert torch.equal(a, b)
    assert m2.lr_now() == m.lr_now()
    assert torch.equal(tr.batch_gen.get_state(), gen.get_state())
    x = toy_batch(seed=5)
    torch.manual_seed(1)
    o1 = m.update(*x)
    torch.manual_seed(1)
    o2 = m2.update(*x)
    assert all(torch.equal(o1[k], o2[k]) for k in o1)


def test_loads_authors_state_dict(tmp_path):
    authors = ConvNet()
    sd = {'step': 90, 'net_state_dict': authors.state_dict(),
          'optim_state_dict': torch.optim.SGD(authors.parameters(), lr=0.1).state_dict()}
    torch.save(sd, tmp_path / 'checkpoint_step_0090.pth')
    ckpt = checkpoint.read_checkpoint(str(tmp_path / 'checkpoint_step_0090.pth'))
    net = ConvNet()
    load_net_weights(net, ckpt['net_state_dict'], 'x')
    for a, b in zip(net.state_dict().values(), authors.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize('args,fragment', [
    (['--lr', '-0.1'], 'argument --lr: must be > 0.0'),
    (['--lr', '0'], 'argument --lr: must be > 0.0'),
    (['--batch_size', '0'], 'argument --batch_size: must be > 0'),
    (['--color_var', '0'], 'argument --color_var: must be a positive number'),
    (['--color_var', 'abc'], "argument --color_var: 'abc' is not a number"),
    (['--method', 'magic'], "argument --method: invalid choice: 'magic'"),
    (['--mu', '-1'], 'argument --mu: must be >= 0.0'),
    (['--train_baseline', '--method', 'lnl'], '--train_baseline trains the baseline and --method lnl asks for another'),
])
def test_option_rejection(args, fragment, capsys):
    with pytest.raises(SystemExit) as exc:
        get_option(['-e', 'x'] + args)
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err


def test_option_defaults_are_the_authors():
    assert get_option(['-e', 'x']).method == 'lnl'
    assert get_option(['-e', 'x', '--train_baseline', '--method', 'baseline']).method == 'baseline'
    o = get_option(['-e', 'x', '--train_baseline'])
    assert o.method == 'baseline'
    assert (o.lr, o.lr_decay_rate, o.lr_decay_period, o.max_step, o.batch_size, o.momentum, o.weight_decay,
            o.lambda_, o.mu, o.num_bins) == (0.01, 0.1, 40, 100, 128, 0.9, 0.0005, 0.01, 0.1, 8)


def _plain_sgd(method, *extra):
    """A method with plain SGD (no momentum, no weight decay), so that one update is -lr times a gradient."""
    torch.manual_seed(0)
    m = methods.build_method(method_options(method, '--momentum', '0', '--weight_decay', '0', *extra), torch.device('cpu'))
    m.train(True)
    return m


def _assert_moved_by(module, before, grads, lr):
    for p, p0, gr in zip(module.parameters(), before, grads):
        assert torch.allclose(p, p0 - lr * gr, atol=1e-6), (p - (p0 - lr * gr)).abs().max()


def test_blindeye_update_in_closed_form():
    """f, g move by -lr * grad(CE + alpha * CE(uniform, h(f(x)))) with h frozen in that term; h moves by
    -lr * grad of its own colour loss on features detached from f. Fails when h is not frozen in the
    confusion term, when that term sees detached features, when its sign flips, or when h's colour loss
    reaches f (each tried)."""
    lr, alpha = 0.05, 0.7
    m = _plain_sgd('blindeye', '--alpha', str(alpha))
    x, colors, labels = toy_batch()
    net, h = copy.deepcopy(m.net), copy.deepcopy(m.h)
    feat = net.f(x)
    ce = torch.nn.functional.cross_entropy(net.g(feat), labels)
    conf = sum(-torch.log_softmax(lg, 1).mean(1).mean() for lg in h(feat)) / 3
    grad_fg = torch.autograd.grad(ce + alpha * conf, list(net.parameters()))
    grad_h = torch.autograd.grad(color_loss(h(feat.detach()), colors), list(h.parameters()))
    assert all(gr.abs().max() > 0 for gr in grad_h)
    net0, h0 = param_values(m.net), param_values(m.h)
    m.update(x, colors, labels)
    _assert_moved_by(m.net, net0, grad_fg, lr)
    _assert_moved_by(m.h, h0, grad_h, lr)


def test_lnl_step1_in_closed_form_and_it_raises_hs_entropy():
    """Step 1 moves f and g by -lr * grad(CE + lambda * negative entropy of h(f(x))) and leaves h as it was;
    with a large lambda, one step lowers h's negative entropy on that batch (f makes h less certain).
    Fails on a detached entropy term, a flipped sign, or h stepping."""
    lr, lam = 0.05, 5.0
    m = _plain_sgd('lnl', '--lambda', str(lam))
    x, colors, labels = toy_batch()
    net, h = copy.deepcopy(m.net), copy.deepcopy(m.h)
    feat = net.f(x)
    ne = neg_entropy(h(feat))
    loss = torch.nn.functional.cross_entropy(net.g(feat), labels) + lam * ne
    grad_fg = torch.autograd.grad(loss, list(net.parameters()))
    net0, h0 = param_values(m.net), param_values(m.h)
    m.unlearn_step(x, labels)
    _assert_moved_by(m.net, net0, grad_fg, lr)
    assert all(torch.equal(a, b) for a, b in zip(h0, m.h.parameters()))
    with torch.no_grad():
        m.h.eval()
        h.eval()
        assert neg_entropy(m.h(m.net.f(x))) < neg_entropy(h(net.f(x)))


@pytest.mark.parametrize('shape,ignore', [((16, 10), -100), ((4, 8, 14, 14), 255)])
def test_the_deterministic_cross_entropy_equals_pytorchs(shape, ignore):
    """The one-hot cross-entropy that --deterministic uses on CUDA gives F.cross_entropy's value and
    gradient (background targets ignored)."""
    from models import one_hot_cross_entropy
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, shape[1], (shape[0],) + shape[2:], generator=g)
    if ignore == 255:
        target[:, :3] = 255
    ref = torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore)
    (gr,) = torch.autograd.grad(ref, logits)
    ours = one_hot_cross_entropy(logits, target, ignore_index=ignore)
    (go,) = torch.autograd.grad(ours, logits)
    assert torch.allclose(ours, ref, atol=1e-12) and torch.allclose(go, gr, atol=1e-12)
