"""What each run of a sweep is: its folder name, its train.py and test.py arguments, its learning rate, and the
train.py options the sweep sets for every run itself."""
import os

import methods


def run_name(method, color_var, seed):
    """The run folder's name; train.sh names its runs the same way."""
    return f'{method}_var{float(color_var):.3f}_seed{seed}'


def base_file(folder, base, color_var, seed):
    """The start of the runs at ``color_var`` and ``seed`` in a folder of weight files (``--base_checkpoint DIR``):
    the file named as the ``base`` run, as pretrained/ names its files."""
    return os.path.join(folder, run_name(base, color_var, seed) + '.pth')


def make_spec(args, m, cv, seed, out):
    """The run of method ``m`` at ``cv`` and ``seed`` in folder ``out``: its train.py and test.py arguments."""
    cls = methods.get(m)
    name = run_name(m, cv, seed)
    train = ['-e', name, '--method', m, '--color_var', f'{cv:.3f}', '--random_seed', str(seed),
             '--lr', str(learning_rate(cls, args)), '--save_dir', out, '--data_dir', args.data_dir,
             '--palette', args.palette] + ([] if args.show_output else ['--no_progress']) + list(args.train_args)
    if cls.start_from and args.unlearn_max_step is not None:
        train += ['--max_step', str(args.unlearn_max_step)]  # the last --max_step counts
    test = ['-e', name, '--save_dir', out, '--data_dir', args.data_dir] + ([] if args.show_output else ['--no_progress'])
    if cls.probed and not args.no_probe:
        test += ['--probe']
    spec = {'name': name, 'method': m, 'color_var': cv, 'seed': seed, 'phase': int(bool(cls.start_from)),
            'run_dir': os.path.join(out, name), 'train': train, 'test': test}
    start = getattr(args, 'base_checkpoint', None)
    if cls.start_from and start:  # a finished baseline's weights given as a file, or a folder of them (pretrained/)
        spec['base_file'] = base_file(start, cls.start_from, cv, seed) if os.path.isdir(start) else start
    elif cls.start_from:
        # the run it starts from (in --base_dir, default --out); --checkpoint is added when it starts
        spec['base'] = make_spec(args, cls.start_from, cv, seed, args.base_dir or out)
    return spec


def make_specs(args):
    """One dict per run, in an order where every pretrained start comes after its baseline."""
    chosen = list(dict.fromkeys(args.methods))
    specs = [make_spec(args, m, cv, seed, args.out) for cv in args.color_vars for seed in args.seeds for m in chosen]
    return sorted(specs, key=lambda s: s['phase'])  # stable: the order above within each phase


def learning_rate(cls, args):
    """The run's learning rate: the method's own (its class's ``lr``) unless the sweep overrides it."""
    override = args.unlearn_lr if cls.start_from else args.baseline_lr
    return cls.lr if override is None else override


# train.py options the sweep sets for every run itself, and where to ask for them instead.
RESERVED = {
    '-e': 'the run folder is named <method>_var<sigma^2>_seed<seed> under --out',
    '--exp_name': 'the run folder is named <method>_var<sigma^2>_seed<seed> under --out',
    '--method': 'give --methods before -- (train.sh: baseline then LNL)',
    '--train_baseline': 'give --methods before -- (train.sh: baseline then LNL)',
    '--color_var': 'give --color_vars before -- (train.sh: COLOR_VAR=0.035 bash train.sh)',
    '--random_seed': 'give --seeds before -- (train.sh: SEED=2 bash train.sh)',
    '--save_dir': 'give --out before -- (train.sh: SAVE_DIR=...)',
    '--data_dir': 'give --data_dir before -- (train.sh: DATA_DIR=...)',
    '--palette': 'give --palette before --',
    '--lr': 'give --baseline_lr or --unlearn_lr before --',
    '--use_pretrain': 'LNL and BlindEye start from their baseline run (--base_dir to take it from another sweep)',
    '--checkpoint': 'LNL and BlindEye start from their baseline run (--base_dir to take it from another sweep)',
    '--resume': 'a relaunch resumes unfinished runs by itself',
    '--overwrite': 'give --overwrite before -- (it trains again the runs whose options differ)',
}
