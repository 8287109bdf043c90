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


def set_tf32(allowed):
    """Whether float32 convolutions and matrix products on a CUDA device may round their inputs to TF32 (10-bit
    mantissa) on tensor cores. cuDNN does so by default on Ampere and newer GPUs; a run asks for it with --tf32
    and records it, so that an fp32 run means float32 arithmetic on every device."""
    import torch
    mode = 'tf32' if allowed else 'ieee'
    conv, matmul = getattr(torch.backends.cudnn, 'conv', None), getattr(torch.backends.cuda, 'matmul', None)
    if conv is not None and hasattr(conv, 'fp32_precision'):  # the API of PyTorch 2.9 and newer
        conv.fp32_precision = mode
        matmul.fp32_precision = mode
    else:
        torch.backends.cudnn.allow_tf32 = allowed
        torch.backends.cuda.matmul.allow_tf32 = allowed


def resolve_arithmetic(opt, device):
    """The one place that decides how a run computes on ``device``: ``--precision`` (auto -> fp32 or bf16),
    TF32 (off unless ``--tf32``; it only acts on a CUDA device in fp32) and cuDNN's algorithm search (off under
    --deterministic). Sets ``opt.precision``, ``opt.amp`` and ``opt.tf32``; returns the precision."""
    import torch
    resolve_precision(opt, device)
    opt.tf32 = bool(getattr(opt, 'tf32', False))
    set_tf32(opt.tf32)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = not getattr(opt, 'deterministic', False)
    return opt.precision


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        with open('/proc/cpuinfo') as fh:
            for line in fh:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def environment(device):
    """Where and with what a run computes: the resolved device and its name (GPU or CPU model), the versions of
    torch, CUDA and cuDNN (None on a CPU build), and the commit of this repository (None outside a git checkout).
    Only ``device`` is queried: no CUDA context is opened on another GPU."""
    import torch
    cuda = device.type == 'cuda'
    return {'device': str(device),
            'device_name': torch.cuda.get_device_name(device) if cuda else cpu_model(),
            'torch': str(torch.__version__), 'cuda': torch.version.cuda,
            'cudnn': torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None,
            'commit': repository_commit()}


def repository_commit():
    """The commit of this checkout, or the one the Docker image was built from (``LNL_COMMIT``), or None."""
    import os
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(['git', 'rev-parse', '--short=12', 'HEAD'], cwd=root, capture_output=True, text=True,
                             timeout=10, stdin=subprocess.DEVNULL)
        found = out.stdout.strip() if out.returncode == 0 else ''
    except (OSError, subprocess.SubprocessError):
        found = ''
    return found or os.environ.get('LNL_COMMIT') or None  # the Docker image records it at build time


def seed_everything(seed):
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
