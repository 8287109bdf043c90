"""Small helpers shared by every entry point: user-facing errors and atomic file writes."""
import contextlib
import os
import sys
import tempfile


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
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as fh:
            fh.write(text)


def append_line(path, line):
    """Append one line (a JSON record) and flush it to disk.

    A single ``write`` of a short line followed by fsync: a kill can at worst lose the
    line being written; readers skip a trailing partial line.
    """
    with open(path, 'a') as fh:
        fh.write(line.rstrip('\n') + '\n')
        fh.flush()
        os.fsync(fh.fileno())


def run_main(main):
    """Run an entry point: ``UserError`` becomes ``error: ...`` on stderr and exit status 2."""
    try:
        return main()
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(2)


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
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with atomic_path(readme) as tmp:
        with open(tmp, 'w', encoding='utf-8') as fh:
            fh.write(head + begin + '\n' + body.strip('\n') + '\n' + end + tail)
    return readme
