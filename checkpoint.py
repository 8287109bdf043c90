"""Checkpoints: the format, the random state, writing and reading, and the checks before a run resumes.

A checkpoint holds tensors and plain Python values only, so it loads with ``torch.load(weights_only=True)``
and a file cannot run code while it loads. The authors' keys (``net_state_dict``, ``optim_state_dict``,
``step``) are kept so that their tools read ours; theirs (a ``net_state_dict`` and numbers) load here too.
"""
import os
import pickle
import random
import shlex
import sys

import numpy as np
import torch

from methods.registry import run_defining
from models.weights import CONFIG_LIMITS
from utils import UserError, atomic_open

CHECKPOINT_FORMAT = 'lnl-checkpoint-v1'


def rng_state(batch_gen, device=None):
    """Every random state of a run as tensors and plain Python values (loadable with ``weights_only``); the CUDA
    generator of the run's own ``device`` only (reading another GPU's would open a CUDA context on it)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {'torch': torch.get_rng_state(),
             'numpy': {'name': str(name), 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                       'has_gauss': int(has_gauss), 'cached_gaussian': float(gauss)},
             'python': list(random.getstate()), 'batch': batch_gen.get_state()}
    if device is not None and device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, batch_gen, device=None):
    torch.set_rng_state(state['torch'])
    npst = state['numpy']
    if isinstance(npst, dict):
        np.random.set_state((npst['name'], npst['keys'].numpy().astype(np.uint32), npst['pos'],
                             npst['has_gauss'], npst['cached_gaussian']))
    else:
        np.random.set_state(npst)
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]) if isinstance(py, list) else py)
    batch_gen.set_state(state['batch'])
    saved = state.get('cuda')
    if saved is None or device is None or device.type != 'cuda':
        return
    if isinstance(saved, (list, tuple)):  # earlier versions saved every visible device's state
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= len(saved):
            print(f'note: the run saved the random state of {len(saved)} CUDA devices; device {index} starts from '
                  'its current state', file=sys.stderr)
            return
        saved = saved[index]
    torch.cuda.set_rng_state(saved, device)


def save_checkpoint(path, method, epoch, batch_gen, progress=None):
    """Write the whole training state to ``path`` atomically.

    ``epoch`` is the number of finished epochs; ``progress`` (order, position, running sums) is
    set when the checkpoint was written in the middle of an epoch.
    """
    opt = method.opt
    state = {
        'format': CHECKPOINT_FORMAT,
        'epoch': epoch,
        'step': epoch,  # the authors' key
        'options': plain(vars(opt)),
        'config': {'n_class': opt.n_class, 'feat_ch': opt.feat_ch, 'num_bins': opt.num_bins,
                   'method': opt.method},
        'net_state_dict': method.net.state_dict(),
        'h_state_dict': method.h.state_dict(),
        'optim_state_dict': next(iter(method.optimizers.values())).state_dict(),  # the authors' key
        'optimizers': {k: o.state_dict() for k, o in method.optimizers.items()},
        'schedulers': {k: s.state_dict() for k, s in method.schedulers.items()},
        'rng': rng_state(batch_gen, method.device),
        'progress': progress,
    }
    try:
        with atomic_open(path, 'wb') as fh:
            torch.save(state, fh)
    except (OSError, RuntimeError) as exc:  # a full disk, ulimit -f, a read-only folder; the old file is intact
        reason = getattr(exc, 'strerror', None) or str(exc).splitlines()[0][:120]
        raise UserError(f'could not write the checkpoint {path} ({reason}); the previous checkpoints are intact: '
                        'free disk space or fix the folder, then resume with --resume') from None
    return path


def plain(value):
    """``value`` with containers turned into dicts and lists of str, int, float, bool and None (a subclass of
    one of them, such as ``torch.__version__`` or a NumPy float, as that type: ``weights_only`` loads no other)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None:
        return value
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return str(value)


# What a NumPy array needs to be rebuilt from a pickle (no code runs): checkpoints of earlier versions of this
# project hold NumPy's random state as an array.
NUMPY_ARRAY_GLOBALS = [(getattr(np, '_core', None) or np.core).multiarray._reconstruct, np.ndarray,
                       np.dtype] + [type(np.dtype(t)) for t in (np.uint32, np.uint8, np.int64, np.float64)]


def _unreadable(path, exc):
    first = str(exc).splitlines()[0][:120] if str(exc) else ''
    return UserError(f'{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {first})')


def read_checkpoint(path, trust=False, log=None):
    """Load a checkpoint file (ours or the authors') to the CPU; ``UserError`` when it is not one.

    Always with ``torch.load(weights_only=True)``: tensors and plain Python values only, so a file cannot
    run code while it loads. Our checkpoints and the authors' (state dicts and numbers) load that way.
    A file that needs more is refused unless ``trust`` (``--trust_checkpoint``): then it is loaded with
    full unpickling, after a one-line warning through ``log``.
    """
    if os.path.isdir(path):
        example = os.path.join(path, 'checkpoint_last.pth')
        raise UserError(f'{path} is a folder; give a checkpoint file in it (e.g. {example})'
                        ', or evaluate a run folder with test.py -e')
    if not os.path.isfile(path):
        raise UserError(f'checkpoint {path} does not exist; give the path of a .pth file written by '
                        'train.py (e.g. runs/<exp_name>/checkpoint_last.pth)')
    try:
        with torch.serialization.safe_globals(NUMPY_ARRAY_GLOBALS):
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if 'GLOBAL' not in text:  # not a pickle that asks for a class or function: a damaged file
            detail = next((line.strip() for line in text.splitlines() if 'Unsupported' in line), 'UnpicklingError')
            raise UserError(f'{path} is not a readable PyTorch checkpoint ({detail[:120]})') from None
        if not trust:
            raise UserError(f'{path} holds objects other than tensors and plain values, and loading them could '
                            'run code stored in the file; if you trust the file, pass --trust_checkpoint') from None
        (log or (lambda m: print(m, file=sys.stderr)))(
            f'warning: {path}: loading with full unpickling (--trust_checkpoint); this runs any code in the file')
        try:
            ckpt = torch.load(path, map_location='cpu', weights_only=False)
        except Exception as exc2:
            raise _unreadable(path, exc2) from None
    except Exception as exc:  # torch.load raises many types for a file that is not a checkpoint
        raise _unreadable(path, exc) from None
    if not isinstance(ckpt, dict) or 'net_state_dict' not in ckpt:
        raise UserError(f'{path} is not a checkpoint of this project or of the authors\' code '
                        '(no net_state_dict)')
    if not isinstance(ckpt['net_state_dict'], dict):
        raise UserError(f'{path}: net_state_dict is a {type(ckpt["net_state_dict"]).__name__}, not a state dict')
    check_fields(ckpt, path)
    return ckpt


# The type of each field a checkpoint may hold (a field that is absent is allowed: the authors' files hold
# only some of them).
FIELD_TYPES = {'epoch': int, 'step': int, 'options': dict, 'config': dict, 'h_state_dict': (dict, type(None)),
               'optimizers': dict, 'schedulers': dict, 'rng': dict, 'progress': (dict, type(None)),
               'format': str}
# What --resume needs besides the weights.
RESUME_FIELDS = ('epoch', 'options', 'optimizers', 'schedulers', 'rng')


def check_fields(ckpt, path, resume=False):
    """``UserError`` naming the field when a checkpoint's field has the wrong type or value (a negative
    epoch, a size beyond :data:`CONFIG_LIMITS`), or, with ``resume``, when a field ``--resume`` needs is
    missing."""
    for key, kind in FIELD_TYPES.items():
        value = ckpt.get(key)
        if key in ckpt and (not isinstance(value, kind) or isinstance(value, bool)):
            raise UserError(f'{path}: its {key} is a {type(value).__name__}, which no checkpoint of this project or '
                            'of the authors holds; the file is damaged or not a checkpoint')
    for key in ('epoch', 'step'):
        if isinstance(ckpt.get(key), int) and ckpt[key] < 0:
            raise UserError(f'{path}: its {key} is {ckpt[key]}, a negative number of epochs; the file is damaged')
    for key, (low, high) in CONFIG_LIMITS.items():
        value = (ckpt.get('config') or {}).get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
            raise UserError(f'{path}: its config has {key} = {value!r}, outside {low}..{high}; the file is damaged')
    if resume:
        missing = [k for k in RESUME_FIELDS if k not in ckpt]
        rng = ckpt.get('rng') or {}
        missing += [f'rng.{k}' for k in ('torch', 'numpy', 'python', 'batch') if 'rng' in ckpt and k not in rng]
        if missing:
            raise UserError(f'{path} lacks {", ".join(missing)}, which --resume needs to continue exactly; start a '
                            'new run from its weights with --use_pretrain --checkpoint instead')


def check_method_fields(ckpt, method, path):
    """``UserError`` naming the field when a checkpoint lacks what ``method`` needs to resume: h's weights (a
    method that trains h), an optimiser's or a schedule's state (one per network the method steps)."""
    missing = [] if not method.uses_h or isinstance(ckpt.get('h_state_dict'), dict) else ['h_state_dict']
    for field, names in (('optimizers', method.optimizers), ('schedulers', method.schedulers)):
        saved = ckpt.get(field) if isinstance(ckpt.get(field), dict) else {}
        missing += [f'{field}.{k}' for k in names if not isinstance(saved.get(k), dict)]
    if missing:
        raise UserError(f'{path} lacks {", ".join(missing)}, which --resume of --method {method.opt.method} needs; '
                        f'start a new run from its weights with --use_pretrain --checkpoint {shlex.quote(str(path))} '
                        'instead')


def check_resume_options(ckpt_opts, opt, path):
    """``UserError`` when a run would resume with other run-defining options than it was started with; the
    learning rate may change (the advice after a diverging run), the trainer logs it."""
    keys = [k for k in run_defining(opt.method) if k != 'lr']
    diff = [(k, ckpt_opts.get(k), getattr(opt, k, None)) for k in keys
            if k in ckpt_opts and ckpt_opts.get(k) != getattr(opt, k, None)]
    if diff:
        desc = ', '.join(f'{k}={new!r} (checkpoint: {old!r})' for k, old, new in diff)
        raise UserError(f'cannot resume from {path}: it was written with other options: {desc}; '
                        'use the same options or another --exp_name')
