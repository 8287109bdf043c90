"""Making one run ready to train and finishing it: device and arithmetic, the checks before any work, the data, the
run folder (options.json, train.log, TensorBoard events), the method from its start or its checkpoint and its
:class:`trainer.Trainer` (:func:`start`); the last checkpoint and the done marker (:func:`finish`). train.py trains
one run between the two, train_pack.py several runs as one.
"""
import json
import logging
import os
import shlex
import sys

import torch

import checkpoint as C
import methods
import run_folder
from dataset import colored_mnist
from dataset.tensors import DRY_RUN_DATA, load_splits
from trainer import Trainer
from utils import (UserError, atomic_write_text, environment, native_bf16, resolve_arithmetic, resolve_device,
                   seed_everything, sha256_file)


def prepare_data(opt):
    """The path of the variance's data file, generated first when it is missing (unless --no_generate)."""
    seed = colored_mnist.DEFAULT_SEED if opt.data_seed is None else opt.data_seed
    return colored_mnist.ensure(opt.data_dir, opt.color_var, generate_missing=not opt.no_generate,
                                mnist_dir=opt.mnist_dir, seed=seed, palette=opt.palette)


def warnings_for(opt, device=None):
    """Choices that are allowed but rarely meant: one line each, before training starts (``device``: the run's,
    to say when bf16 is emulated there)."""
    out = []
    if device is not None and getattr(opt, 'precision', None) == 'bf16' and not native_bf16(device):
        where = 'a CPU without native bfloat16 (neither amx_bf16 nor avx512_bf16 in its flags)' \
            if device.type == 'cpu' else f'{device}, which does not compute bfloat16 natively'
        out.append(f'warning: --precision bf16 on {where}: autocast emulates it and training takes several times as '
                   'long as in fp32 (about ten times on a 2-core AVX2 CPU); --precision auto or fp32 trains in fp32 '
                   'here (paired fp32/bf16 runs agree within the spread between seeds: docs/speed.md)')
    cls = methods.get(opt.method)
    if cls.start_from and not opt.use_pretrain and not opt.resume:
        out.append(f'warning: --method {opt.method} from scratch at lr {opt.lr}; the paper\'s recipe starts it from a '
                   f'trained {cls.start_from} at lr {cls.lr} (bash train.sh, or --use_pretrain --checkpoint '
                   f'runs/<{cls.start_from} run>/checkpoint_last.pth --lr {cls.lr})')
    if opt.method in ('csad', 'csad_base') and getattr(opt, 'precision', 'fp32') not in ('fp32', 'auto'):
        chosen = ' (--precision auto chose it on this machine)' if getattr(opt, 'precision_requested', None) == 'auto' \
            else ''
        out.append(f'warning: --method {opt.method} in {opt.precision}{chosen}; CSAD\'s recipe and the results of '
                   'docs/csad.md are fp32: add --precision fp32 to compare with them')
    class_epochs = getattr(opt, 'csad_class_epochs', None)
    if opt.method == 'csad_base' and class_epochs is not None and opt.max_step <= class_epochs:
        out.append(f'warning: --method csad_base for {opt.max_step} epoch(s) never trains its bias branch: its first '
                   f'--csad_class_epochs {class_epochs} epochs train the digits only, so a csad run started from it '
                   f'starts with an untrained bias branch (the recipe: --max_step 40)')
    if not 0.005 <= opt.color_var <= 0.1:
        out.append(f'warning: --color_var {opt.color_var} is outside 0.005..0.1 (the paper uses 0.020..0.050): '
                   'below it every digit\'s colour is nearly constant, above it the colours of the classes overlap '
                   'so much that there is little bias to learn')
    return out


def setup_logger(logger, run_dir):
    """Log to ``run_dir/train.log`` and to the console."""
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    logger.propagate = False
    fmt = logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S')
    for handler in (logging.FileHandler(run_folder.file(run_dir, run_folder.TRAIN_LOG)), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


class Run:
    """One run made ready to train (:func:`start`): its options, folder, logger, TensorBoard writer, trainer."""

    def __init__(self, opt, run_dir, logger, writer, trainer, done_marker):
        self.opt, self.run_dir, self.logger, self.writer = opt, run_dir, logger, writer
        self.trainer, self.done_marker = trainer, done_marker


def refuse_previous_run(opt, run_dir):
    """A fresh start (no --resume) into a folder that holds a run needs --overwrite."""
    earlier = [] if opt.resume else run_folder.previous_run(run_dir)
    if earlier and not opt.overwrite:
        shown = ', '.join(earlier[:3]) + (f' and {len(earlier) - 3} more' if len(earlier) > 3 else '')
        raise UserError(f'run folder {run_dir} already holds a run ({shown}); continue it with --resume, '
                        'replace it with --overwrite, or choose another --exp_name')


def start(opt, run_dir, logger, members=1):
    """Everything before the epochs: device, checks, data, run folder, logger, options.json, the method (from
    its start or its checkpoint) and its :class:`trainer.Trainer`. ``members``: the run trains in a pack of that
    many (recorded in options.json as ``pack``; the numbers are the same as alone, the epoch times the pack's)."""
    opt.pack = members
    if opt.threads:
        torch.set_num_threads(opt.threads)
    if opt.deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # before the first cuBLAS call
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    device = resolve_device(opt.device)
    resolve_arithmetic(opt, device)  # before the resume check: a run records the precision it used
    opt.environment = environment(device)  # where and with what it ran (options.json)
    for line in warnings_for(opt, device):
        print(line, file=sys.stderr)

    resume = None
    if opt.resume:
        if opt.overwrite:
            raise UserError('--resume continues a run and --overwrite replaces it: give one of them')
        if opt.resume == 'auto':
            resume = run_folder.newest_checkpoint(run_dir)
            if resume is None:
                raise UserError(f'--resume: no intact checkpoint in {run_dir}; start the run without --resume')
        else:
            ckpt = C.read_checkpoint(opt.resume, trust=opt.trust_checkpoint)
            if ckpt.get('format') != C.CHECKPOINT_FORMAT:
                raise UserError(f'--resume {opt.resume}: not a full training checkpoint of this project '
                                '(an authors\' file can start a run with --checkpoint and --use_pretrain)')
            C.check_fields(ckpt, opt.resume, resume=True)
            resume = (opt.resume, ckpt)
        # refuse a mismatched run before spending time on the data
        C.check_resume_options(resume[1].get('options', {}), opt, resume[0])
    else:
        refuse_previous_run(opt, run_dir)
    pretrain = None
    if opt.checkpoint and not opt.use_pretrain and not opt.resume:
        raise UserError(f'--checkpoint {opt.checkpoint} is read only with --use_pretrain (f and g start from it): add '
                        '--use_pretrain, or drop --checkpoint to train from scratch')
    if opt.use_pretrain:
        if not opt.checkpoint:
            raise UserError('--use_pretrain needs --checkpoint PATH (e.g. the baseline run\'s checkpoint_last.pth)')
        pretrain = C.read_checkpoint(opt.checkpoint, trust=opt.trust_checkpoint)
    # Which file the run started from (recorded in options.json): the sweep redoes a run whose start changed.
    # A resumed run keeps what its first start recorded; its weights come from its own checkpoint.
    if resume is not None:
        opt.pretrain_sha256 = resume[1].get('options', {}).get('pretrain_sha256')
    else:
        opt.pretrain_sha256 = sha256_file(opt.checkpoint) if pretrain is not None else None

    path = prepare_data(opt)
    seed_everything(opt.random_seed)
    method_cls = methods.get(opt.method)
    if method_cls.flush_denormal and device.type == 'cpu':
        torch.set_flush_denormal(True)
    notes = []
    splits = load_splits(path, gray=method_cls.gray, val_size=opt.val_size, seed=opt.random_seed,
                         color_var=opt.color_var, palette=opt.palette, log=notes.append, num_bins=opt.num_bins,
                         first=DRY_RUN_DATA if opt.dry_run else None, data_seed=opt.data_seed,
                         check_data_seed=True, seed_found=lambda s: setattr(opt, 'data_file_seed', s))
    check_against_data(opt, splits)
    splits = {k: v.to(device, channels_last=opt.channels_last) for k, v in splits.items()}

    run_folder.remove_partial_writes(run_dir)
    done_marker = run_folder.file(run_dir, run_folder.DONE)
    if os.path.exists(done_marker):
        os.remove(done_marker)  # written again when this process finishes (a resumed run may train longer)
    if resume is None:
        run_folder.clear(run_dir)  # only with --overwrite, or nothing to clear
    setup_logger(logger, run_dir)
    for note in notes:
        logger.info(note)
    logger.info(f'run folder {os.path.abspath(run_dir)}; data {os.path.abspath(path)}')
    atomic_write_text(run_folder.file(run_dir, run_folder.OPTIONS), json.dumps(vars(opt), indent=2, sort_keys=True))
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(logdir=run_dir)

    method = methods.build_method(opt, device)
    if pretrain is not None:
        taken = method.load_start(pretrain, opt.checkpoint)
        logger.info(f'{taken} initialised from {opt.checkpoint} (sha256 {opt.pretrain_sha256}); the rest starts fresh')
    tr = Trainer(opt, method, splits, run_dir, logger, writer)
    if resume is not None:
        tr.resume(*resume)
    logger.info(f'{opt.method} on sigma^2={opt.color_var:.3f} ({path}), {len(splits["train"])} training images, '
                f'device {device}, precision {opt.precision}, epochs {tr.start_epoch}->{opt.max_step}')
    return Run(opt, run_dir, logger, writer, tr, done_marker)


def finish(run, last):
    """After the epochs: the last checkpoint (one is written when no epoch was left to train), the done marker."""
    opt, tr, logger = run.opt, run.trainer, run.logger
    if last is None:
        last = tr.save(run_folder.LAST, tr.start_epoch)
    test_cmd = shlex.join(['python', 'test.py', '-e', opt.exp_name, '--save_dir', opt.save_dir,
                           '--data_dir', opt.data_dir])
    logger.info(f'done: {opt.max_step} epochs; checkpoint {last}; evaluate with: {test_cmd}')
    atomic_write_text(run.done_marker, last + '\n')
    return last


def check_against_data(opt, splits):
    """Options that must agree with the data file: one clear line instead of an error deep in training."""
    for name, split in splits.items():
        if len(split) == 0:
            raise UserError(f'the {name} split of the data file is empty; regenerate the file')
    labels = splits['train'].labels
    top = int(labels.max()) + 1
    if top > opt.n_class:
        raise UserError(f'--n_class {opt.n_class} is smaller than the data\'s {top} classes (labels 0..{top - 1})')
    if opt.batch_size > len(splits['train']):
        raise UserError(f'--batch_size {opt.batch_size} is larger than the training set '
                        f'({len(splits["train"])} images); lower it')
