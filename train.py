"""Train one method on one colour variance: ``python train.py -e NAME --method lnl --color_var 0.020``.

A run is one folder ``<save_dir>/<exp_name>/`` with ``options.json``, ``train.log``, ``results.jsonl``
(one JSON object per epoch), TensorBoard events, checkpoints and a ``done`` marker at the end.
"""
import logging
import os
import shlex
import sys

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from option import get_option
from run_setup import finish, start, warnings_for  # noqa: F401  (warnings_for: the lines printed before training)
from trainer import Interrupted, NonFiniteLoss
from utils import RunLock, UserError, refuse_links, run_main


def command_line(argv, drop_resume=False, drop=()):
    """The command that ran, quoted so that it can be pasted; ``drop_resume`` removes ``--resume [PATH]`` and
    ``--overwrite`` (the printed command then continues the run instead of replacing it); ``drop``: options
    with a value to remove (the advice after a diverging run gives its own ``--lr``)."""
    args = list(argv)
    if drop_resume or drop:
        out, skip = [], False
        for i, a in enumerate(args):
            if skip:
                skip = False
                continue
            if a in drop:
                skip = True
                continue
            if drop_resume and a == '--resume':
                nxt = args[i + 1] if i + 1 < len(args) else None
                skip = nxt is not None and not nxt.startswith('-')
                continue
            if any(a.startswith(f'{d}=') for d in drop) or (drop_resume and (a.startswith('--resume=')
                                                                                or a == '--overwrite')):
                continue
            out.append(a)
        args = out
    return shlex.join(['python'] + args)


def main(argv=None):
    opt = get_option(argv)
    run_dir = os.path.join(opt.save_dir, opt.exp_name)
    refuse_links(run_dir)
    lock = RunLock(run_dir).acquire()  # a second process training in this folder refuses here
    logger = logging.getLogger(f'lnl.{run_dir}')
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return train(opt, run_dir, argv, logger)
    finally:
        torch.use_deterministic_algorithms(deterministic)  # main() may run inside another process (the sweep)
        torch.set_flush_denormal(False)  # PyTorch's default; a method may have turned it on (its class's flush_denormal)
        lock.release()
        if os.listdir(run_dir) == ['.lock']:  # a start that failed before writing anything leaves no folder
            os.remove(lock.path)
            os.rmdir(run_dir)
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)


def train(opt, run_dir, argv, logger):
    run = start(opt, run_dir, logger)
    tr, writer = run.trainer, run.writer
    argv_used = sys.argv if argv is None else ['train.py'] + list(argv)
    try:
        with logging_redirect_tqdm(loggers=[logger]):  # log lines print above the progress bars
            last = tr.fit()
    except Interrupted as exc:
        logger.info(f'interrupted; state saved in {exc}. Resume with: '
                    f'{command_line(argv_used, drop_resume=True)} --resume')
        writer.close()
        sys.exit(130)
    except NonFiniteLoss as exc:  # the remedy as a command to paste
        raise UserError(f'{exc.what}; {exc.advice(command_line(argv_used, drop_resume=True, drop=("--lr",)))}') from None
    except torch.OutOfMemoryError:
        raise UserError(f'out of memory at --batch_size {opt.batch_size} on {tr.method.device}; lower --batch_size') \
            from None
    finally:
        writer.close()
    return finish(run, last)


if __name__ == '__main__':
    run_main(main)
