"""Check the CSAD port against its authors' code: the same weights, the same batches, their training step and
ours, then every weight compared.

    python -m experiments.csad_parity --their_code PATH [--data_dir data] [--batches 4] [--json FILE]

``PATH`` is a checkout of the public CSAD code (zwvews/csad: ``models.py``, ``trainer.py``, ``utils.py``); it is
imported, so give only code you trust. Their modules are built on the CPU (their ``.cuda()`` calls become
no-ops for the length of the check), our CSAD weights are copied into them, and both run CSAD's first epoch on
the same first ``--batches`` mini-batches of the sigma^2 = 0.020 training set: the MI estimator's warm-up passes,
then for each batch the four steps. Their inputs and bias labels are made as their loader makes them (PIL
nearest-neighbour 14x14, ``value // 32``, mean over stroke pixels, normalisation 0.5 / 0.5) from the raw
images (their data file reader is not used: it unpickles the file); the labels must be equal, the inputs
equal up to float rounding, and the steps then run on the same input values. Printed: whether the bias labels agree
image for image, and per network the largest difference of a weight after the steps, against the largest
change of a weight in those steps (float32 throughout, one thread). Exit 1 when a difference is more than 1 %
of the change or a label differs.
"""
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import types

import numpy as np
import torch

from utils import Parser, add_data_dir, UserError, atomic_write_text, positive_int, run_main

# their parameter names -> ours (module attribute on their Trainer, their name, our module, our name)
NAME_MAP = [
    ('feaExtractor', 'conv1', 'net', 'conv1'), ('feaExtractor', 'conv2', 'net', 'conv2'),
    ('classDisentangle', 'fc1', 'net', 'content'),
    ('classPredictor', 'fc1', 'net', 'classifier.0'), ('classPredictor', 'fc2', 'net', 'classifier.2'),
    ('biasDisentangle', 'fc1', 'h', 'disentangle'),
] + [('biasPredictor', f'fc{k}{c}', 'h', f'heads.{i}.{0 if k == 1 else 2}') for i, c in enumerate('rgb') for k in (1, 2)] \
  + [('MI', f'fc{k}_{side}', 'h', f'mi.{side_ours}_mlp.{2 * (k - 1)}')
     for side, side_ours in (('cls', 'content'), ('bias', 'bias')) for k in (1, 2, 3)]
SCALAR_MAP = [('knnt1', 'tau_content'), ('knnt2', 'tau_bias'), ('post', 'alpha_pos'), ('negt', 'alpha_neg')]


@contextlib.contextmanager
def cpu_only_cuda_calls():
    """Their code calls ``.cuda()`` on modules and tensors; on a machine without a GPU those become no-ops."""
    saved = torch.nn.Module.cuda, torch.Tensor.cuda
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.nn.Module.cuda, torch.Tensor.cuda = saved


def import_theirs(path):
    """Their ``models``, ``utils`` and ``trainer`` as private modules (our ``models`` and ``utils`` packages
    keep their names)."""
    for name in ('models.py', 'trainer.py', 'utils.py'):
        if not os.path.isfile(os.path.join(path, name)):
            raise UserError(f'--their_code {path}: no {name}; give a checkout of the CSAD code (zwvews/csad)')
    saved = {k: sys.modules.get(k) for k in ('models', 'utils')}
    loaded = {}
    try:
        for name in ('utils', 'models', 'trainer'):
            spec = importlib.util.spec_from_file_location(f'csad_theirs_{name}', os.path.join(path, f'{name}.py'))
            module = importlib.util.module_from_spec(spec)
            if name != 'trainer':
                sys.modules[name] = module  # what their trainer imports under these names
            spec.loader.exec_module(module)
            loaded[name] = module
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return loaded


def their_batch(raw, labels):
    """Their loader's (images, label maps, labels, colour labels) for uint8 NHWC images, via PIL as they do."""
    from PIL import Image
    images, color_labels = [], []
    for img in raw:
        pil = Image.fromarray(img)
        small = torch.from_numpy(np.transpose(np.asarray(pil.resize((14, 14), Image.NEAREST)), (2, 0, 1)).copy())
        mask = torch.lt(small.float() - 0.00001, 0.) * 255
        label_image = (torch.div(small, 32, rounding_mode='floor').int() + mask).long()
        color_labels.append(torch.mean(label_image[label_image != 255].view(3, -1).float(), 1).long())
        x = torch.from_numpy(img).permute(2, 0, 1).float().div(255)
        images.append((x - 0.5) / 0.5)
    return torch.stack(images), None, torch.as_tensor(labels, dtype=torch.int64), torch.stack(color_labels)


def copy_weights(ours, theirs):
    with torch.no_grad():
        for t_mod, t_name, o_mod, o_name in NAME_MAP:
            src = ours[o_mod].get_submodule(o_name)
            dst = getattr(getattr(theirs, t_mod), t_name)
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        for t_name, o_name in SCALAR_MAP:
            getattr(theirs.MI, t_name).copy_(getattr(ours['h'].mi, o_name))


def differences(ours, theirs, before):
    """Per network: (largest |ours - theirs| of a weight, largest change of a weight from ``before``)."""
    out = {}
    for t_mod, t_name, o_mod, o_name in NAME_MAP:
        src = ours[o_mod].get_submodule(o_name)
        dst = getattr(getattr(theirs, t_mod), t_name)
        for kind in ('weight', 'bias'):
            a, b = getattr(src, kind).detach(), getattr(dst, kind).detach()
            key = f'{o_mod}.{o_name}.{kind}'
            out[key] = (float((a - b).abs().max()), float((a - before[key]).abs().max()))
    for t_name, o_name in SCALAR_MAP:
        a, b = getattr(ours['h'].mi, o_name).detach(), getattr(theirs.MI, t_name).detach()
        key = f'h.mi.{o_name}'
        out[key] = (float((a - b).abs().max()), float((a - before[key]).abs().max()))
    return out


class FixedBatches:
    """Stands in for the trainer's epoch data in ``begin_epoch``: every pass yields the same batches."""

    def __init__(self, batches):
        self._batches = batches

    def batches(self, desc):
        return iter(self._batches)


def check(their_code, data_dir, n_batches, batch_size=128, seed=1):
    import methods
    from dataset import colored_mnist
    from dataset.tensors import load_splits
    from option import get_option
    torch.set_num_threads(1)
    theirs_mod = import_theirs(their_code)
    path = colored_mnist.ensure(data_dir, 0.020)
    split = load_splits(path, which=('train',), first=(n_batches * batch_size, 0), color_var=0.020)['train']
    opt = get_option(['-e', 'csad_parity', '--method', 'csad', '--precision', 'fp32', '--no_channels_last',
                      '--random_seed', str(seed)])
    torch.manual_seed(seed)
    method = methods.build_method(opt, torch.device('cpu'))
    ours = {'net': method.net, 'h': method.h}
    ours_batches, their_batches = [], []
    for i in range(n_batches):
        sl = slice(i * batch_size, (i + 1) * batch_size)
        # one memory layout on both sides (a convolution's rounding depends on it)
        ours_batches.append((split.images[sl].contiguous(), split.colors[sl], split.labels[sl]))
        their_batches.append(their_batch(split.raw[sl], split.labels[sl].numpy()))
    labels_equal = all(torch.equal(method.bias_label(o[1]), t[3]) for o, t in zip(ours_batches, their_batches))
    with torch.no_grad():
        renormalised = [(method.net.in_scale * o[0] + method.net.in_shift).contiguous() for o in ours_batches]
    input_diff = max(float((r - t[0]).abs().max()) for r, t in zip(renormalised, their_batches))
    # the steps are compared on the same input values (the normalisations agree to float rounding, printed)
    their_batches = [(r,) + t[1:] for r, t in zip(renormalised, their_batches)]
    with tempfile.TemporaryDirectory() as tmp, cpu_only_cuda_calls(), contextlib.redirect_stdout(sys.stderr):
        os.makedirs(os.path.join(tmp, 'csad_parity'))
        option = types.SimpleNamespace(
            exp_name='csad_parity', save_dir=tmp, debug=False, lr=opt.lr, weight_decay=opt.weight_decay,
            n_class=10, n_class_bias=8, tau=opt.csad_tau, alpha=opt.csad_alpha, lambda_=opt.csad_lambda,
            lr_decay_rate=opt.lr_decay_rate, lr_decay_period=opt.lr_decay_period, cuda=False, log_step=10 ** 9)
        theirs = theirs_mod['trainer'].Trainer(option)
        copy_weights(ours, theirs)
        before = {k: v.detach().clone() for k, v in
                  [(f'net.{n}', p) for n, p in method.net.named_parameters()] +
                  [(f'h.{n}', p) for n, p in method.h.named_parameters()]}
        theirs._mode_setting(is_train=True)
        theirs._train_step(their_batches, 0)
        method.train(True)
        method.begin_epoch(0, FixedBatches(ours_batches), resumed=False)
        for images, colors, labels in ours_batches:
            method.update(images, colors, labels)
    diffs = differences(ours, theirs, before)
    worst = max(d / max(c, 1e-12) for d, c in diffs.values())
    return {'batches': n_batches, 'bias_labels_equal': labels_equal, 'input_max_diff': input_diff,
            'weights': {k: {'max_diff': d, 'max_change': c} for k, (d, c) in diffs.items()},
            'worst_diff_over_change': worst, 'agree': bool(labels_equal and worst <= 0.01)}


def build_parser():
    p = Parser(description='The CSAD port against its authors\' code: same weights and batches, weights compared.')
    p.add_argument('--their_code', default=None, metavar='PATH',
                   help='a checkout of the CSAD code (zwvews/csad); it is imported (required)')
    add_data_dir(p, help='folder of the data files (the sigma^2 = 0.020 file is made from raw MNIST when missing)')
    p.add_argument('--batches', type=positive_int, default=4, help='mini-batches of 128 images')
    p.add_argument('--json', default=None, help='also write the result to this JSON file')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.their_code is None:
        raise UserError('--their_code PATH is required: a checkout of the CSAD authors\' code (git clone '
                        'https://github.com/zwvews/csad), imported to compare its training step with this port\'s; '
                        'docs/csad.md ("Checked against their code") explains the check')
    res = check(args.their_code, args.data_dir, args.batches)
    for key, d in res['weights'].items():
        print(f'{key:40s} max |ours - theirs| {d["max_diff"]:.3e}   max change in the steps {d["max_change"]:.3e}')
    print(f'bias labels equal image for image: {res["bias_labels_equal"]}; inputs differ by at most '
          f'{res["input_max_diff"]:.2e}; worst weight difference / change: {res["worst_diff_over_change"]:.2e}')
    print('the port agrees with their code' if res['agree'] else 'the port DIFFERS from their code')
    if args.json:
        atomic_write_text(args.json, json.dumps(res, indent=2, sort_keys=True) + '\n')
    return 0 if res['agree'] else 1


if __name__ == '__main__':
    run_main(main)
