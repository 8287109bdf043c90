"""Evaluate a checkpoint on the unbiased test set of one colour variance.

    python test.py -e NAME --color_var 0.020 [--checkpoint PATH]

The networks are rebuilt from the checkpoint alone (ours, or the authors' ``net_state_dict`` files).
Prints overall, colour-aligned, colour-conflicting and per-class accuracy (and h's colour-bin accuracy
when the checkpoint has a trained h), saves a confusion matrix PNG with the ten mean colours along its
axes, and appends one JSON object (``test_acc`` = overall accuracy) to the run's ``results.jsonl``.
"""
import json
import os

import numpy as np
import torch

from dataset import colored_mnist
from dataset.tensors import load_splits, to_gray
from models import ColorPredictor, ConvNet
from dataset.colored_mnist import color_variance
from utils import DATA_DIR, RUNS_DIR, Parser, UserError, append_line, atomic_path, run_main
import trainer as T


def build_parser():
    p = Parser(description='Evaluate a checkpoint on the unbiased Colored-MNIST test set.')
    p.add_argument('-e', '--exp_name', default=None,
                   help='run folder under --save_dir; its newest checkpoint is used when --checkpoint is not given')
    p.add_argument('--checkpoint', default=None, help='checkpoint file to evaluate (ours or the authors\')')
    p.add_argument('--trust_checkpoint', action='store_true',
                   help='load a --checkpoint that holds more than tensors and plain values with full unpickling '
                        '(runs any code in the file: only for files you trust)')
    p.add_argument('--color_var', type=color_variance, default=None,
                   help='colour variance of the test set (default: the one the checkpoint was trained on)')
    p.add_argument('--data_dir', default=DATA_DIR,
                   help='folder of the data files (default: data/ in this repository, whatever the working folder)')
    p.add_argument('--save_dir', default=RUNS_DIR,
                   help='parent folder of run folders (default: runs/ in this repository, whatever the working '
                        'folder)')
    p.add_argument('--no_generate', action='store_true', help='fail instead of generating a missing data file')
    p.add_argument('--method', default=None, choices=sorted(T.METHODS),
                   help='method of an authors\' checkpoint (ours record it); gray evaluates the grey view')
    p.add_argument('--device', default='auto', help='auto, cpu or cuda')
    p.add_argument('--batch_size', type=int, default=1000, help='evaluation batch size')
    p.add_argument('--tag', default='test', help='name of this evaluation in results.jsonl and the PNG')
    p.add_argument('--probe', action='store_true',
                   help='also run the bias-leakage probe (a fresh colour predictor on frozen f)')
    p.add_argument('--probe_epochs', type=int, default=1, help='training epochs of the probe')
    return p


def rebuild(ckpt, path, device):
    """f∘g (and h when the checkpoint has a trained one) from the checkpoint's own configuration."""
    cfg = ckpt.get('config', {})
    net_sd = ckpt['net_state_dict']
    n_class = cfg.get('n_class') or (net_sd['fc.weight'].shape[0] if 'fc.weight' in net_sd else 10)
    feat_ch = cfg.get('feat_ch') or (net_sd['conv1.weight'].shape[0] if 'conv1.weight' in net_sd else 32)
    net = ConvNet(num_classes=n_class, feat_ch=feat_ch)
    T.load_net_weights(net, net_sd, path)
    h = None
    if ckpt.get('h_state_dict') is not None and cfg.get('method') in ('lnl', 'blindeye'):
        h = ColorPredictor(in_ch=feat_ch, num_bins=cfg.get('num_bins', 8))
        h.load_state_dict(ckpt['h_state_dict'])
        h.to(device).eval()
    return net.to(device).eval(), h, n_class


def confusion_png(confusion, path, title, mean_colors=colored_mnist.MEAN_COLORS):
    """Row-normalised confusion matrix, each digit's mean colour drawn along both axes."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from plots import draw_confusion
    fig, ax = plt.subplots(figsize=(5.2, 5))
    draw_confusion(ax, confusion, title, np.asarray(mean_colors) / 255.0)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=120)
    plt.close(fig)
    return path


def format_table(metrics):
    lines = [f'{"metric":<22}{"value":>8}', '-' * 30]
    for key in ('test_acc', 'aligned_acc', 'conflicting_acc', 'color_acc', 'probe_color_acc'):
        if key in metrics:
            lines.append(f'{key:<22}{metrics[key]:>8.4f}')
    lines.append('per-class: ' + ' '.join(f'{k}:{a:.3f}' for k, a in enumerate(metrics['per_class_acc'])))
    return '\n'.join(lines)


def run(args):
    device = T.resolve_device(args.device)
    run_dir = os.path.join(args.save_dir, args.exp_name) if args.exp_name else None
    path = args.checkpoint
    if path is None:
        if run_dir is None:
            raise UserError('give --checkpoint PATH or -e EXP_NAME (a run folder under --save_dir)')
        found = T.newest_checkpoint(run_dir)
        if found is None:
            raise UserError(f'no checkpoint in {run_dir}; train first (bash train.sh) or give --checkpoint')
        path, ckpt = found
    else:
        ckpt = T.read_checkpoint(path, trust=args.trust_checkpoint)
    if run_dir is None:
        run_dir = os.path.dirname(os.path.abspath(path))
    opts = ckpt.get('options', {})
    recorded = ckpt.get('config', {}).get('method') or opts.get('method')
    if args.method and recorded and args.method != recorded:
        raise UserError(f'{path} is a {recorded} checkpoint; --method {args.method} would evaluate it on the wrong '
                        'view of the data (drop --method: the checkpoint records its own)')
    method = args.method or recorded or 'baseline'
    color_var = args.color_var or opts.get('color_var')
    if color_var is None:
        raise UserError(f'{path} does not record its colour variance: give --color_var')
    palette = opts.get('palette', colored_mnist.DEFAULT_PALETTE)
    data_path = colored_mnist.ensure(args.data_dir, color_var, generate_missing=not args.no_generate,
                                     palette=palette)

    dry_run = bool(opts.get('dry_run'))  # a smoke run's checkpoint: evaluated on the first images only
    print(f'checkpoint {path}; data {data_path}; records to {os.path.join(run_dir, "results.jsonl")}')
    net, h, n_class = rebuild(ckpt, path, device)
    num_bins = ckpt.get('config', {}).get('num_bins') or 8  # h's bins, and the probe's
    splits = load_splits(data_path, gray=T.METHODS[method].gray, color_var=color_var,
                         num_bins=num_bins,
                         which=('train', 'test') if args.probe else ('test',), palette=palette, log=print,
                         first=T.DRY_RUN_DATA if dry_run else None)
    test = splits['test'].to(device)
    res = T.evaluate(net, test, h, batch_size=args.batch_size, num_classes=n_class,
                     mean_index=splits['test'].mean_index)
    metrics = {'tag': args.tag, 'test_acc': res['acc'], 'aligned_acc': res['aligned_acc'],
               'conflicting_acc': res['conflicting_acc'], 'aligned_fraction': res['aligned_fraction'],
               'per_class_acc': res['per_class_acc'], 'confusion': res['confusion'],
               'method': method, 'color_var': color_var, 'checkpoint': os.path.abspath(path),
               'epoch': ckpt.get('epoch', ckpt.get('step')), 'gray_input': T.METHODS[method].gray,
               'mean_colors': splits['test'].mean_colors.tolist(), 'data_file': os.path.abspath(data_path)}
    if dry_run:
        metrics['dry_run'] = True
    if 'color_acc' in res:
        metrics['color_acc'] = res['color_acc']
    if args.probe:
        from probe import probe_color_leakage
        train = splits['train'].to(device)
        metrics['probe_color_acc'] = probe_color_leakage(net, train, test, epochs=args.probe_epochs,
                                                         feat_ch=net.conv2.out_channels, num_bins=num_bins)
    os.makedirs(run_dir, exist_ok=True)
    png = confusion_png(res['confusion'], os.path.join(run_dir, f'confusion_{args.tag}.png'),
                        f'{method}, sigma^2={color_var:.3f}: test acc {res["acc"]:.4f}',
                        splits['test'].mean_colors)
    metrics['confusion_png'] = png
    append_line(os.path.join(run_dir, 'results.jsonl'), json.dumps(metrics))
    try:
        from tensorboardX import SummaryWriter
        import matplotlib.image as mpimg
        with SummaryWriter(logdir=run_dir) as w:
            step = int(metrics['epoch'] or 0)
            for key, name in (('test_acc', 'acc'), ('aligned_acc', 'aligned_acc'),
                              ('conflicting_acc', 'conflicting_acc'), ('color_acc', 'color_acc'),
                              ('probe_color_acc', 'probe_color_acc')):
                if metrics.get(key) is not None:
                    w.add_scalar(f'{args.tag}/{name}', metrics[key], step)
            w.add_image(f'{args.tag}/confusion', mpimg.imread(png)[..., :3], step, dataformats='HWC')
            shown = to_gray(test.raw[:64]) if T.METHODS[method].gray else test.raw[:64]
            grid = torch.as_tensor(shown).permute(0, 3, 1, 2)
            import torchvision
            w.add_image(f'{args.tag}/inputs', torchvision.utils.make_grid(grid, nrow=8), step)
    except OSError:
        pass  # TensorBoard events are a convenience; the JSON record and PNG are written
    print(f'{path} ({method}, sigma^2={color_var:.3f})')
    print(format_table(metrics))
    print(f'confusion matrix: {png}')
    return metrics


def main(argv=None):
    return run(build_parser().parse_args(argv))


if __name__ == '__main__':
    run_main(main)
