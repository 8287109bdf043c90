"""Colored-MNIST files on disk: their names, reading the authors' pickled ``.npy`` without running code, and
writing one atomically.

The authors' format is a dict pickled by ``np.save`` under the name ``mnist_10color_jitter_var_%.03f.npy``
(:func:`file_name`; a non-default palette adds ``_<palette>`` before ``.npy``). Unpickling runs whatever
code a file names, so :func:`read_npy` reads it through :class:`_ArraysOnly`, which builds only arrays,
dicts, strings and numbers; :func:`save` writes one under a temporary name, then renames it. What the dict
must hold is checked by :mod:`dataset.validation`.
"""
import os
import pickle

import numpy as np

from dataset.palettes import DEFAULT_PALETTE, check_palette
from utils import UserError, atomic_open


def file_name(color_var, palette=DEFAULT_PALETTE):
    suffix = '' if check_palette(palette) == DEFAULT_PALETTE else f'_{palette}'
    return 'mnist_10color_jitter_var_%.03f%s.npy' % (color_var, suffix)


def file_path(data_dir, color_var, palette=DEFAULT_PALETTE):
    return os.path.join(data_dir, file_name(color_var, palette))


def generate_command(data_dir, color_var, palette=DEFAULT_PALETTE):
    """The generator's command line that makes the file of ``color_var`` in ``data_dir`` (for error hints)."""
    extra = '' if palette == DEFAULT_PALETTE else f' --palette {palette}'
    return f'python -m dataset.colored_mnist --color_var {color_var:.3f} --data_dir {data_dir}{extra}'


def save(data, path):
    """Write ``data`` in the authors' format, atomically (temporary name, then rename)."""
    try:
        with atomic_open(path, 'wb') as fh:
            np.save(fh, data, allow_pickle=True)
    except OSError as exc:
        raise UserError(f'cannot write the data file {path} ({exc.strerror}); give a --data_dir you can write to '
                        '(an existing file there is left as it was)') from None


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds only what a Colored-MNIST file holds: dicts, lists, strings, numbers and
    NumPy arrays, dtypes and scalars. Any other global (a function to call, a class to build) is refused,
    so a file cannot run code while it loads."""

    ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
        ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
        ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),  # protocol 5
        ('numpy', 'ndarray'), ('numpy', 'dtype'),
        ('_codecs', 'encode'),  # how protocol-2 pickles of Python 3 store bytes
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f'refused to load {module}.{name}')
        if module.startswith('numpy.core.') and hasattr(np, '_core'):
            module = 'numpy._core.' + module[len('numpy.core.'):]
        import importlib
        return getattr(importlib.import_module(module), name)


def _header(fh, path):
    """(shape, dtype) of the ``.npy`` header at the start of ``fh``; ``UserError`` naming the file when the
    header is malformed (NumPy parses it as a Python literal and raises ValueError, SyntaxError or, for an
    unclosed bracket, tokenize.TokenError)."""
    import tokenize
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f'.npy format version {version[0]}.{version[1]}; the authors\' files are 1.0')
    except (ValueError, SyntaxError, tokenize.TokenError, TypeError, UnicodeDecodeError) as exc:
        text = exc.args[0] if isinstance(exc, tokenize.TokenError) and exc.args else str(exc)
        detail = str(text).splitlines()[0][:100] if str(text) else type(exc).__name__
        raise UserError(f'{path}: its .npy header cannot be read ({detail}); it is truncated or not a Colored-MNIST '
                        'file: delete it and regenerate it') from None
    return shape, dtype


def read_npy(path):
    """Read a ``.npy`` file like ``np.load(path, encoding='latin1', allow_pickle=True)`` does, except that a
    pickled payload may hold only arrays, dicts, strings and numbers (:class:`_ArraysOnly`)."""
    with open(path, 'rb') as fh:
        head = fh.read(6)
        if head[:2] == b'PK':
            raise UserError(f'{path} is an .npz archive, not a Colored-MNIST .npy file')
        fh.seek(0)
        shape, dtype = _header(fh, path)
        if not dtype.hasobject:
            need = int(np.prod(shape, dtype=object)) * dtype.itemsize
            have = os.fstat(fh.fileno()).st_size - fh.tell()
            if need > have:
                raise UserError(f'{path}: its header describes {need:,} bytes of data but the file holds {have:,}; '
                                'it is truncated or not a Colored-MNIST file: delete it and regenerate it')
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
        try:
            return _ArraysOnly(fh, encoding='latin1').load()
        except pickle.UnpicklingError as exc:
            if str(exc).startswith('refused'):
                raise UserError(f'{path}: {exc}: a Colored-MNIST file holds only a dict of NumPy arrays, and '
                                'loading anything else could run code stored in the file; do not use this file') from None
            raise
