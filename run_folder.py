"""The run folder: the one place that spells out what a run of train.py leaves on disk and how to read its state.

    <save_dir>/<exp_name>/
        options.json                       every option of the run (train.py writes it at each start)
        results.jsonl                      one JSON record per epoch (train.py) and per evaluation (test.py)
        train.log                          what train.py logged
        events.out.tfevents.*              TensorBoard events (training curves; test.py's under a name of its own)
        checkpoint_last.pth                the newest end-of-epoch state
        checkpoint_epoch_EEEE.pth          the state after epoch EEEE (every --save_step epochs)
        checkpoint_epoch_EEEE_batch_BBBBB.pth   a state inside an epoch (a signal, --save_every_batches)
        done                               written last: the name of the checkpoint the finished run ended with
        .lock                              held by the process that trains in the folder (utils.locks.RunLock)
        sweep.log                          the output of the sweep's steps for this run
        confusion_*.png                    test.py's confusion matrices

A run is *finished* when its ``done`` marker names a checkpoint of the folder of the run's last epoch (its options'
``max_step``) and no process holds the folder.
"""
import glob
import os

import checkpoint as C
from utils import RunLock, read_jsonl

OPTIONS = 'options.json'
RESULTS = 'results.jsonl'
TRAIN_LOG = 'train.log'
DONE = 'done'
SWEEP_LOG = 'sweep.log'
LAST = 'checkpoint_last.pth'
CHECKPOINTS = 'checkpoint_*.pth'
EVENTS = 'events.out.tfevents.*'
PARTIAL_WRITES = '.checkpoint_*.tmp'  # left by a process killed while saving (utils.files.atomic_open)
# What a fresh start (train.py --overwrite) removes besides the checkpoints and the events.
RUN_FILES = (RESULTS, DONE, TRAIN_LOG, OPTIONS)


def epoch_checkpoint(epoch):
    return f'checkpoint_epoch_{epoch:04d}.pth'


def batch_checkpoint(epoch, batch):
    return f'checkpoint_epoch_{epoch:04d}_batch_{batch:05d}.pth'


def file(run_dir, name):
    return os.path.join(run_dir, name)


def checkpoints(run_dir):
    """The checkpoint files of the run, newest first."""
    return sorted(glob.glob(os.path.join(run_dir, CHECKPOINTS)), key=os.path.getmtime, reverse=True)


def has_checkpoints(run_dir):
    return os.path.isdir(run_dir) and any(f.startswith('checkpoint_') for f in os.listdir(run_dir))


def read_options(run_dir):
    """The run's options.json as a dict; ``{}`` when it is missing or unreadable."""
    import json
    try:
        with open(file(run_dir, OPTIONS), encoding='utf-8') as fh:
            opts = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return opts if isinstance(opts, dict) else {}


def read_results(run_dir):
    """The run's records (results.jsonl), ``[]`` when there are none."""
    path = file(run_dir, RESULTS)
    return read_jsonl(path) if os.path.exists(path) else []


def newest_checkpoint(run_dir):
    """``(path, checkpoint)`` of the newest checkpoint in ``run_dir`` that loads and holds what ``--resume``
    needs, or ``None``; unreadable files are skipped."""
    for path in checkpoints(run_dir):
        try:
            ckpt = C.read_checkpoint(path)
        except C.UserError:
            continue
        if ckpt.get('format') == C.CHECKPOINT_FORMAT:
            try:
                C.check_fields(ckpt, path, resume=True)
            except C.UserError:
                continue
            return path, ckpt
    return None


def finished_checkpoint(run_dir):
    """The checkpoint a finished run ended with (its ``done`` marker names it), or None when the run is not
    finished: no marker (failed, killed, still training), a process holds its folder, or the checkpoint the
    marker names is not of the run's last epoch (its epoch is not the ``max_step`` of the run's options.json:
    a marker edited to name an older checkpoint, or a run since resumed for more epochs)."""
    return finish(run_dir)[0]


def finish(run_dir):
    """``(checkpoint, None)`` of a finished run, or ``(None, why)``: see :func:`finished_checkpoint`."""
    marker = file(run_dir, DONE)
    if RunLock.holder(run_dir) is not None:
        return None, 'a process still trains in it'
    if not os.path.isfile(marker) or os.path.islink(marker):
        return None, 'it has no done marker: it has not ended, failed or was stopped'
    with open(marker, encoding='utf-8', errors='replace') as fh:
        name = os.path.basename(fh.read().strip())  # a file of the run folder
    path = file(run_dir, name)
    if not name.startswith('checkpoint_') or not os.path.isfile(path) or os.path.islink(path):
        return None, f'its done marker names {name!r}, not a checkpoint file of the folder'
    last = read_options(run_dir).get('max_step')
    if not isinstance(last, int) or isinstance(last, bool):
        return None, f'its {OPTIONS} is missing or damaged (no max_step), so its last epoch is unknown'
    try:
        epoch = C.read_checkpoint(path).get('epoch')  # weights_only: a file cannot run code while it loads
    except C.UserError:
        return None, f'the checkpoint its done marker names ({name}) does not load'
    if epoch != last:
        return None, (f'its done marker names a checkpoint of epoch {epoch}, not of its last epoch {last} '
                      f'(delete {marker} to resume it)')
    return path, None


def state(run_dir):
    """'running' (a process trains in the folder), 'finished' (a done marker), 'partial' (checkpoints but no
    done marker) or 'new'."""
    if RunLock.holder(run_dir) is not None:
        return 'running'
    if os.path.exists(file(run_dir, DONE)):
        return 'finished'
    return 'partial' if has_checkpoints(run_dir) else 'new'


def previous_run(run_dir):
    """The files of an earlier run in ``run_dir`` that a fresh start would replace."""
    if not os.path.isdir(run_dir):
        return []
    found = [RESULTS] if os.path.exists(file(run_dir, RESULTS)) else []
    return found + sorted(os.path.basename(p) for p in glob.glob(os.path.join(run_dir, CHECKPOINTS)))


def clear(run_dir):
    """Remove an earlier run's files (a fresh start over it)."""
    for name in RUN_FILES:
        if os.path.exists(file(run_dir, name)):
            os.remove(file(run_dir, name))
    for pattern in (CHECKPOINTS, EVENTS):
        for path in glob.glob(os.path.join(run_dir, pattern)):
            os.remove(path)


def remove_partial_writes(run_dir):
    for stale in glob.glob(os.path.join(run_dir, PARTIAL_WRITES)):
        os.remove(stale)  # the final names are intact
