"""CSAD (methods/csad.py, models/csad.py): its bias label, its MI estimator and one training update against a
literal step-by-step reference with one Adam per network as its authors' code has, the baseline's two phases,
and the whole path (sweep -> train.py -> test.py -> collect_results) on small data."""
import copy
import json

import numpy as np
import torch
import torch.nn.functional as F

import methods
from methods import csad as methods_csad
from conftest import SMALL_VAR, assert_user_error, run_py, train_args
from dataset.tensors import color_target
from experiments import collect_results, sweep
from models.csad import CrossSampleMI
from option import get_option


def _opt(method, *extra):
    return get_option(['-e', 'unit', '--method', method, '--precision', 'fp32', '--no_channels_last'] + list(extra))


def _batch(n=24, seed=0):
    """Images and colour-bin maps of digit-like strokes: one colour per image, varied per pixel (so that the
    mean bin of an image is not a whole number), some pixels background."""
    g = torch.Generator().manual_seed(seed)
    raw = np.zeros((n, 28, 28, 3), dtype=np.uint8)
    colours = torch.randint(40, 216, (n, 1, 1, 3), generator=g)
    pixels = (colours + torch.randint(-40, 41, (n, 28, 28, 3), generator=g)).clamp(1, 255).numpy().astype(np.uint8)
    for i in range(n):
        mask = torch.rand(28, 28, generator=g).numpy() < 0.3
        raw[i][mask] = pixels[i][mask]
    x = torch.randn(n, 3, 28, 28, generator=g)
    return x, color_target(raw), torch.randint(0, 10, (n,), generator=g), raw


def their_color_label(raw):
    """The bias label as the CSAD authors' loader computes it (PIL nearest 14x14, //32, zeros masked, then
    the mean of the kept values viewed as 3 rows, truncated)."""
    from PIL import Image
    out = []
    for img in raw:
        small = torch.from_numpy(np.transpose(np.asarray(Image.fromarray(img).resize((14, 14), Image.NEAREST)),
                                              (2, 0, 1)).copy())
        mask = torch.lt(small.float() - 0.00001, 0.) * 255
        label = (torch.div(small, 32, rounding_mode='floor').int() + mask).long()
        out.append(torch.mean(label[label != 255].view(3, -1).float(), 1).long())
    return torch.stack(out)


def test_bias_label_is_their_mean_stroke_bin():
    _, colors, _, raw = _batch()
    ours = methods_csad.image_color_label(colors)
    assert ours.shape == (24, 3) and ours.dtype == torch.int64
    assert torch.equal(ours, their_color_label(raw))
    # per channel: a channel that is 0 on some stroke pixels averages over its own stroke positions
    colors = torch.full((1, 3, 14, 14), 255)
    colors[0, 0, 0, :3] = torch.tensor([1, 2, 5])  # mean 8/3 -> 2 (the floor, as their .long())
    colors[0, 1, 0, :2] = torch.tensor([7, 6])     # mean 6.5 -> 6
    assert methods_csad.image_color_label(colors).tolist() == [[2, 6, 255]]


def literal_mi_loss(mi, content, bias, color_label):
    """The MI loss written out as their MI.forward, with their per-row loop for the mask."""
    def embed(layers, v):
        v = layers[4](F.leaky_relu(layers[2](F.leaky_relu(layers[0](v)))))
        return F.normalize(v)
    a, b = embed(mi.content_mlp, content), embed(mi.bias_mlp, bias)
    A = a.matmul(b.t())

    def graph(e, t):
        s = F.softmax(t * e.matmul(e.t()), dim=1)
        return (s + s.t()) / 2

    def prop(s):
        p = 0.5 * torch.inverse(torch.eye(len(s)) - 0.5 * s)
        p = (p + p.t()) / 2
        return p / torch.sum(p, dim=1, keepdim=True)
    pa, pb = prop(graph(a, mi.tau_content)), prop(graph(b, mi.tau_bias))
    acb = (pa.matmul(torch.log(pb.t() + 1e-7)) + pb.matmul(torch.log(pa.t() + 1e-7))) / 2
    mask = torch.stack([color_label - color_label[i] for i in range(len(a))])
    mask = torch.sum(torch.abs(mask) ** 2, dim=2) < 4
    wp, wn = mi.alpha_pos, mi.alpha_neg
    return (torch.log(1 + torch.sum(torch.exp(-wp * (acb[mask] + A[mask])))) / wp
            + torch.log(1 + torch.sum(torch.exp(wn * (acb[~mask] + A[~mask])))) / wn)


def test_mi_loss_is_their_formula_and_trains_its_scalars():
    torch.manual_seed(0)
    mi = CrossSampleMI(tau=10, alpha=1)
    content, bias = torch.randn(20, 128), torch.randn(20, 128)
    label = torch.randint(0, 8, (20, 3))
    label[:5] = label[0]  # some positive pairs beyond the diagonal
    loss = mi(content, bias, label)
    assert loss.dim() == 0
    assert torch.allclose(loss, literal_mi_loss(mi, content, bias, label).squeeze(), rtol=1e-6)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (mi.tau_content, mi.tau_bias, mi.alpha_pos,
                                                                       mi.alpha_neg))


def reference_csad_update(m, images, colors, labels):
    """One CSAD mini-batch as their trainer writes it: six Adam optimisers (f, D_c, classifier, D_b, bias heads,
    MI), each zeroed and stepped where theirs is; step 4's backward leaves gradients on D_c, D_b and MI, which
    are zeroed before their next use."""
    net, h, opt = m.net, m.h, m.opt

    def adam(params):
        return torch.optim.Adam(params, lr=opt.lr, betas=(0.9, 0.999), weight_decay=opt.weight_decay)
    f_opt = adam(list(net.conv1.parameters()) + list(net.conv2.parameters()))
    cd_opt, cp_opt = adam(net.content.parameters()), adam(net.classifier.parameters())
    bd_opt, bp_opt = adam(h.disentangle.parameters()), adam(h.heads.parameters())
    mi_opt = adam(h.mi.parameters())
    target = methods_csad.image_color_label(colors)
    for o in (f_opt, cd_opt, cp_opt):
        o.zero_grad()
    fea = net.f(images)
    F.cross_entropy(net.classifier(net.content(fea)), labels).backward()
    for o in (f_opt, cd_opt, cp_opt):
        o.step()
    for _ in range(opt.csad_bias_steps):
        bp_opt.zero_grad()
        bd_opt.zero_grad()
        preds = h.predict(h.disentangle(fea.detach()))
        (sum(F.cross_entropy(p, target[:, c], ignore_index=255) for c, p in enumerate(preds)) / 3).backward()
        bp_opt.step()
        bd_opt.step()
    fea = net.f(images)
    c, b = net.content(fea), h.disentangle(fea)
    for _ in range(opt.csad_mi_steps):
        mi_opt.zero_grad()
        h.mi(c.detach(), b.detach(), target).backward()
        mi_opt.step()
    f_opt.zero_grad()
    fea = net.f(images)
    (opt.csad_lambda * -h.mi(net.content(fea), h.disentangle(fea), target)).backward()
    f_opt.step()


def test_one_csad_update_equals_their_step_by_step_update():
    """Fails when step 2 reads the features of the updated f, when step 4 steps more than f, when the bias
    loss is the sum instead of the mean, or when the MI estimator sees features before f's update."""
    torch.manual_seed(0)
    m = methods.build_method(_opt('csad', '--lr', '0.001', '--csad_bias_steps', '3', '--csad_mi_steps', '3'),
                             torch.device('cpu'))
    ref = copy.deepcopy(m)
    x, colors, labels, _ = _batch()
    before = {n: p.detach().clone() for n, p in m.net.named_parameters()}
    m.update(x, colors, labels)
    reference_csad_update(ref, x, colors, labels)
    for mod, ref_mod in ((m.net, ref.net), (m.h, ref.h)):
        for (name, p), q in zip(mod.named_parameters(), ref_mod.parameters()):
            assert torch.allclose(p, q, rtol=1e-5, atol=1e-7), name
    assert all(not torch.equal(before[n], p) for n, p in m.net.named_parameters())


def test_csad_base_classifies_first_then_trains_only_the_bias_branch():
    torch.manual_seed(0)
    m = methods.build_method(_opt('csad_base', '--csad_class_epochs', '1'), torch.device('cpu'))
    x, colors, labels, _ = _batch()
    h0 = {n: p.detach().clone() for n, p in m.h.named_parameters()}
    m.begin_epoch(0, None, resumed=False)
    assert set(m.update(x, colors, labels)) == {'loss_cls', 'acc'}
    assert all(torch.equal(h0[n], p) for n, p in m.h.named_parameters())
    net1 = {n: p.detach().clone() for n, p in m.net.named_parameters()}
    m.begin_epoch(1, None, resumed=False)
    feat = m.net.f(x).detach()
    target = methods_csad.image_color_label(colors)
    expected = sum(F.cross_entropy(p, target[:, c]) for c, p in enumerate(m.h(feat)))  # the SUM, as their pretrain
    out = m.update(x, colors, labels)
    assert torch.allclose(out['loss_color'], expected)
    assert all(torch.equal(net1[n], p) for n, p in m.net.named_parameters())
    moved = {n for n, p in m.h.named_parameters() if not torch.equal(h0[n], p)}
    assert moved and all(not n.startswith('mi.') for n in moved)


def test_csad_through_the_sweep_test_py_and_the_table(small_data_dir, tmp_path):
    out = tmp_path / 'sweep'
    argv = ['--color_vars', f'{SMALL_VAR:.3f}', '--methods', 'csad', 'csad_base', '--seeds', '1', '--out', str(out),
            '--data_dir', str(small_data_dir), '--launcher', 'inprocess', '--', '--dry_run', '--max_step', '2',
            '--no_generate', '--precision', 'fp32', '--csad_class_epochs', '1']
    assert sweep.main(argv) == {'csad_base_var0.020_seed1': 'finished', 'csad_var0.020_seed1': 'finished'}
    run = out / 'csad_var0.020_seed1'
    opts = json.loads((run / 'options.json').read_text())
    assert opts['lr'] == 5e-5 and opts['lr_decay_period'] == 3 and opts['csad_lambda'] == 1.0
    assert opts['use_pretrain'] and 'csad_base_var0.020_seed1' in opts['checkpoint']
    log = (run / 'train.log').read_text()
    assert 'the MI estimator starts fresh' in log
    recs = [json.loads(line) for line in (run / 'results.jsonl').read_text().splitlines()]
    test = [r for r in recs if r.get('tag') == 'test'][-1]
    # test.py rebuilt CSAD's networks from the checkpoint: the same accuracy as the last epoch's monitor
    assert test['test_acc'] == [r for r in recs if r.get('epoch') == 2 and 'monitor_test_acc' in r][0]['monitor_test_acc']
    assert {'aligned_acc', 'conflicting_acc', 'per_class_acc', 'color_acc', 'probe_color_acc'} <= set(test)
    agg = collect_results.main([str(out), '--out_prefix', str(tmp_path / 'report' / 'fig4')])
    assert ('csad', '0.020') in agg['cells'] and ('csad_base', '0.020') in agg['cells']
    table = (tmp_path / 'report' / 'fig4.md').read_text(encoding='utf-8')
    assert '| CSAD |' in table and '[its authors: about 0.9430]' in table and '| CSAD baseline |' in table
    assert 'CSAD: probe colour acc' in table


def test_csad_refuses_to_start_from_a_paper_baseline(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'b', '--method', 'baseline', '--dry_run', '--max_step', 1,
                             '--precision', 'fp32')).returncode == 0
    proc = run_py(train_args(small_data_dir, runs, 'c', '--method', 'csad', '--dry_run', '--max_step', 1,
                             '--use_pretrain', '--checkpoint', runs / 'b' / 'checkpoint_last.pth'))
    assert_user_error(proc, 'another architecture')


def test_csad_trains_with_denormals_flushed_and_leaves_the_process_as_it_was(small_data_dir, tmp_path, monkeypatch):
    """Adam's moments decaying into the denormal range made csad_base's steps 13x slower on the CPU; its runs
    flush them to zero, and train.py turns that off again when it returns (the sweep runs in one process)."""
    seen = []
    update = methods_csad.CSADBase.update

    def recording_update(self, *a):
        seen.append(float(torch.tensor([1e-39]) * 1.0) == 0.0)  # a denormal flushed to zero?
        return update(self, *a)
    monkeypatch.setattr(methods_csad.CSADBase, 'update', recording_update)
    proc = run_py(train_args(small_data_dir, tmp_path / 'runs', 'b', '--method', 'csad_base', '--dry_run',
                             '--max_step', 1, '--precision', 'fp32'))
    assert proc.returncode == 0, proc.stderr
    assert seen == [True]
    assert float(torch.tensor([1e-39]) * 1.0) != 0.0
