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
import hashlib
import io
import json
import math
import os
import sys

import torch

import checkpoint as C
import methods
import run_folder
from methods import display_name
from methods.restore import rebuild
from dataset import colored_mnist
from dataset.colored_mnist import color_variance
from dataset.tensors import DEFAULT_GRAY_VIEW, GRAY_VIEWS, load_splits
from evaluation import evaluate
from experiments import records
from utils import (REPO_ROOT, Parser, UserError, add_data_dir, add_device, add_no_generate, atomic_open, atomic_write_text,
                   format_table, resolve_device, run_main, sha256_file)

PRETRAINED_DIR = os.path.join(REPO_ROOT, 'pretrained')
PROVENANCE = 'provenance.json'
MAX_BYTES = 1 << 22  # a shipped file holds weights only: under 0.5 MB for the paper's networks, 1.9 MB for CSAD's
# options kept in a shipped file besides the run-defining ones (no paths of the machine that trained it)
KEPT_OPTIONS = ('palette', 'precision', 'max_step', 'lr', 'lr_decay_period', 'lr_decay_rate', 'momentum',
                'weight_decay', 'optim_semantics', 'data_seed', 'exp_name')


def finished(run_dir):
    """The checkpoint a finished run ended with (its ``done`` marker names it)."""
    path, why = run_folder.finish(run_dir)
    if path is None:
        raise UserError(f'{run_dir} is not a finished run ({why}); export finished runs only')
    return path


def read_weights(path):
    """A checkpoint read with ``torch.load(weights_only=True)``, as every file here is. A file that holds more
    than tensors and plain values is refused: this command has no ``--trust_checkpoint``, and a file it
    ships must never need one."""
    try:
        ckpt = C.read_checkpoint(path)
    except UserError as exc:
        if '--trust_checkpoint' not in str(exc):
            raise
        raise UserError(f'{path} holds objects other than tensors and plain values; experiments.pretrained reads '
                        'weights-only files and never unpickles more (a file written by train.py of this version '
                        'is one; test.py --checkpoint PATH --trust_checkpoint evaluates a file you trust)') from None
    C.check_fields(ckpt, path)
    return ckpt


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


def repository_of(weights_dir):
    """The repository that holds a weights folder (it sits at its top, as pretrained/ does): what provenance names
    paths from, whichever checkout (a worktree elsewhere) the code runs in."""
    return os.path.dirname(os.path.abspath(weights_dir))


def prepare_export(run_dir, records_dir, repo_root):
    """Everything one run's export needs, checked before anything is written: (name, weights file bytes,
    provenance entry without commit and command, source path, recorded test). The entry names the records
    relative to ``repo_root``, the repository that holds the weights folder."""
    run_dir = os.path.abspath(run_dir)
    name = os.path.basename(run_dir)
    source = finished(run_dir)
    ckpt = read_weights(source)
    opts = ckpt.get('options') or {}
    if opts.get('dry_run') or run_folder.read_options(run_dir).get('dry_run'):
        raise UserError(f'{run_dir} is a --dry_run smoke run (a few batches of the first images): its weights are '
                        'not a result; export runs trained without --dry_run')
    method = (ckpt.get('config') or {}).get('method') or opts.get('method')
    if not isinstance(method, str) or method not in methods.METHODS:
        raise UserError(f'{source}: its options hold method {method!r}, which this version does not know '
                        f'({", ".join(methods.method_names())})')
    color_var = opts.get('color_var')
    if isinstance(color_var, bool) or not isinstance(color_var, (int, float)):
        raise UserError(f'{source}: its options hold color_var {color_var!r}, not a number; the file is damaged')
    color_var = float(color_var)
    if not isinstance(ckpt.get('epoch'), int):
        raise UserError(f'{source} records no epoch; export checkpoints written by train.py')
    test = recorded_test(run_dir, method, color_var)
    if test.get('epoch') != ckpt['epoch']:
        raise UserError(f'{run_dir}: its test record is of epoch {test.get("epoch")}, its last checkpoint of '
                        f'epoch {ckpt["epoch"]}; run test.py on it again')
    buf = io.BytesIO()
    torch.save(weights_only(ckpt, method), buf)
    data = buf.getvalue()
    if len(data) > MAX_BYTES:
        raise UserError(f'{name}: {len(data)} bytes of weights is more than {MAX_BYTES}; not a network of this '
                        'repository\'s methods')
    rec_dir = os.path.join(records_dir, name)
    if not os.path.isfile(run_folder.file(rec_dir, run_folder.RESULTS)):
        raise UserError(f'{rec_dir}/results.jsonl does not exist; commit the run\'s records there first')
    entry = {'sha256': hashlib.sha256(data).hexdigest(), 'bytes': len(data), 'method': method,
             'color_var': f'{color_var:.3f}', 'seed': opts.get('random_seed'), 'epoch': ckpt['epoch'],
             'test_acc': test['test_acc'], 'tag': test.get('tag', 'test'), 'gray_view': test.get('gray_view'),
             'palette': opts.get('palette', colored_mnist.DEFAULT_PALETTE),
             'records': os.path.relpath(rec_dir, repo_root), 'source_sha256': sha256_file(source)}
    return name, data, entry, test


def export(run_dirs, out_dir, records_dir, commit, command):
    """Write ``<run name>.pth`` for each finished run into ``out_dir`` and (re)write its provenance entry; every
    run is checked before the first file is written."""
    prov_path = os.path.join(out_dir, PROVENANCE)
    prov = read_provenance(prov_path) if os.path.exists(prov_path) else {'files': {}}
    check_entries(prov, prov_path)
    prepared = [prepare_export(run_dir, records_dir, repository_of(out_dir)) for run_dir in run_dirs]
    os.makedirs(out_dir, exist_ok=True)
    for name, data, entry, test in prepared:
        target = os.path.join(out_dir, name + '.pth')
        with atomic_open(target, 'wb') as fh:
            fh.write(data)
        prov['files'][name + '.pth'] = dict(entry, commit=commit, command=command)
        print(f'{target}: {len(data)} bytes, {entry["method"]} sigma^2={entry["color_var"]}, recorded test acc '
              f'{test["test_acc"]:.4f}')
    atomic_write_text(prov_path, json.dumps(prov, indent=2, sort_keys=True) + '\n')
    return prov


def read_provenance(path):
    try:
        with open(path, encoding='utf-8') as fh:
            prov = json.load(fh)
    except FileNotFoundError:
        raise UserError(f'{path} does not exist: give --dir the folder of the shipped weights (pretrained/ of this '
                        'repository), or restore it with git checkout -- pretrained') from None
    except (OSError, ValueError) as exc:
        raise UserError(f'cannot read {path} ({exc}); restore it with git checkout -- {path}') from None
    if not isinstance(prov, dict) or not isinstance(prov.get('files'), dict):
        raise UserError(f'{path} holds no "files" table; restore it with git checkout -- {path}')
    return prov


def _number(value, low=None, high=None):
    """``value`` as a finite float (a number, or for sigma^2 also its '%.3f' text), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    if not math.isfinite(x) or (low is not None and x < low) or (high is not None and x > high):
        return None
    return x


def check_entry(name, entry, path):
    """One provenance entry as evaluation reads it (sigma^2 as its '%.3f' text); ``UserError`` naming the
    file, the entry and the field when a field is missing or of the wrong kind."""
    fix = 'fix that entry, or restore the file with git checkout'
    if not isinstance(entry, dict):
        raise UserError(f'{path}: the entry of {name!r} is of type {type(entry).__name__}, not a table of fields; {fix}')
    if os.path.basename(name) != name or '/' in name or '\\' in name or not name.endswith('.pth') or \
            name.startswith('.'):
        raise UserError(f'{path}: the file name {name!r} is not the name of a .pth file in {os.path.dirname(path)} '
                        f'(no folder, no path separator); {fix}')

    def bad(field, want):
        return UserError(f'{path}: {name}: {field} is {entry.get(field)!r}, not {want}; {fix}')
    sha = entry.get('sha256')
    if not isinstance(sha, str) or len(sha) != 64 or set(sha) - set('0123456789abcdef'):
        raise bad('sha256', 'a SHA-256 (64 lower-case hex digits)')
    if not isinstance(entry.get('method'), str) or entry['method'] not in methods.METHODS:
        raise bad('method', f'a method of this version ({", ".join(methods.method_names())})')
    color_var = _number(entry.get('color_var'), 0.0)
    if color_var is None:
        raise bad('color_var', 'a colour variance such as "0.020"')
    if _number(entry.get('test_acc'), 0.0, 1.0) is None or isinstance(entry['test_acc'], str):
        raise bad('test_acc', 'an accuracy (a number in 0..1)')
    if not isinstance(entry.get('palette'), str) or entry['palette'] not in colored_mnist.PALETTES:
        raise bad('palette', f'a palette ({", ".join(sorted(colored_mnist.PALETTES))})')
    if entry.get('gray_view') is not None and entry['gray_view'] not in GRAY_VIEWS:
        raise bad('gray_view', f'null or a grey view ({", ".join(GRAY_VIEWS)})')
    for field in ('seed', 'epoch'):
        value = entry.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise bad(field, 'a whole number')
    return dict(entry, color_var=records.var_key(color_var))


def check_entries(prov, path):
    """Every entry of ``prov['files']`` checked (:func:`check_entry`) before any file is read."""
    return {name: check_entry(name, entry, path) for name, entry in prov['files'].items()}


def evaluate_shipped(folder, data_dir, device='cpu', generate_missing=True, color_vars=None, method_names=None):
    """One row per shipped file (of ``color_vars`` and ``method_names`` only, when given): its accuracy now, next
    to the one its run recorded. Every provenance entry is checked before the first file is read."""
    prov_path = os.path.join(folder, PROVENANCE)
    entries = check_entries(read_provenance(prov_path), prov_path)
    order = records.method_order()
    rows, splits = [], {}
    chosen = {k: e for k, e in entries.items() if (color_vars is None or e['color_var'] in color_vars)
              and (method_names is None or e['method'] in method_names)}
    if not chosen:
        asked = ([f'sigma^2 = {" ".join(sorted(color_vars))}'] if color_vars else []) + \
            ([f'method {" ".join(method_names)}'] if method_names else [])
        raise UserError(f'no shipped file of {", ".join(asked)} in {prov_path}')
    for name, entry in sorted(chosen.items(), key=lambda kv: (order.index(kv[1]['method']), kv[0])):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise UserError(f'{path} is missing; restore it with git checkout -- {path}')
        if sha256_file(path) != entry['sha256']:
            raise UserError(f'{path} does not match the SHA-256 in {PROVENANCE}; it is not the shipped file '
                            f'(restore it with git checkout -- {path})')
        ckpt = read_weights(path)
        method = entry['method']
        net, _, config = rebuild(ckpt, path, device, method)  # h is read (and checked) with the file
        cls = methods.get(method)
        gray = cls.gray
        color_var = float(entry['color_var'])
        view = entry.get('gray_view') or DEFAULT_GRAY_VIEW
        key = (entry['color_var'], entry['palette'], gray, view if gray else None, config['num_bins'])
        if key not in splits:  # files of one sigma^2 and view share one read of the data
            data_path = colored_mnist.ensure(data_dir, color_var, generate_missing=generate_missing,
                                             palette=entry['palette'])
            splits[key] = load_splits(data_path, gray=gray, color_var=color_var, num_bins=config['num_bins'],
                                      which=('test',), palette=entry['palette'], gray_view=view)['test']
        split = splits[key]
        # h is not run: the table compares f∘g's accuracies only
        res = evaluate(net, split.to(device), num_classes=config['n_class'], mean_index=split.mean_index)
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
    add_data_dir(p)
    add_no_generate(p)
    add_device(p, default='cpu', help='cpu (the recorded accuracies were measured there), auto, cuda or cuda:N')
    p.add_argument('--color_vars', type=color_variance, nargs='+', default=None, metavar='SIGMA2',
                   help='evaluate the files of these variances only (default: every shipped file)')
    p.add_argument('--methods', nargs='+', choices=methods.method_names(), default=None, metavar='METHOD',
                   help='evaluate the files of these methods only (default: every shipped file)')
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
    wanted = None if args.color_vars is None else {f'{cv:.3f}' for cv in args.color_vars}
    rows = evaluate_shipped(args.dir, args.data_dir, resolve_device(args.device), not args.no_generate, wanted,
                            args.methods)
    print(table(rows))
    bad = [r['file'] for r in rows if not r['same']]
    if bad:
        print(f'error: {", ".join(bad)}: the accuracy differs from the recorded one', file=sys.stderr)
        sys.exit(1)
    print(f'all {len(rows)} shipped files reproduce their recorded test accuracy')
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
