"""Where and how a run computes: device, precision, seeds."""
import random

from utils.errors import UserError


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
