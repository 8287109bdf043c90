"""Train one method on one colour variance: ``python train.py -e NAME --method lnl --color_var 0.020``.

A run is one folder ``<save_dir>/<exp_name>/`` with ``options.json``, ``train.log``, ``results.jsonl``
(one JSON object per epoch), TensorBoard events, checkpoints and a ``done`` marker at the end.
"""
import glob
import os
import sys

import torch

from dataset import colored_mnist
from dataset.tensors import load_splits
from option import get_option
from utils import UserError, atomic_write_text, run_main
import trainer as T


def prepare_data(opt):
    """The path of the variance's data file, generated first when it is missing (unless --no_generate)."""
    seed = colored_mnist.DEFAULT_SEED if opt.data_seed is None else opt.data_seed
    return colored_mnist.ensure(opt.data_dir, opt.color_var, generate_missing=not opt.no_generate,
                                mnist_dir=opt.mnist_dir, seed=seed, palette=opt.palette)


def main(argv=None):
    opt = get_option(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    device = T.resolve_device(opt.device)
    run_dir = os.path.join(opt.save_dir, opt.exp_name)

    resume = None
    if opt.resume:
        if opt.resume == 'auto':
            resume = T.newest_checkpoint(run_dir)
            if resume is None:
                raise UserError(f'--resume: no intact checkpoint in {run_dir}; start the run without --resume')
        else:
            ckpt = T.read_checkpoint(opt.resume)
            if ckpt.get('format') != T.CHECKPOINT_FORMAT:
                raise UserError(f'--resume {opt.resume}: not a full training checkpoint of this project '
                                '(an authors\' file can start a run with --checkpoint and --use_pretrain)')
            resume = (opt.resume, ckpt)
        # refuse a mismatched run before spending time on the data
        T.check_resume_options(resume[1].get('options', {}), opt, resume[0])
    pretrain = None
    if opt.use_pretrain:
        if not opt.checkpoint:
            raise UserError('--use_pretrain needs --checkpoint PATH (e.g. the baseline run\'s checkpoint_last.pth)')
        pretrain = T.read_checkpoint(opt.checkpoint)

    path = prepare_data(opt)
    T.seed_everything(opt.random_seed)
    method_cls = T.METHODS[opt.method]
    notes = []
    splits = load_splits(path, gray=method_cls.gray, val_size=opt.val_size, seed=opt.random_seed,
                         color_var=opt.color_var, palette=opt.palette, log=notes.append)
    splits = {k: v.to(device, channels_last=opt.channels_last) for k, v in splits.items()}

    os.makedirs(run_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(run_dir, '.checkpoint_*.tmp')):
        os.remove(stale)  # left by a process killed while saving; the final names are intact
    done_marker = os.path.join(run_dir, 'done')
    if os.path.exists(done_marker) and resume is None:
        os.remove(done_marker)
    if resume is None and os.path.exists(os.path.join(run_dir, 'results.jsonl')):
        os.remove(os.path.join(run_dir, 'results.jsonl'))  # a fresh start replaces the old records
    logger = T.setup_logger(run_dir)
    for note in notes:
        logger.info(note)
    T.write_options(run_dir, opt)
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(logdir=run_dir)

    method = T.build_method(opt, device)
    if pretrain is not None:
        T.load_net_weights(method.net, pretrain['net_state_dict'], opt.checkpoint)
        logger.info(f'f and g initialised from {opt.checkpoint}; h starts fresh')
    tr = T.Trainer(opt, method, splits, run_dir, logger, writer)
    if resume is not None:
        tr.resume(*resume)
    logger.info(f'{opt.method} on sigma^2={opt.color_var:.3f} ({path}), {len(splits["train"])} training images, '
                f'device {device}, epochs {tr.start_epoch}->{opt.max_step}')
    try:
        last = tr.fit()
    except T.Interrupted as exc:
        again = [a for a in sys.argv if a != '--resume']
        logger.info(f'interrupted; state saved in {exc}. Resume with: python {" ".join(again)} --resume')
        writer.close()
        sys.exit(130)
    finally:
        writer.close()
    if last is None:
        last = tr.save('checkpoint_last.pth', tr.start_epoch)
    logger.info(f'done: {opt.max_step} epochs; checkpoint {last}; evaluate with: python test.py -e {opt.exp_name} '
                f'--save_dir {opt.save_dir} --data_dir {opt.data_dir}')
    atomic_write_text(done_marker, last + '\n')
    return last


if __name__ == '__main__':
    run_main(main)
