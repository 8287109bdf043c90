"""The registry every command reads the methods from: ``--method`` name -> class, the options each method adds,
the options that define a run of it, and the card that reports it.

A class states everything the rest of the code asks about its method (see :class:`methods.base.Method`): the
command-line options, the sweep's order and learning rates, test.py's choice of networks and input view; its
:class:`Card` holds how reports name and draw it. A new method is one class decorated with :func:`register`.
"""
import contextlib
import dataclasses

from utils import nonneg_float, resolve_arithmetic


@dataclasses.dataclass(frozen=True)
class HyperParameter:
    """A constant of one method's objective: a train.py option (``flag``, stored as ``dest``) that is
    run-defining for the runs of that method."""
    flag: str
    dest: str
    default: float
    help: str
    type: object = nonneg_float
    choices: tuple = None



@dataclasses.dataclass(frozen=True)
class Card:
    """How tables and figures show a method: its name, the colour of its curves, and numbers its own authors
    report (``published``: {sigma^2: accuracy}, labelled ``published_by`` in tables; the paper's four methods
    take theirs from the paper's Fig. 4)."""
    display: str
    plot_color: str = None
    published: dict = dataclasses.field(default_factory=dict)
    published_by: str = 'paper'


# Options that define what a run computes: resuming with other values would mix two runs. Besides the
# data and the objective, the arithmetic (--precision, --no_channels_last, --compile) and --dry_run (one batch per
# epoch) change what an epoch computes. Where it runs (--device, --threads) and how it reports do not. Each
# method's own constants (its HyperParameter options) are run-defining for its runs.
RUN_DEFINING = ('method', 'color_var', 'batch_size', 'num_bins', 'feat_ch', 'n_class', 'val_size', 'random_seed',
                'momentum', 'weight_decay', 'lr', 'lr_decay_rate', 'lr_decay_period', 'data_seed', 'palette',
                'amp', 'precision', 'tf32', 'channels_last', 'compile', 'dry_run', 'deterministic')


METHODS = {}


def register(cls):
    """Class decorator: make ``cls`` a ``--method`` of every command."""
    if not cls.name:
        raise ValueError(f'{cls.__name__} has no name')
    METHODS[cls.name] = cls
    return cls


@contextlib.contextmanager
def registered(*classes):
    """A temporary registry with ``classes`` added (for experiments and tests); the old one returns after."""
    saved = dict(METHODS)
    try:
        for cls in classes:
            register(cls)
        yield METHODS
    finally:
        METHODS.clear()
        METHODS.update(saved)


def method_names():
    return sorted(METHODS)


def hyper_parameters():
    """Every registered method's hyper-parameters, each once (by ``dest``), in registry order."""
    seen = {}
    for cls in METHODS.values():
        for hp in cls.hyper_parameters:
            seen.setdefault(hp.dest, hp)
    return list(seen.values())


def get(name):
    """The class of ``name``; ``KeyError`` names the registered ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f'unknown method {name!r}; registered: {", ".join(method_names())}') from None


def build_method(opt, device, members=1):
    """The method of ``opt`` on ``device``; ``members > 1``: that many runs of it as one (a packable method's)."""
    resolve_arithmetic(opt, device)
    if members > 1:
        return get(opt.method)(opt, device, members=members)
    return get(opt.method)(opt, device)


def run_defining(method):
    """The run-defining options of a run of ``method``: the common ones and the method's own."""
    cls = METHODS.get(method)
    return RUN_DEFINING + tuple(hp.dest for hp in (cls.hyper_parameters if cls else ()))


def display_name(method):
    """A method's name in tables and figures (its card's), or the registry key of an unregistered one."""
    cls = METHODS.get(method)
    return cls.card.display if cls and cls.card else method


def plot_color(method):
    cls = METHODS.get(method)
    return cls.card.plot_color if cls and cls.card else None
