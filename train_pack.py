"""Train several runs of one method as one network, each into its own ordinary run folder:

    python train_pack.py --run "-e b1 --method baseline --color_var 0.020 --random_seed 1" \
                         --run "-e b2 --method baseline --color_var 0.030 --random_seed 1"

Each ``--run`` is a train.py command line; the runs may differ only in which run they are (``-e``, ``--color_var``,
``--random_seed``, ``--checkpoint`` ...: :data:`packing.MEMBER_OWN`). Each folder gets what train.py writes
(options.json with ``"pack": K``, train.log, results.jsonl, TensorBoard events, checkpoints, done), so test.py,
``collect_results`` and ``train.py --resume`` read it as any run; ``--resume`` on every ``--run`` continues an
interrupted pack. The numbers equal those of the same runs trained alone, to float rounding; what it saves is time
on a GPU, where one small network's step is bound by kernel launches (docs/speed.md).
"""
import argparse
import contextlib
import logging
import os
import shlex
import sys

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

import run_setup
from option import get_option
from packing import PackTrainer, check_packable
from trainer import Interrupted, NonFiniteLoss
from utils import RunLock, UserError, refuse_links, run_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train several runs of one method as one network (see the docstring).')
    p.add_argument('--run', action='append', required=True, metavar='"TRAIN.PY ARGS"',
                   help='one run: its train.py arguments as one string (give --run once per run, at least twice)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        run_args = [shlex.split(a) for a in args.run]
    except ValueError as e:
        raise UserError(f'--run: {e} (quote each run\'s arguments as one string)') from None
    opts = [get_option(a) for a in run_args]
    check_packable(opts)
    for opt in opts:  # before any run folder is written: a pack starts all its runs or none of them
        run_setup.refuse_previous_run(opt, os.path.join(opt.save_dir, opt.exp_name))
    deterministic = torch.are_deterministic_algorithms_enabled()
    with contextlib.ExitStack() as stack:
        runs = []
        for opt in opts:
            run_dir = os.path.join(opt.save_dir, opt.exp_name)
            refuse_links(run_dir)
            lock = RunLock(run_dir).acquire()
            logger = logging.getLogger(f'lnl.{run_dir}')
            stack.callback(release, lock, run_dir, logger)
            runs.append(run_setup.start(opt, run_dir, logger, members=len(opts)))
        stack.callback(torch.use_deterministic_algorithms, deterministic)
        stack.callback(torch.set_flush_denormal, False)
        pack = PackTrainer([r.trainer for r in runs])
        loggers = [r.logger for r in runs]
        try:
            with logging_redirect_tqdm(loggers=loggers):
                last = pack.fit()
        except Interrupted:
            for r, a in zip(runs, args.run):
                r.logger.info(f'interrupted; state saved in {r.trainer.last_saved}. Resume the pack with the same '
                              f'command, --resume added to each --run (this run alone: python train.py {a} --resume)')
            sys.exit(130)
        except NonFiniteLoss as exc:
            raise UserError(f'{exc.what}; the other runs keep their checkpoints; {exc.advice()}') from None
        except torch.OutOfMemoryError:
            raise UserError(f'out of memory with {len(runs)} runs of --batch_size {opts[0].batch_size} packed; '
                            'pack fewer runs') from None
        finally:
            for r in runs:
                r.writer.close()
        return [run_setup.finish(r, path) for r, path in zip(runs, last)]


def release(lock, run_dir, logger):
    lock.release()
    if os.path.isdir(run_dir) and os.listdir(run_dir) == ['.lock']:
        os.remove(lock.path)
        os.rmdir(run_dir)
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


if __name__ == '__main__':
    run_main(main)
