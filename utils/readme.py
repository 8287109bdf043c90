"""The one place README and docs sections are written: every script that puts measured numbers or tables
into README.md or docs/*.md does it through :func:`replace_readme_section`, between the file's
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers, never by hand; :func:`without_options` builds the
command such a section shows."""
from utils.errors import UserError
from utils.files import atomic_write_text


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
    except UnicodeDecodeError:
        raise UserError(f'{readme} is not a UTF-8 text file; give the README (a Markdown file) to write into') from None
    if begin not in text or end not in text:
        raise UserError(f'{readme} has no "{begin}" ... "{end}" markers to write the {name} into')
    if text.index(end) < text.index(begin) or text.count(begin) != 1 or text.count(end) != 1:
        raise UserError(f'{readme}: the "{begin}" and "{end}" markers must appear once each, begin first; fix '
                        'the file and run again')
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return atomic_write_text(readme, head + begin + '\n' + body.strip('\n') + '\n' + end + tail)
