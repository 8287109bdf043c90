"""The weights this repository ships in ``pretrained/``: evaluate them, or export them from finished runs.

    python -m experiments.pretrained                  # evaluate every shipped file, print the table
    python -m experiments.pretrained --export RUN_DIR [RUN_DIR ...] --records docs/results/paper_e100 \\
        --commit SHA --command 'the command that trained them'

A shipped file holds weights only (f∘g, and h for a method that trains one), the run's options and the
sizes of its networks: tensors and plain values, read with ``torch.load(weights_only=True)`` like every
checkpoint here, so ``test.py --checkpoint`` evaluates it and ``train.py --use_pretrain --checkpoint``
(``BASELINE=pretrained bash train.sh``) starts LNL from it. ``pretrained/provenance.json`` names, per file,
its SHA-256, the run and records it came from (under ``docs/results/``), the commit and command that trained
it, and the test accuracy its run recorded. Evaluation checks each file against its SHA-256, evaluates it on
its sigma^2's unbiased test set (the data file is generated when missing) and compares the accuracy with the
recorded one: they must be equal, image for image (exit status 1 otherwise).
"""
import json
import os
import sys

import torch

import checkpoint as C
import methods
import run_folder
from methods import display_name
from methods.restore import rebuild
from dataset import colored_mnist
from dataset.tensors import DEFAULT_GRAY_VIEW, load_splits
from evaluation import evaluate
from experiments import records
from utils import (DATA_DIR, REPO_ROOT, Parser, UserError, atomic_open, atomic_write_text, existing_or_new_folder,
                   format_table, resolve_device, run_main, sha256_file)

PRETRAINED_DIR = os.path.join(REPO_ROOT, 'pretrained')
PROVENANCE = 'provenance.json'
MAX_BYTES = 1 << 20  # a shipped file holds weights only: well under 1 MB
# options kept in a shipped file besides the run-defining ones (no paths of the machine that trained it)
KEPT_OPTIONS = ('palette', 'precision', 'max_step', 'lr', 'lr_decay_period', 'lr_decay_rate', 'momentum',
                'weight_decay', 'optim_semantics', 'data_seed', 'exp_name')


def finished(run_dir):
    """The checkpoint a finished run ended with (its ``done`` marker names it)."""
    path = run_folder.finished_checkpoint(run_dir)
    if path is None:
        raise UserError(f'{run_dir} is not a finished run (no done marker naming its last checkpoint, or a process '
                        'still trains in it); export finished runs only')
    return path


def recorded_test(run_dir, method, color_var):
    """The run's test record of its last epoch on its own sigma^2 (for a grey-input method: the default view)."""
    view = DEFAULT_GRAY_VIEW if methods.get(method).gray else None
    test, stale = records.current_test(run_folder.read_results(run_dir), color_var, gray_view=view)
    if test is None:
        raise UserError(f'{run_dir} has no test record of its last epoch on sigma^2 = {color_var:.3f}; run '
                        f'python test.py -e {run_dir} first')
    return test


def weights_only(ckpt, method):
    """The shipped content of a checkpoint: weights, sizes, options; no optimiser or random state."""
    opts = ckpt.get('options') or {}
    keep = set(methods.run_defining(method)) | set(KEPT_OPTIONS)
    out = {'format': C.CHECKPOINT_FORMAT, 'epoch': ckpt['epoch'],
           'config': dict(ckpt.get('config') or {}),
           'options': {k: v for k, v in opts.items() if k in keep},
           'net_state_dict': {k: v.detach().clone().cpu() for k, v in ckpt['net_state_dict'].items()}}
    if methods.get(method).uses_h and ckpt.get('h_state_dict') is not None:
        out['h_state_dict'] = {k: v.detach().clone().cpu() for k, v in ckpt['h_state_dict'].items()}
    return out


def export(run_dirs, out_dir, records_dir, commit, command):
    """Write ``<run name>.pth`` for each finished run into ``out_dir`` and (re)write its provenance entry."""
    prov_path = os.path.join(out_dir, PROVENANCE)
    prov = read_provenance(prov_path) if os.path.exists(prov_path) else {'files': {}}
    os.makedirs(out_dir, exist_ok=True)
    for run_dir in run_dirs:
        run_dir = os.path.abspath(run_dir)
        name = os.path.basename(run_dir)
        source = finished(run_dir)
        ckpt = C.read_checkpoint(source)
        C.check_fields(ckpt, source)
        method, color_var = ckpt['options']['method'], float(ckpt['options']['color_var'])
        test = recorded_test(run_dir, method, color_var)
        if test.get('epoch') != ckpt['epoch']:
            raise UserError(f'{run_dir}: its test record is of epoch {test.get("epoch")}, its last checkpoint of '
                            f'epoch {ckpt["epoch"]}; run test.py on it again')
        target = os.path.join(out_dir, name + '.pth')
        with atomic_open(target, 'wb') as fh:
            torch.save(weights_only(ckpt, method), fh)
        size = os.path.getsize(target)
        if size > MAX_BYTES:
            os.remove(target)
            raise UserError(f'{name}: {size} bytes of weights is more than {MAX_BYTES}; not a network of this paper')
        rec_dir = os.path.join(records_dir, name)
        if not os.path.isfile(run_folder.file(rec_dir, run_folder.RESULTS)):
            raise UserError(f'{rec_dir}/results.jsonl does not exist; commit the run\'s records there first')
        prov['files'][name + '.pth'] = {
            'sha256': sha256_file(target), 'bytes': size, 'method': method, 'color_var': f'{color_var:.3f}',
            'seed': ckpt['options'].get('random_seed'), 'epoch': ckpt['epoch'], 'test_acc': test['test_acc'],
            'tag': test.get('tag', 'test'), 'gray_view': test.get('gray_view'),
            'palette': ckpt['options'].get('palette', colored_mnist.DEFAULT_PALETTE),
            'records': os.path.relpath(rec_dir, REPO_ROOT), 'source_sha256': sha256_file(source),
            'commit': commit, 'command': command}
        print(f'{target}: {size} bytes, {method} sigma^2={color_var:.3f}, recorded test acc {test["test_acc"]:.4f}')
    atomic_write_text(prov_path, json.dumps(prov, indent=2, sort_keys=True) + '\n')
    return prov


def read_provenance(path):
    try:
        with open(path, encoding='utf-8') as fh:
            prov = json.load(fh)
    except (OSError, ValueError) as exc:
        raise UserError(f'cannot read {path} ({exc}); restore it with git checkout -- {path}') from None
    if not isinstance(prov, dict) or not isinstance(prov.get('files'), dict):
        raise UserError(f'{path} holds no "files" table; restore it with git checkout -- {path}')
    return prov


def evaluate_shipped(folder, data_dir, device='cpu', generate_missing=True):
    """One row per shipped file: its accuracy now, next to the one its run recorded."""
    prov = read_provenance(os.path.join(folder, PROVENANCE))
    rows, splits = [], {}
    for name, entry in sorted(prov['files'].items(), key=lambda kv: (records.method_order().index(kv[1]['method'])
                                                                     if kv[1]['method'] in records.method_order()
                                                                     else 99, kv[0])):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise UserError(f'{path} is missing; restore it with git checkout -- {path}')
        if sha256_file(path) != entry['sha256']:
            raise UserError(f'{path} does not match the SHA-256 in {PROVENANCE}; it is not the shipped file '
                            f'(restore it with git checkout -- {path})')
        ckpt = C.read_checkpoint(path)
        C.check_fields(ckpt, path)
        method = entry['method']
        net, h, config = rebuild(ckpt, path, device, method)
        gray = methods.get(method).gray
        color_var = float(entry['color_var'])
        view = entry.get('gray_view') or DEFAULT_GRAY_VIEW
        key = (entry['color_var'], entry['palette'], gray, view if gray else None, config['num_bins'])
        if key not in splits:  # files of one sigma^2 and view share one read of the data
            data_path = colored_mnist.ensure(data_dir, color_var, generate_missing=generate_missing,
                                             palette=entry['palette'])
            splits[key] = load_splits(data_path, gray=gray, color_var=color_var, num_bins=config['num_bins'],
                                      which=('test',), palette=entry['palette'], gray_view=view)['test']
        split = splits[key]
        res = evaluate(net, split.to(device), h, num_classes=config['n_class'], mean_index=split.mean_index)
        rows.append(dict(entry, file=name, acc=res['acc'], conflicting_acc=res['conflicting_acc'],
                         same=res['acc'] == entry['test_acc']))
    return rows


def table(rows):
    header = ['file', 'method', 'σ²', 'seed', 'epochs', 'test acc', 'recorded', 'same', 'paper']
    body = [[r['file'], display_name(r['method']),
             r['color_var'], r['seed'], r['epoch'], f'{r["acc"]:.4f}', f'{r["test_acc"]:.4f}',
             'yes' if r['same'] else 'NO',
             (lambda p: f'{p:.4f}' if p is not None else '—')(records.PAPER_FIG4.get(r['method'], {}).get(r['color_var']))]
            for r in rows]
    return format_table(header, body, title='Shipped weights on the unbiased test set (test acc: now; recorded: '
                                            'by the run that trained them)')


def build_parser():
    p = Parser(description='Evaluate the weights shipped in pretrained/ (default), or export finished runs there.')
    p.add_argument('--dir', default=PRETRAINED_DIR, help='folder of the shipped weights and their provenance.json')
    p.add_argument('--data_dir', default=DATA_DIR, type=existing_or_new_folder,
                   help='folder of the data files (generated there when missing)')
    p.add_argument('--no_generate', action='store_true', help='fail instead of generating a missing data file')
    p.add_argument('--device', default='cpu', help='cpu (the recorded accuracies were measured there), auto or cuda')
    p.add_argument('--export', nargs='+', metavar='RUN_DIR', default=None,
                   help='finished run folders to write into --dir (weights only) with their provenance')
    p.add_argument('--records', default=None, metavar='DIR',
                   help='with --export: the folder under docs/results/ that holds the runs\' committed records')
    p.add_argument('--commit', default=None, help='with --export: the commit the runs were trained from')
    p.add_argument('--command', default=None, help='with --export: the command that trained the runs')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.export:
        missing = [f'--{k}' for k in ('records', 'commit', 'command') if not getattr(args, k)]
        if missing:
            raise UserError(f'--export needs {", ".join(missing)} (where the records are, what trained the runs)')
        export(args.export, args.dir, os.path.abspath(args.records), args.commit, args.command)
        return 0
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    rows = evaluate_shipped(args.dir, args.data_dir, resolve_device(args.device), not args.no_generate)
    print(table(rows))
    bad = [r['file'] for r in rows if not r['same']]
    if bad:
        print(f'error: {", ".join(bad)}: the accuracy differs from the recorded one', file=sys.stderr)
        sys.exit(1)
    print(f'all {len(rows)} shipped files reproduce their recorded test accuracy')
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
