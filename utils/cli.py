"""The command-line parser of every entry point and the value checks of its options."""
import argparse
import math
import os


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after an option's help, unless the help already says it or there is no
    default worth showing (None, False, an empty list).

    argparse's ArgumentDefaultsHelpFormatter alone would print "(default: None)", "(default: False)" for
    every flag, "(default: True)" for a ``store_false`` one and a second default where the help states it,
    so this subclass skips those and leaves the rest to it."""

    def _get_help_string(self, action):
        text = action.help or ''
        if '(default' in text or action.default in (None, False, [], argparse.SUPPRESS) or \
                isinstance(action, argparse._StoreFalseAction) or \
                action.option_strings == [] and action.nargs in ('?', '*') and action.default is None:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """The command-line parser of every entry point: no abbreviated flags (``--max`` is not ``--max_step``),
    defaults in the help, and a close-match hint for a misspelled flag (``--max-step`` -> ``--max_step``)."""

    def __init__(self, *args, epilog_hint=None, **kwargs):
        kwargs.setdefault('allow_abbrev', False)
        kwargs.setdefault('formatter_class', _DefaultsFormatter)
        super().__init__(*args, **kwargs)
        self.epilog_hint = epilog_hint

    def error(self, message):
        import difflib
        import re
        known = [s for a in self._actions for s in a.option_strings]
        hints = []
        if 'unrecognized arguments' in message:
            for arg in message.split('unrecognized arguments:', 1)[1].split():
                flag = arg.split('=', 1)[0]
                if not flag.startswith('-'):
                    continue
                close = difflib.get_close_matches(flag.replace('-', '_').replace('__', '--', 1), known, n=1,
                                                  cutoff=0.6) or difflib.get_close_matches(flag, known, n=1)
                if close:
                    hints.append(f'{flag}: did you mean {close[0]}?')
            if self.epilog_hint:
                hints.append(self.epilog_hint)
        if hints:
            message = message + ' (' + '; '.join(hints) + ')'
        message = re.sub(r'\s+', ' ', message)
        super().error(message)


# -- value checks of command-line options ------------------------------------------------------------

def number(kind, low=None, low_open=True, high=None):
    """An argparse ``type``: a finite ``kind`` (int or float) above ``low`` (or at least ``low`` when not
    ``low_open``) and at most ``high``."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not a valid {kind.__name__}') from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f'must be a finite number, got {text}')
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f'must be {">" if low_open else ">="} {low}, got {text}')
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f'must be <= {high}, got {text}')
        return value
    parse.__name__ = kind.__name__
    return parse


def run_name(text):
    """An argparse ``type`` for ``-e/--exp_name``: one folder name under ``--save_dir`` (no separator, not
    ``.`` or ``..``, not empty, at most 200 bytes), so that a run never writes outside ``--save_dir``."""
    if text in ('', '.', '..') or '/' in text or os.sep in text or '\0' in text or \
            (os.altsep and os.altsep in text):
        raise argparse.ArgumentTypeError(f'{text!r} is not a run name: give one folder name (letters, digits, '
                                         '._-), not a path; the run goes to --save_dir/NAME')
    if len(text.encode('utf-8', 'surrogateescape')) > 200:
        raise argparse.ArgumentTypeError(f'a run name has at most 200 bytes, got {len(text)} characters')
    return text


def seed_number(text):
    """An argparse ``type`` for seeds: an integer in 0 .. 2**32 - 1 (what NumPy's and PyTorch's generators
    take alike)."""
    return number(int, 0, low_open=False, high=2 ** 32 - 1)(text)


def existing_or_new_folder(text):
    """An argparse ``type`` for a folder option: refused when a file (not a folder) is there, or above it."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f'{text} is a file, not a folder; give a folder (it is made when missing)')
    above = os.path.dirname(os.path.abspath(text))
    while not os.path.exists(above) and os.path.dirname(above) != above:
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        raise argparse.ArgumentTypeError(f'{text} lies inside the file {above}; give a folder (it is made when missing)')
    return text


def usable_cores():
    """The CPU cores this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def thread_count(text):
    """An argparse ``type`` for ``--threads``: 1 .. the cores this process may use."""
    cores = usable_cores()
    value = number(int, 0)(text)
    if value > cores:
        raise argparse.ArgumentTypeError(f'{value} threads on {cores} available core(s) would oversubscribe them '
                                         f'(every step waits for the slowest thread); give at most {cores}')
    return value


positive_float = number(float, 0.0)
nonneg_float = number(float, 0.0, low_open=False)
positive_int = number(int, 0)
nonneg_int = number(int, 0, low_open=False)


# -- options several entry points share, declared once ------------------------------------------------

def add_data_dir(parser, help='folder of the data files, generated there when missing (default: data/ in this '
                              'repository, whatever the working folder)'):
    from utils import DATA_DIR
    parser.add_argument('--data_dir', default=DATA_DIR, type=existing_or_new_folder, help=help)


def add_no_generate(parser):
    parser.add_argument('--no_generate', action='store_true', help='fail instead of generating a missing data file')


def add_save_dir(parser):
    from utils import RUNS_DIR
    parser.add_argument('--save_dir', default=RUNS_DIR, type=existing_or_new_folder,
                        help='parent folder of run folders (default: runs/ in this repository, whatever the working '
                             'folder)')


def add_device(parser, default='auto', help='auto (cuda when available), cpu, cuda or cuda:N'):
    parser.add_argument('--device', default=default, help=help)


def add_trust_checkpoint(parser):
    parser.add_argument('--trust_checkpoint', action='store_true',
                        help='load a --checkpoint that holds more than tensors and plain values with full unpickling '
                             '(runs any code in the file: only for files you trust)')


def add_precision(parser, default='auto', help='train.py --precision: fp32, bf16 (bfloat16 autocast) or auto (bf16 '
                                               'where the device computes it natively, fp32 elsewhere)'):
    parser.add_argument('--precision', choices=('fp32', 'bf16', 'auto'), default=default, help=help)
