"""Command-line options of train.py.

The authors' flags keep their names and meanings (``-e/--exp_name``, ``--color_var``, ``--lr``,
``--max_step`` in epochs, ``--checkpoint``, ``--use_pretrain``, ``--train_baseline``, ...); every constant
of the methods is an option with the authors' value as default.
"""
import methods
from dataset.colored_mnist import add_palette_argument, color_variance
from utils import (Parser, add_data_dir, add_device, add_no_generate, add_precision, add_save_dir, add_trust_checkpoint,
                   nonneg_float, nonneg_int, number, positive_float, positive_int, run_name, seed_number, thread_count)


# Defaults of options that a method may set otherwise (its class's ``option_defaults``).
COMMON_DEFAULTS = {'lr': 0.01, 'lr_decay_period': 40, 'max_step': 100}


def method_default(method, key):
    """The default of option ``key`` for a run of ``method``."""
    cls = methods.METHODS.get(method)
    return (cls.option_defaults if cls else {}).get(key, COMMON_DEFAULTS[key])


def method_defaults_text(key):
    own = [f'{name}: {cls.option_defaults[key]:g}' for name, cls in sorted(methods.METHODS.items())
           if key in cls.option_defaults]
    return f' (default: {COMMON_DEFAULTS[key]:g}' + (f'; {", ".join(own)}' if own else '') + ')'


def build_parser(description='Learning Not to Learn on Colored-MNIST'):
    p = Parser(description=description)
    p.add_argument('-e', '--exp_name', required=True, type=run_name, help='experiment name: the run folder under --save_dir')
    p.add_argument('--method', choices=methods.method_names(), default=None,
                   help='lnl (the paper, the default); baseline, blindeye and gray are its comparison rows')
    p.add_argument('--train_baseline', action='store_true', help='the authors\' flag: same as --method baseline')

    d = p.add_argument_group('data')
    d.add_argument('--color_var', type=color_variance, default=0.020,
                   help='colour variance sigma^2 of the data (at most three decimals, as in the file name)')
    add_data_dir(d, help='folder of mnist_10color_jitter_var_*.npy files (default: data/ in this repository, '
                         'whatever the working folder)')
    add_no_generate(d)
    d.add_argument('--mnist_dir', default=None, help='raw MNIST IDX files to generate from (else cache/pip/torchvision)')
    add_palette_argument(d)
    d.add_argument('--data_seed', type=seed_number, default=None,
                   help='seed of a generated data file (default: the generator\'s fixed seed)')
    d.add_argument('--val_size', type=nonneg_int, default=0,
                   help='hold out this many training images for validation (the paper uses none)')
    d.add_argument('--n_class', type=number(int, 0, high=1000), default=10, help='number of classes')
    d.add_argument('--num_bins', type=number(int, 2, low_open=False, high=256), default=8,
                   help='colour bins per channel that h predicts (a channel value v in 0..255 is bin v * num_bins // 256)')

    o = p.add_argument_group('optimisation')
    o.add_argument('--lr', type=positive_float, default=None,
                   help='initial learning rate (authors: 0.01 baseline, 0.001 LNL)' + method_defaults_text('lr'))
    o.add_argument('--lr_decay_rate', type=positive_float, default=0.1, help='learning-rate decay factor')
    o.add_argument('--lr_decay_period', type=positive_int, default=None,
                   help='decay the learning rate every this many epochs' + method_defaults_text('lr_decay_period'))
    o.add_argument('--max_step', type=positive_int, default=None,
                   help='number of training epochs' + method_defaults_text('max_step'))
    o.add_argument('--batch_size', type=positive_int, default=128, help='mini-batch size')
    o.add_argument('--momentum', type=nonneg_float, default=0.9, help='SGD momentum')
    o.add_argument('--weight_decay', type=nonneg_float, default=0.0005, help='SGD weight decay')
    for hp in methods.hyper_parameters():  # each method's own constants, declared in its class
        o.add_argument(hp.flag, dest=hp.dest, type=hp.type, default=hp.default, help=hp.help, choices=hp.choices)
    o.add_argument('--feat_ch', type=number(int, 0, high=1024), default=32, help='channels of f\'s feature map (h\'s input)')

    r = p.add_argument_group('run')
    r.add_argument('--checkpoint', default=None, help='checkpoint to start from (with --use_pretrain) or to evaluate')
    r.add_argument('--use_pretrain', action='store_true', help='initialise f and g from --checkpoint (h starts fresh)')
    add_trust_checkpoint(r)
    r.add_argument('--resume', nargs='?', const='auto', default=None,
                   help='continue a run: a checkpoint path, or no value for the newest one in the run folder')
    r.add_argument('--overwrite', action='store_true',
                   help='start afresh in a run folder that already holds a run (its records and checkpoints '
                        'are deleted)')
    add_save_dir(r)
    r.add_argument('--log_step', type=positive_int, default=50, help='print the running losses every this many batches')
    r.add_argument('--save_step', type=positive_int, default=10, help='keep a checkpoint every this many epochs')
    r.add_argument('--random_seed', type=seed_number, default=1, help='seed of initialisation and batch order')
    add_device(r)
    r.add_argument('--dry_run', action='store_true', help='one batch per epoch: a fast end-to-end smoke run')
    r.add_argument('--no_monitor_test', dest='monitor_test', action='store_false',
                   help='skip the per-epoch test accuracy that is logged for the curves (never used for selection)')
    r.add_argument('--no_progress', action='store_true', help='no progress bars (for batch jobs)')
    r.add_argument('--threads', type=thread_count, default=None, help='CPU threads for PyTorch (default: PyTorch\'s)')

    s = p.add_argument_group('speed')
    s.add_argument('--no_channels_last', dest='channels_last', action='store_false',
                   help='keep the default memory layout instead of channels-last')
    add_precision(s, help='arithmetic of training: fp32, bf16 (bfloat16 autocast), or auto: bf16 where the device '
                        'computes it natively (a CUDA device with bf16, a CPU with AMX or AVX512-BF16), fp32 '
                        'elsewhere (the default; paired fp32/bf16 runs showed the same accuracy, see the '
                        'README); the run records which it used')
    s.add_argument('--amp', action='store_true', help='the same as --precision bf16')
    s.add_argument('--tf32', action='store_true',
                   help='on a CUDA device (Ampere and newer), let fp32 convolutions and matrix products use TF32 tensor '
                        'cores (faster, 10-bit mantissa); off by default, so that fp32 is float32 everywhere; recorded')
    s.add_argument('--compile', action='store_true', help='torch.compile f and g')
    s.add_argument('--deterministic', action='store_true',
                   help='bitwise-repeatable training on a GPU too (torch.use_deterministic_algorithms, the cuBLAS '
                        'workspace setting, no cuDNN autotuning; slower); on the CPU runs repeat bit for bit '
                        'without it')
    return p


def finalize(opt):
    if opt.train_baseline:
        opt.method = 'baseline'
    elif opt.method is None:
        opt.method = 'lnl'
    if opt.amp:
        opt.precision = 'bf16'
    for key in COMMON_DEFAULTS:
        if getattr(opt, key) is None:
            setattr(opt, key, method_default(opt.method, key))
    return opt


def get_option(argv=None):
    parser = build_parser()
    opt = parser.parse_args(argv)
    if opt.train_baseline and opt.method not in (None, 'baseline'):
        parser.error(f'--train_baseline trains the baseline and --method {opt.method} asks for another method: '
                     'give one of them')
    return finalize(opt)
