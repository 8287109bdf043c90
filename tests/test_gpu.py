"""The GPU path, whenever a GPU is there (skipped without CUDA): the folded f against the literal one, one update
of every registered method on CUDA against the same update on the CPU, and a mid-run resume that equals a straight
run under --deterministic. `python -m pytest -q tests/test_gpu.py` on a GPU machine checks it in about a minute.

Tolerances: fp32 runs with TF32 off (the runs' default), so CUDA and the CPU differ only by the order of float32
sums (cuDNN's and oneDNN's algorithms): 1e-4 relative to the largest weight change. bf16 autocast rounds each
operation's inputs to 8 bits of mantissa, differently on each device's kernels: 5e-2 relative."""
import copy

import pytest
import torch

import methods
from option import get_option
from utils import set_tf32

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')

TOLERANCE = {'fp32': 1e-4, 'bf16': 5e-2}


def test_folded_f_matches_the_literal_f_on_cuda():
    from models import ConvNet
    set_tf32(False)
    torch.manual_seed(0)
    fast = ConvNet().to('cuda')
    ref = copy.deepcopy(fast)
    ref.fast_f = False
    x = torch.randn(32, 3, 28, 28, device='cuda') * 0.7 + 0.3
    a, b = fast.f(x), ref.f(x)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    a.square().sum().backward()
    b.square().sum().backward()
    for p, q in zip(fast.parameters(), ref.parameters()):
        if p.grad is not None or q.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-3, rtol=1e-3)


def one_update(method, precision, device, state=None):
    """Build ``method`` on ``device`` (from ``state``: the weights of another build), run one update on a fixed
    batch; returns (weights before, weights after) on the CPU."""
    opt = get_option(['-e', 'gpu', '--method', method, '--precision', precision, '--device', device.type,
                      '--no_channels_last'])
    torch.manual_seed(0)
    m = methods.build_method(opt, device)
    if state is not None:
        m.net.load_state_dict(state[0])
        m.h.load_state_dict(state[1])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 3, 28, 28, generator=g).to(device)
    colors = torch.randint(0, 8, (32, 3, 14, 14), generator=g).to(device)
    labels = torch.randint(0, 10, (32,), generator=g).to(device)
    before = (copy.deepcopy(m.net.state_dict()), copy.deepcopy(m.h.state_dict()))
    out = m.update(x, colors, labels)
    assert all(torch.isfinite(v).all() for v in out.values())
    after = {k: v.detach().cpu() for k, v in list(m.net.state_dict().items()) + [('h.' + k, v) for k, v in
                                                                                 m.h.state_dict().items()]}
    return before, after


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
@pytest.mark.parametrize('method', methods.method_names())
def test_one_update_on_cuda_equals_the_cpu(method, precision):
    before, on_gpu = one_update(method, precision, torch.device('cuda'))
    cpu_state = tuple({k: v.cpu() for k, v in sd.items()} for sd in before)
    _, on_cpu = one_update(method, precision, torch.device('cpu'), cpu_state)
    start = {k: v.cpu() for k, v in list(before[0].items()) + [('h.' + k, v) for k, v in before[1].items()]}
    moved = False
    for k, ref in on_cpu.items():
        if not ref.is_floating_point():
            assert torch.equal(on_gpu[k], ref), k
            continue
        change = (ref - start[k]).abs().max()
        moved = moved or change > 0
        scale = max(float(change), 1e-12)
        assert (on_gpu[k] - ref).abs().max() <= TOLERANCE[precision] * scale + 1e-7, k
    assert moved


def test_deterministic_resume_on_cuda_equals_a_straight_run(small_data_dir, tmp_path):
    from conftest import run_py, train_args
    runs = tmp_path / 'runs'
    common = ['--method', 'lnl', '--max_step', 2, '--device', 'cuda', '--deterministic', '--precision', 'fp32']
    assert run_py(train_args(small_data_dir, runs, 'a', *common)).returncode == 0
    assert run_py(train_args(small_data_dir, runs, 'b', '--method', 'lnl', '--max_step', 1, '--device', 'cuda',
                             '--deterministic', '--precision', 'fp32')).returncode == 0
    assert run_py(train_args(small_data_dir, runs, 'b', *common, '--resume')).returncode == 0
    a = torch.load(runs / 'a' / 'checkpoint_last.pth', weights_only=True)['net_state_dict']
    b = torch.load(runs / 'b' / 'checkpoint_last.pth', weights_only=True)['net_state_dict']
    assert all(torch.equal(a[k], b[k]) for k in a)
