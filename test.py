"""Evaluate a checkpoint on the unbiased test set of one colour variance.

    python test.py -e NAME --color_var 0.020 [--checkpoint PATH]

The networks are rebuilt from the checkpoint alone (ours, or the authors' ``net_state_dict`` files).
Prints overall, colour-aligned, colour-conflicting and per-class accuracy (and h's colour-bin accuracy
when the checkpoint has a trained h), saves a confusion matrix PNG with the ten mean colours along its
axes, and appends one JSON object (``test_acc`` = overall accuracy) to the run's ``results.jsonl``.
"""
import argparse
import json
import os
import re
import sys
import tempfile


import checkpoint as C
import methods
import run_folder
from methods.restore import rebuild, sizes
from dataset import colored_mnist
from dataset.colored_mnist import color_variance
from dataset.tensors import DEFAULT_GRAY_VIEW, DRY_RUN_DATA, GRAY_VIEWS, load_splits, to_gray, view_tag
from evaluation import evaluate, probe_color_leakage
from utils.plots import confusion_png, image_grid
from utils import (Parser, UserError, add_data_dir, add_device, add_no_generate, add_save_dir, add_trust_checkpoint,
                   append_line, atomic_write_text, format_table, positive_int, read_jsonl, refuse_links, resolve_device,
                   run_main, run_name)


def tag_name(text):
    """An argparse ``type`` for ``--tag``: it names a record and a file of the run folder (confusion_<tag>.png)."""
    if not re.fullmatch(r'[A-Za-z0-9_][A-Za-z0-9._-]{0,99}', text):
        raise argparse.ArgumentTypeError(f'{text!r}: a tag is up to 100 letters, digits and ._- (it names the file '
                                         'confusion_<tag>.png in the run folder)')
    return text


def build_parser():
    p = Parser(description='Evaluate a checkpoint on the unbiased Colored-MNIST test set.')
    p.add_argument('-e', '--exp_name', default=None,
                   help='run name under --save_dir, or the path of a run folder; its newest checkpoint is used when '
                        '--checkpoint is not given')
    p.add_argument('--checkpoint', default=None, help='checkpoint file to evaluate (ours or the authors\')')
    add_trust_checkpoint(p)
    p.add_argument('--color_var', type=color_variance, default=None,
                   help='colour variance of the test set (default: the one the checkpoint was trained on)')
    add_data_dir(p)
    add_save_dir(p)
    add_no_generate(p)
    p.add_argument('--palette', choices=sorted(colored_mnist.PALETTES), default=None,
                   help='mean colours of the data file to test on (default: the one the checkpoint was trained on, '
                        f'else {colored_mnist.DEFAULT_PALETTE})')
    p.add_argument('--method', default=None, choices=methods.method_names(),
                   help='method of an authors\' checkpoint (ours record it); gray evaluates the grey view')
    add_device(p)
    p.add_argument('--batch_size', type=positive_int, default=1000, help='evaluation batch size')
    p.add_argument('--gray_view', choices=GRAY_VIEWS, default=DEFAULT_GRAY_VIEW,
                   help='test images of a grey-input method (Gray): luminance of the coloured test digits, or '
                        'original: the file\'s test_gray (the MNIST digits before colouring); the record says '
                        'which, and the view the tables do not report is recorded under the tag test_<view>')
    p.add_argument('--tag', default=None, type=tag_name,
                   help='name of this evaluation in results.jsonl and the PNG (default: test; test_<view> for the '
                        f'--gray_view that is not {DEFAULT_GRAY_VIEW} on a grey-input method)')
    p.add_argument('--probe', action='store_true',
                   help='also run the bias-leakage probe (a fresh colour predictor on frozen f)')
    p.add_argument('--probe_epochs', type=positive_int, default=1, help='training epochs of the probe')
    p.add_argument('--no_progress', action='store_true', help='no progress bar for the probe (for batch jobs)')
    return p


def record(path, metrics):
    """Add this evaluation to ``results.jsonl``, replacing an earlier one of the same tag, epoch and sigma^2
    (evaluating twice leaves one record); the training records and other evaluations stay as they are."""
    if not os.path.exists(path):
        return append_line(path, json.dumps(metrics))
    same = ('tag', 'epoch', 'color_var', 'checkpoint')
    kept = [r for r in read_jsonl(path) if not ('test_acc' in r and all(r.get(k) == metrics.get(k) for k in same))]
    atomic_write_text(path, ''.join(json.dumps(r) + '\n' for r in kept + [metrics]))


def check_writable(run_dir):
    """Before any long work: the run folder takes test.py's record and figure (no links, not read-only)."""
    refuse_links(run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:
        raise UserError(f'cannot write into {run_dir} ({exc.strerror}); test.py records its result there: make '
                        'it writable, or copy the run folder and evaluate the copy') from None


def check_own_checkpoint(run_dir, path):
    """A run folder that holds a trained run (its options.json) records evaluations of its own checkpoints only: the
    tables would count another checkpoint's record as that run's result."""
    trained = run_folder.read_options(run_dir)
    if not trained or os.path.realpath(os.path.dirname(os.path.abspath(path))) == os.path.realpath(run_dir):
        return
    raise UserError(f'{run_dir} holds a trained run ({trained.get("method", "?")}, sigma^2 '
                    f'{trained.get("color_var", "?")}) and {path} is not one of its checkpoints: its record would '
                    'count as that run\'s result; give -e a new name for this evaluation, or drop -e to record it '
                    'beside the checkpoint')


def metrics_table(metrics):
    rows = [(key, f'{metrics[key]:.4f}') for key in
            ('test_acc', 'aligned_acc', 'conflicting_acc', 'color_acc', 'probe_color_acc') if key in metrics]
    per_class = ' '.join(f'{k}:{a:.3f}' for k, a in enumerate(metrics['per_class_acc']))
    return format_table(['metric', 'value'], rows) + '\nper-class: ' + per_class


def run(args):
    device = resolve_device(args.device)
    run_dir = None
    if args.exp_name is not None:
        if os.sep in args.exp_name:  # a run folder's path
            if not os.path.isdir(args.exp_name):
                raise UserError(f'-e {args.exp_name}: no such run folder; give a run name under --save_dir '
                                f'({args.save_dir}) or the path of a run folder')
            run_dir = args.exp_name
        else:
            try:
                run_dir = os.path.join(args.save_dir, run_name(args.exp_name))
            except argparse.ArgumentTypeError as exc:
                raise UserError(f'-e: {exc}') from None
    path = args.checkpoint
    if path is None:
        if run_dir is None:
            raise UserError('give --checkpoint PATH or -e EXP_NAME (a run folder under --save_dir)')
        found = run_folder.newest_checkpoint(run_dir)
        if found is None:
            raise UserError(f'no checkpoint in {run_dir}; train first (bash train.sh) or give --checkpoint')
        path, ckpt = found
    else:
        ckpt = C.read_checkpoint(path, trust=args.trust_checkpoint)
    if run_dir is None:
        run_dir = os.path.dirname(os.path.abspath(path))
    elif args.checkpoint is not None:
        check_own_checkpoint(run_dir, path)
    check_writable(run_dir)
    opts = ckpt.get('options') or {}
    for key, kind in (('method', str), ('color_var', (int, float)), ('palette', str), ('dry_run', bool)):
        if opts.get(key) is not None and (not isinstance(opts[key], kind) or
                                          (kind is not bool and isinstance(opts[key], bool))):
            raise UserError(f'{path}: its options hold {key} = {opts[key]!r}, not a {getattr(kind, "__name__", "number")}; '
                            'the file is damaged')
    recorded = (ckpt.get('config') or {}).get('method') or opts.get('method')
    if args.method and recorded and args.method != recorded:
        raise UserError(f'{path} is a {recorded} checkpoint; --method {args.method} would evaluate it on the wrong '
                        'view of the data (drop --method: the checkpoint records its own)')
    method = args.method or recorded or 'baseline'
    if method not in methods.METHODS:
        raise UserError(f'{path} was trained with method {method!r}, which this version does not know '
                        f'({", ".join(methods.method_names())})')
    sizes(ckpt, path, method)  # the networks' sizes, checked before the data is read or anything is built
    cls = methods.get(method)
    gray = cls.gray
    if args.tag is None:
        args.tag = view_tag(args.gray_view) if gray else 'test'
    color_var = args.color_var or opts.get('color_var')
    if args.color_var is not None and opts.get('color_var') is not None and \
            f'{args.color_var:.3f}' != f'{float(opts["color_var"]):.3f}':
        print(f'warning: {path} was trained on sigma^2 = {float(opts["color_var"]):.3f} and is tested on '
              f'{args.color_var:.3f}; the record says so, and tables count a run only on its own sigma^2',
              file=sys.stderr)
    if color_var is None:
        raise UserError(f'{path} does not record its colour variance: give --color_var')
    palette = args.palette or opts.get('palette') or colored_mnist.DEFAULT_PALETTE
    data_path = colored_mnist.ensure(args.data_dir, color_var, generate_missing=not args.no_generate,
                                     palette=palette)

    dry_run = bool(opts.get('dry_run'))  # a smoke run's checkpoint: evaluated on the first images only
    print(f'checkpoint {path}; data {data_path}; records to {os.path.join(run_dir, "results.jsonl")}')
    net, h, config = rebuild(ckpt, path, device, method)
    splits = load_splits(data_path, gray=gray, color_var=color_var, num_bins=config['num_bins'],
                         which=('train', 'test') if args.probe else ('test',), palette=palette, log=print,
                         first=DRY_RUN_DATA if dry_run else None, gray_view=args.gray_view)
    if len(splits['test']) == 0:
        raise UserError(f'the test split of {data_path} is empty; regenerate the file')
    test = splits['test'].to(device)
    res = evaluate(net, test, h, batch_size=args.batch_size, num_classes=config['n_class'],
                   mean_index=splits['test'].mean_index, bias_label=cls.bias_label)
    metrics = {'tag': args.tag, 'test_acc': res['acc'], 'aligned_acc': res['aligned_acc'],
               'conflicting_acc': res['conflicting_acc'], 'aligned_fraction': res['aligned_fraction'],
               'per_class_acc': res['per_class_acc'], 'confusion': res['confusion'],
               'method': method, 'color_var': color_var, 'checkpoint': os.path.abspath(path),
               'epoch': ckpt.get('epoch', ckpt.get('step')), 'gray_input': gray,
               'gray_view': args.gray_view if gray else None,
               'mean_colors': splits['test'].mean_colors.tolist(), 'data_file': os.path.abspath(data_path)}
    if dry_run:
        metrics['dry_run'] = True
    if 'color_acc' in res:
        metrics['color_acc'] = res['color_acc']
    if args.probe:
        train = splits['train'].to(device)
        metrics['probe_color_acc'] = probe_color_leakage(net, train, test, epochs=args.probe_epochs,
                                                         feat_ch=config['feat_ch'], num_bins=config['num_bins'],
                                                         progress=not args.no_progress, features=cls.probe_features,
                                                         head=lambda: cls.probe_head(config['feat_ch'],
                                                                                     config['num_bins']),
                                                         bias_label=cls.bias_label)
    os.makedirs(run_dir, exist_ok=True)
    png = confusion_png(res['confusion'], os.path.join(run_dir, f'confusion_{args.tag}.png'),
                        f'{method}, sigma^2={color_var:.3f}: test acc {res["acc"]:.4f}',
                        splits['test'].mean_colors,
                        banner='SMOKE RUN (--dry_run): not results' if dry_run else None)
    metrics['confusion_png'] = png
    record(run_folder.file(run_dir, run_folder.RESULTS), metrics)
    try:
        from tensorboardX import SummaryWriter
        import matplotlib.image as mpimg
        # its own file name: an events file of train.py opened in the same second has the same name
        with SummaryWriter(logdir=run_dir, filename_suffix=f'.{args.tag}') as w:
            step = int(metrics['epoch'] or 0)
            for key, name in (('test_acc', 'acc'), ('aligned_acc', 'aligned_acc'),
                              ('conflicting_acc', 'conflicting_acc'), ('color_acc', 'color_acc'),
                              ('probe_color_acc', 'probe_color_acc')):
                if metrics.get(key) is not None:
                    w.add_scalar(f'{args.tag}/{name}', metrics[key], step)
            w.add_image(f'{args.tag}/confusion', mpimg.imread(png)[..., :3], step, dataformats='HWC')
            shown = to_gray(test.raw[:64]) if gray else test.raw[:64]
            w.add_image(f'{args.tag}/inputs', image_grid(shown, ncol=8), step, dataformats='HWC')
    except OSError:
        pass  # TensorBoard events are a convenience; the JSON record and PNG are written
    print(f'{path} ({method}, sigma^2={color_var:.3f})')
    print(metrics_table(metrics))
    print(f'confusion matrix: {png}')
    return metrics


def main(argv=None):
    return run(build_parser().parse_args(argv))


if __name__ == '__main__':
    run_main(main)
