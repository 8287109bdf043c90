"""The GPU path, whenever a GPU is there (skipped without CUDA): the folded f against the literal one, one update
of every registered method on CUDA against the same update on the CPU, and a mid-run resume that equals a straight
run under --deterministic. `python -m pytest -q tests/test_gpu.py` on a GPU machine checks it in about a minute.

Tolerances (relative L2 error of what one update computed): fp32 runs with TF32 off (the runs' default), so CUDA and
the CPU differ only by the order of float32 sums (cuDNN's and oneDNN's algorithms): 1e-4. bf16 autocast rounds each
operation's inputs to 8 bits of mantissa, differently on each device's kernels: 5e-2."""
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
    batch; returns (the weights before, what the update left: each optimizer's state and the modules' buffers, on
    the CPU)."""
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
    left = {}
    for name, o in m.optimizers.items():
        for i, p in enumerate(o.param_groups[0]['params']):
            for key, v in o.state.get(p, {}).items():
                left.setdefault(f'{name}.{key}', {})[i] = v.detach().cpu()
    for prefix, module in (('net', m.net), ('h', m.h)):
        for k, v in module.named_buffers():
            left.setdefault('buffers' if v.is_floating_point() else 'counters', {})[f'{prefix}.{k}'] = v.detach().cpu()
    return before, left


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
@pytest.mark.parametrize('method', methods.method_names())
def test_one_update_on_cuda_equals_the_cpu(method, precision):
    """What one update computed, on CUDA and on the CPU from the same weights and batch: each optimizer's state after
    its first step (SGD's momentum buffer is the gradient; Adam's moments are the gradient and its square), and the
    BatchNorm statistics. Compared per optimizer and kind of state as one vector (relative L2 error), not per weight:
    Adam's first step is lr * sign(gradient), so a parameter whose gradient is zero in exact arithmetic (a bias before
    a BatchNorm) steps by +-lr on rounding noise, and a per-weight comparison of the step would measure that noise."""
    before, on_gpu = one_update(method, precision, torch.device('cuda'))
    cpu_state = tuple({k: v.cpu() for k, v in sd.items()} for sd in before)
    _, on_cpu = one_update(method, precision, torch.device('cpu'), cpu_state)
    assert on_gpu.keys() == on_cpu.keys() and any(k.endswith(('momentum_buffer', 'exp_avg')) for k in on_cpu)
    for kind, ref in on_cpu.items():
        assert on_gpu[kind].keys() == ref.keys(), kind
        if kind == 'counters' or kind.endswith('.step'):
            assert all(torch.equal(on_gpu[kind][k], ref[k]) for k in ref), kind
            continue
        a = torch.cat([on_gpu[kind][k].flatten().double() for k in ref])
        b = torch.cat([ref[k].flatten().double() for k in ref])
        assert b.norm() > 0, kind
        assert (a - b).norm() <= TOLERANCE[precision] * b.norm(), (kind, float((a - b).norm() / b.norm()))


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


@pytest.mark.parametrize('method', [n for n in methods.method_names() if methods.get(n).packable])
def test_a_packed_update_on_cuda_equals_the_runs_updates(method):
    """Three runs packed as one (grouped convolutions in cuDNN) against the same three runs' updates, fp32 with TF32
    off, on CUDA: the weights after one update of each, as one vector (relative L2 error)."""
    from models.pack import member_state_dict, pack_state_dicts
    device, k = torch.device('cuda'), 3
    opt = get_option(['-e', 'gpu', '--method', method, '--precision', 'fp32', '--device', 'cuda'])
    views = []
    for seed in range(k):
        torch.manual_seed(seed)
        views.append(methods.build_method(opt, device))
    packed = methods.build_method(opt, device, members=k)
    for name in ('net', 'h'):
        getattr(packed, name).load_state_dict(pack_state_dicts([getattr(v, name).state_dict() for v in views]))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(64, 3, 28, 28, generator=g), torch.randint(0, 8, (64, 3, 14, 14), generator=g),
                torch.randint(0, 10, (64,), generator=g)) for _ in range(k)]
    batches = [tuple(t.to(device) for t in b) for b in batches]
    fmt = torch.channels_last if opt.channels_last else torch.contiguous_format
    for v, b in zip(views, batches):
        v.update(b[0].contiguous(memory_format=fmt), *b[1:])
    packed.update(torch.cat([b[0] for b in batches], 1).contiguous(memory_format=fmt),
                  torch.cat([b[1] for b in batches], 1), torch.stack([b[2] for b in batches], 1))
    for name in ('net', 'h'):
        whole = getattr(packed, name).state_dict()
        for i, v in enumerate(views):
            mine, theirs = getattr(v, name).state_dict(), member_state_dict(whole, i, k)
            a = torch.cat([mine[n].flatten().double() for n in mine if mine[n].is_floating_point()])
            b = torch.cat([theirs[n].flatten().double() for n in mine if mine[n].is_floating_point()])
            assert (a - b).norm() <= 1e-5 * a.norm(), (method, name, i, float((a - b).norm() / a.norm()))
