"""Small helpers shared by every entry point: user-facing errors, atomic file writes, JSON-lines records,
run-folder locks, the command-line parser and its value checks, text tables, and the device, precision and
seeds of a run."""
import argparse
import contextlib
import json
import math
import os
import random
import sys
import tempfile


REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
# Default folders of the data files and the runs, the same whatever the working folder: every entry point
# (train.py, test.py, the sweep, the generator) reads and writes the same ones unless told otherwise.
DATA_DIR = os.path.join(REPO_ROOT, 'data')
RUNS_DIR = os.path.join(REPO_ROOT, 'runs')


class UserError(Exception):
    """A mistake the user can fix (bad option, missing or corrupt file).

    Entry points catch it at the top level and print its message on one line with a
    non-zero exit; genuine bugs are not caught and keep their traceback.
    """


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the same folder as ``path``; rename it over ``path`` on success.

    A process killed at any moment leaves either the old file or the new one, never a
    half-written file under the final name.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the final file the usual mode
    try:
        yield tmp
        with open(tmp, 'rb+') as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_open(path, mode='w', **kwargs):
    """``open`` for writing ``path`` atomically: the file appears under its name only once it is complete
    (text modes default to UTF-8 and ``\\n`` line ends, so files read the same on every platform)."""
    if 'b' not in mode:
        kwargs.setdefault('encoding', 'utf-8')
        kwargs.setdefault('newline', '\n')
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def atomic_write_text(path, text):
    with atomic_open(path) as fh:
        fh.write(text)
    return path


def read_jsonl(path, warn=True):
    """The JSON objects of a JSON-lines file (``results.jsonl``), in order. A line that does not parse (one
    cut by a kill or a full disk) or is not an object is skipped, with a warning on stderr that names it
    (``warn=False``: silently)."""
    records = []
    with open_no_follow(path, 'r') as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None
            if isinstance(rec, dict):
                records.append(rec)
            elif warn:
                print(f'warning: {path}, line {number}: not a JSON record (cut by a kill or a full disk?); '
                      'skipped', file=sys.stderr)
    return records


def open_fd_no_follow(path, flags):
    """``os.open(path, flags)`` that refuses a symbolic link at ``path`` with a ``UserError``: a run folder's
    files are written and read where they are, never through a link to somewhere else."""
    try:
        return os.open(path, flags | getattr(os, 'O_NOFOLLOW', 0), 0o644)
    except OSError:
        if os.path.islink(path):
            raise UserError(f'{path} is a symbolic link; a run folder\'s files must be regular files: remove '
                            'the link') from None
        raise


def open_no_follow(path, mode='r'):
    """``open(path, mode)`` for reading ('r', text, UTF-8) or appending ('a'), refusing a symbolic link."""
    flags = os.O_RDONLY if mode == 'r' else os.O_WRONLY | os.O_APPEND | os.O_CREAT
    return os.fdopen(open_fd_no_follow(path, flags), mode, encoding='utf-8', errors='replace')


def append_line(path, line):
    """Append one line (a JSON record) and flush it to disk.

    A single ``write`` of a short line followed by fsync: a kill can at worst lose the line being written.
    When the file ends in such a cut line, the new record starts on a line of its own (readers skip the
    cut one). A symbolic link at ``path`` is refused, never followed.
    """
    fd = open_fd_no_follow(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    try:
        size = os.fstat(fd).st_size
        cut = size > 0 and os.pread(fd, 1, size - 1) != b'\n'
        os.write(fd, (('\n' if cut else '') + line.rstrip('\n') + '\n').encode('utf-8'))
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_links(folder):
    """``UserError`` when ``folder`` (a run folder) holds a symbolic link: its files are written in place,
    and a link would make a run write or append to a file elsewhere."""
    if not os.path.isdir(folder):
        return
    links = sorted(n for n in os.listdir(folder) if os.path.islink(os.path.join(folder, n)))
    if links:
        raise UserError(f'{os.path.join(folder, links[0])} is a symbolic link; a run folder holds regular files '
                        f'only: remove {"it" if len(links) == 1 else f"the {len(links)} links"}')


def sha256_file(path):
    """The SHA-256 of a file's bytes, as hex."""
    import hashlib
    digest = hashlib.sha256()
    with open(path, 'rb') as fh:
        for block in iter(lambda: fh.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(folder):
    """Flush a folder's entries (a rename in it) to disk, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def run_main(main):
    """Run an entry point: ``UserError`` becomes ``error: ...`` on stderr and exit status 2; Ctrl-C
    outside the training loop (which saves its state itself) is one line and exit status 130."""
    try:
        return main()
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)


class RunLock:
    """An OS lock on a run folder (``<run_dir>/.lock``, holding the owner's PID) for as long as a process
    trains in it. The kernel releases it when the process ends, however it ends, so a crashed run leaves
    no stale lock."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, '.lock')
        self.fd = None

    def acquire(self):
        import fcntl
        try:
            os.makedirs(self.run_dir, exist_ok=True)
        except OSError as exc:
            raise UserError(f'cannot create the run folder {self.run_dir} ({exc.strerror}); give a --save_dir '
                            'you can write to') from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0), 0o644)
        except OSError as exc:
            if os.path.islink(self.path):
                raise UserError(f'{self.path} is a symbolic link; remove it (a run folder\'s lock is a regular '
                                'file)') from None
            raise UserError(f'cannot create the lock file {self.path}: {exc.strerror}') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors='replace').strip() or 'unknown'
            os.close(fd)
            raise UserError(f'run folder {self.run_dir} is in use by process {holder}; wait for it to finish, '
                            f'stop it, or choose another --exp_name') from None
        os.ftruncate(fd, 0)
        os.write(fd, f'{os.getpid()}\n'.encode())
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def holder(run_dir):
        """The PID text of the process that holds ``run_dir``'s lock, or ``None`` when it is free."""
        import fcntl
        path = os.path.join(run_dir, '.lock')
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.read(fd, 32).decode(errors='replace').strip() or 'unknown'
        finally:
            os.close(fd)
        return None


def without_options(argv, names):
    """``argv`` without the options ``names`` and their values (``--name VALUE`` or ``--name=VALUE``): the
    command a generated README section shows, without where it wrote or the texts it keeps elsewhere."""
    out, skip = [], False
    for a in map(str, argv):
        if skip:
            skip = False
        elif a in names:
            skip = True
        elif not a.startswith(tuple(n + '=' for n in names)):
            out.append(a)
    return out


def replace_readme_section(readme, name, body):
    """Replace the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in ``readme``.

    The README's measured numbers are written here by the scripts that measure them, never by hand.
    """
    begin, end = f'<!-- {name}:begin -->', f'<!-- {name}:end -->'
    try:
        with open(readme, encoding='utf-8') as fh:
            text = fh.read()
    except OSError as exc:
        raise UserError(f'cannot read {readme}: {exc.strerror}') from None
    if begin not in text or end not in text:
        raise UserError(f'{readme} has no "{begin}" ... "{end}" markers to write the {name} into')
    if text.index(end) < text.index(begin) or text.count(begin) != 1 or text.count(end) != 1:
        raise UserError(f'{readme}: the "{begin}" and "{end}" markers must appear once each, begin first; fix '
                        'the file and run again')
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return atomic_write_text(readme, head + begin + '\n' + body.strip('\n') + '\n' + end + tail)


def format_table(header, rows, title=None, align=None):
    """A plain-text table with padded columns (``align``: one of 'l'/'r' per column; default: first column
    left, the others right), under an optional title line."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    align = align or 'l' + 'r' * (len(header) - 1)

    def line(row):
        return '  '.join(c.ljust(w) if a == 'l' else c.rjust(w) for c, w, a in zip(row, widths, align)).rstrip()
    out = ([title] if title else []) + [line(cells[0]), '  '.join('-' * w for w in widths)]
    return '\n'.join(out + [line(r) for r in cells[1:]])


def markdown_table(header, rows, align=None):
    """The same table in Markdown."""
    align = align or 'l' + 'r' * (len(header) - 1)
    out = ['| ' + ' | '.join(map(str, header)) + ' |', '|' + '|'.join('---' if a == 'l' else '---:' for a in align) + '|']
    return '\n'.join(out + ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows])


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows ``(default: X)`` after an option's help, unless the help already says it or there is no
    default worth showing (None, False, an empty list)."""

    def _get_help_string(self, action):
        text = action.help or ''
        if '(default' in text or action.default in (None, False, [], argparse.SUPPRESS) or \
                isinstance(action, argparse._StoreFalseAction) or \
                action.option_strings == [] and action.nargs in ('?', '*') and action.default is None:
            return text
        if action.option_strings or action.nargs in ('?', '*'):
            return text + ' (default: %(default)s)'
        return text


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
    """An argparse ``type`` for a folder option: refused when a file (not a folder) is there."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f'{text} is a file, not a folder; give a folder (it is made when missing)')
    return text


def thread_count(text):
    """An argparse ``type`` for ``--threads``: 1 .. the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    value = number(int, 0)(text)
    if value > cores:
        raise argparse.ArgumentTypeError(f'{value} threads on {cores} available core(s) would oversubscribe them '
                                         f'(every step waits for the slowest thread); give at most {cores}')
    return value


positive_float = number(float, 0.0)
nonneg_float = number(float, 0.0, low_open=False)
positive_int = number(int, 0)
nonneg_int = number(int, 0, low_open=False)


# -- device, precision and seeds of a run ------------------------------------------------------------

def resolve_device(name):
    import re
    import torch
    if name != 'auto' and not re.fullmatch(r'cpu|cuda(:\d{1,3})?', name):
        raise UserError(f'--device {name} is not supported; use auto, cpu, cuda or cuda:N')
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise UserError(f'--device {name} was asked for but CUDA is not available; use --device cpu')
    if name.startswith('cuda:') and int(name[5:]) >= torch.cuda.device_count():
        raise UserError(f'--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), '
                        f'numbered from 0')
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f'--device {name} is not a device; use auto, cpu, cuda or cuda:N') from None


def cpu_features():
    """The CPU's feature flags (``/proc/cpuinfo`` on Linux; empty elsewhere)."""
    try:
        with open('/proc/cpuinfo') as fh:
            for line in fh:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


NATIVE_BF16_CPU_FLAGS = ('amx_bf16', 'avx512_bf16')


def native_bf16(device):
    """Whether ``device`` computes bfloat16 natively: a CUDA device that supports it, or a CPU with AMX or
    AVX512-BF16 (elsewhere bf16 autocast is emulated and slower than fp32)."""
    import torch
    if device.type == 'cuda':
        # compute capability 8.0 (Ampere) and newer; is_bf16_supported() also counts emulation (V100, T4)
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == 'cpu':
        return any(f in cpu_features() for f in NATIVE_BF16_CPU_FLAGS)
    return False


def resolve_precision(opt, device):
    """Turn ``--precision auto`` into fp32 or bf16 for ``device``; ``opt.amp`` follows (bf16 autocast)."""
    if not hasattr(opt, 'precision_requested'):
        opt.precision_requested = getattr(opt, 'precision', None) or 'auto'
    if getattr(opt, 'precision', None) in (None, 'auto'):
        opt.precision = 'bf16' if native_bf16(device) else 'fp32'
    opt.amp = opt.precision == 'bf16'
    return opt.precision


def seed_everything(seed):
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
