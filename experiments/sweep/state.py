"""Where a run of the sweep stands: its state on disk, how it differs from what the sweep asks of it, and the
finished state it starts from (a run of this sweep or of ``--base_dir``, or a file given as ``--base_checkpoint``)."""

import checkpoint as C
import methods
import run_folder
from dataset.colored_mnist import DEFAULT_PALETTE, DEFAULT_SEED
from experiments import records
from experiments.sweep import devices
from utils import UserError, sha256_file


def has_test_record(spec):
    """Whether the run holds a test record of its last trained epoch on its sigma^2 (for a grey-input
    method: of the grey view the tables report)."""
    view = records.gray_view_of_tag('test') if methods.get(spec['method']).gray else None
    return records.current_test(run_folder.read_results(spec['run_dir']), spec['color_var'], gray_view=view)[0] \
        is not None


def requested_options(train_argv):
    """train.py's options for ``train_argv``: the defaults and the sweep's arguments, as the run will see them."""
    from option import get_option
    return vars(get_option(train_argv))


def differences(spec, train_argv=None, recorded=None):
    """How a run in ``spec['run_dir']`` differs from what the sweep asks of it: ``(diffs, extend)``, where
    ``diffs`` lists ``(option, recorded, requested)`` over the run-defining options (a run that trained more
    epochs than asked included) and ``extend`` is true when the run trained fewer epochs than asked (it is
    resumed to the requested number; the schedule does not depend on the total). ``(None, False)`` when the
    folder holds no readable options.json. ``recorded``: the run's options when the caller has read them."""
    if recorded is None:
        recorded = run_folder.read_options(spec['run_dir'])
    if not recorded:
        return None, False
    asked = requested_options(spec['train'] if train_argv is None else train_argv)
    from option import COMMON_DEFAULTS, build_parser, method_default
    parser = build_parser()

    def default(k):
        return method_default(asked['method'], k) if k in COMMON_DEFAULTS else parser.get_default(k)
    keys = [k for k in methods.run_defining(asked['method']) if k not in ('amp', 'precision')]
    diffs = [(k, recorded.get(k, default(k)), asked.get(k)) for k in keys if recorded.get(k, default(k)) != asked.get(k)]
    # precision: 'auto' matches a run that asked for 'auto' too; otherwise the arithmetic must be the same
    if not (asked['precision'] == 'auto' and recorded.get('precision_requested', 'auto') == 'auto'):
        wanted = asked['precision']
        if wanted == 'auto':  # what the run would resolve it to, found without CUDA in this process
            wanted = devices.auto_precision(asked.get('device') or 'auto')
        if recorded.get('precision') != wanted:
            diffs.append(('precision', recorded.get('precision'), wanted))
    done_epochs, asked_epochs = recorded.get('max_step'), asked['max_step']
    if isinstance(done_epochs, int) and done_epochs > asked_epochs:
        diffs.append(('max_step', done_epochs, asked_epochs))
    return diffs, isinstance(done_epochs, int) and done_epochs < asked_epochs


def describe(diffs):
    return ', '.join(f'--{k} {new} (run: {old})' for k, old, new in diffs)


def status(spec):
    """'running' (another process trains in the folder), 'done', 'trained' (no test record yet),
    'partial' (checkpoints but no done marker) or 'new'."""
    found = run_folder.state(spec['run_dir'])
    if found == 'finished':
        return 'done' if has_test_record(spec) else 'trained'
    return found


def start_checkpoint(spec):
    """``(path, sha256)`` of the finished state of the run ``spec`` starts from, or ``(None, reason)`` when
    that run is not finished or does not match what the sweep asks of it. A start given as a file
    (``--base_checkpoint``) is that file."""
    if spec.get('base_file'):
        return spec['base_file'], sha256_file(spec['base_file'])
    base = spec['base']
    path, why = run_folder.finish(base['run_dir'])
    if path is None:
        return None, f'{base["name"]} is not finished ({why})'
    diffs, extend = differences(base)
    if diffs or extend:
        return None, f'{base["name"]} does not match this request ({describe(diffs) or "fewer epochs"})'
    return path, sha256_file(path)


def check_start_file(path, base, color_vars, request, seed=None):
    """``UserError`` unless the checkpoint file ``path`` is a start the sweep would take from a run of its own
    for runs that start from a ``base`` run, at ``color_vars``, asked as ``request`` (train.py's options, see
    :func:`requested_options`): a finished ``base`` run (its epoch is its ``--max_step``) on the same data
    (sigma^2, palette, data seed), and a ``--dry_run`` one only for a dry run; with ``seed``, a run of that
    ``--random_seed`` (a file taken from a folder by its name, which names the seed)."""
    ckpt = C.read_checkpoint(path)
    C.check_fields(ckpt, path)
    opts = ckpt.get('options') or {}
    if opts.get('method') != base:
        raise UserError(f'--base_checkpoint {path} is a {opts.get("method")} checkpoint; the methods asked for start '
                        f'from a {base} one')
    trained = opts.get('color_var')
    if trained is None or any(f'{cv:.3f}' != f'{float(trained):.3f}' for cv in color_vars):
        if seed is not None:
            raise UserError(f'--base_checkpoint {path} was trained on sigma^2 = {trained}, and its name says '
                            f'{color_vars[0]:.3f}; name each file of the folder as the run it holds')
        raise UserError(f'--base_checkpoint {path} was trained on sigma^2 = {trained}; give --color_vars {trained} '
                        '(train a baseline for the other variances)')
    epoch, last = ckpt.get('epoch', ckpt.get('step')), opts.get('max_step')
    if not isinstance(last, int) or epoch != last:
        held = f'epoch {epoch} of the {last} its run asked for' if isinstance(last, int) else \
            f'epoch {epoch}, and its options record no --max_step'
        raise UserError(f'--base_checkpoint {path} is not a finished run ({held}); give the checkpoint a finished '
                        'run ended with (the one its done marker names)')
    if seed is not None and opts.get('random_seed') != seed:
        raise UserError(f'--base_checkpoint {path} is a run of --random_seed {opts.get("random_seed")}, and its name '
                        f'says seed {seed}; name each file of the folder as the run it holds')
    palette = opts.get('palette') or DEFAULT_PALETTE
    if palette != request['palette']:
        raise UserError(f'--base_checkpoint {path} was trained on data of the {palette} palette, and the runs asked '
                        f'for use the {request["palette"]} palette; give --palette {palette}, or a baseline trained '
                        f'on the {request["palette"]} palette')
    seed = next((s for s in (opts.get('data_seed'), opts.get('data_file_seed')) if s is not None), DEFAULT_SEED)
    wanted = DEFAULT_SEED if request.get('data_seed') is None else request['data_seed']
    if seed != wanted:
        raise UserError(f'--base_checkpoint {path} was trained on the data of --data_seed {seed}, and the runs asked '
                        f'for use --data_seed {wanted}; give a baseline trained on the same data')
    if opts.get('dry_run') and not request.get('dry_run'):
        raise UserError(f'--base_checkpoint {path} is a --dry_run checkpoint (one batch per epoch, not a trained '
                        'baseline); give a finished real baseline, or add --dry_run after -- for a dry run')
