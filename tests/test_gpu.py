"""The GPU path, whenever a GPU is there (skipped without CUDA): the folded f against the literal one, one
update of every method in fp32 and bf16, and a mid-run resume that equals a straight run under
--deterministic. `python -m pytest -q tests/test_gpu.py` on a GPU machine checks it in about a minute."""
import copy

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')


def test_folded_f_matches_the_literal_f_on_cuda():
    from models import ConvNet
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


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
@pytest.mark.parametrize('method', ['baseline', 'lnl', 'blindeye', 'gray'])
def test_one_update_of_every_method_on_cuda(method, precision):
    import methods
    from option import get_option
    opt = get_option(['-e', 'gpu', '--method', method, '--precision', precision, '--device', 'cuda'])
    m = methods.build_method(opt, torch.device('cuda'))
    x = torch.randn(16, 3, 28, 28, device='cuda')
    colors = torch.randint(0, 8, (16, 3, 14, 14), device='cuda')
    labels = torch.randint(0, 10, (16,), device='cuda')
    before = [p.detach().clone() for p in m.net.parameters()]
    out = m.update(x, colors, labels)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, m.net.parameters()))


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
