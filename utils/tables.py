"""Text and Markdown tables (the README sections that hold them are written by :mod:`utils.readme`)."""


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
