"""The GPUs a sweep hands out and what ``--precision auto`` means for its runs, found without initialising CUDA
in the sweep's own process: a CUDA context there would hold memory on a GPU for the whole sweep, and a forked
child could not use CUDA. What only CUDA can tell (how many devices, which compute bfloat16 natively) is asked
of a short child process, once per sweep, and only where a GPU may exist."""
import functools
import glob
import json
import os
import subprocess
import sys

from utils import REPO_ROOT, native_bf16

# Printed by the child process: per visible CUDA device, whether it computes bfloat16 natively.
_QUERY = ('import json, torch\n'
          'from utils import native_bf16\n'
          'print(json.dumps([native_bf16(torch.device("cuda", i)) for i in range(torch.cuda.device_count())]))\n')


def cuda_possible():
    """Whether this machine may have a CUDA (or ROCm) device for PyTorch, known without asking CUDA: a PyTorch
    built with it and, on Linux, a GPU device node."""
    import torch
    if torch.version.cuda is None and getattr(torch.version, 'hip', None) is None:
        return False
    if not sys.platform.startswith('linux'):
        return True
    return bool(glob.glob('/dev/nvidia[0-9]*')) or os.path.exists('/dev/kfd')


@functools.lru_cache(maxsize=None)
def _query(visible):
    if not cuda_possible():
        return ()
    try:
        proc = subprocess.run([sys.executable, '-c', _QUERY], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)
        found = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return ()
    return tuple(bool(x) for x in found) if isinstance(found, list) else ()


def cuda_bf16():
    """Per CUDA device a run of this sweep sees, whether it computes bfloat16 natively; ``()`` without one."""
    return _query(os.environ.get('CUDA_VISIBLE_DEVICES'))


def visible_gpus():
    """The GPUs to hand out: the entries of ``CUDA_VISIBLE_DEVICES`` when it is set, else the indices of the
    CUDA devices of the machine."""
    env = os.environ.get('CUDA_VISIBLE_DEVICES')
    if env is not None:
        return [g for g in env.split(',') if g.strip()]
    return list(range(len(cuda_bf16())))


def auto_precision(device='auto'):
    """What ``--precision auto`` resolves to for a run with train.py's ``--device device`` on this machine (as
    utils.resolve_precision decides it in the run)."""
    import torch
    if device != 'cpu':
        flags = cuda_bf16()
        if flags:
            index = int(device[5:]) if device.startswith('cuda:') and device[5:].isdigit() else 0
            return 'bf16' if index < len(flags) and flags[index] else 'fp32'
    return 'bf16' if native_bf16(torch.device('cpu')) else 'fp32'
