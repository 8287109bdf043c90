"""Files of a run: atomic writes, JSON-lines records, opening without following links, hashes."""
import contextlib
import json
import os
import stat
import sys
import tempfile

from utils.errors import UserError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the same folder as ``path``; rename it over ``path`` on success.

    A process killed at any moment leaves either the old file or the new one, never a
    half-written file under the final name.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f'{path} is a folder where a file is to be written: move it away, or write elsewhere')
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    except OSError as exc:
        raise UserError(f'cannot write {path} ({exc.strerror}); give a folder you can write to') from None
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
        fd = os.open(path, flags | getattr(os, 'O_NOFOLLOW', 0), 0o644)
    except OSError as exc:
        if os.path.islink(path):
            raise UserError(f'{path} is a symbolic link; a run folder\'s files must be regular files: remove '
                            'the link') from None
        if os.path.isdir(path):
            raise UserError(f'{path} is a folder where a file belongs: move it away') from None
        raise UserError(f'cannot open {path} ({exc.strerror})') from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f'{path} is not a regular file (a folder, a device or a pipe) where a file belongs: move it '
                        'away')
    return fd


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
