"""The GPU path, checked on the CPU: TF32 policy, what a run records about where it ran, CUDA state touched only
for the run's own device, and CSAD's update without operations that wait for the device."""
import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import checkpoint
import methods
from conftest import run_py, train_args
from models.csad import CrossSampleMI, masked_exp_sum
from option import get_option
from utils import environment, resolve_arithmetic

# Operations that make the host wait for a CUDA device: reading a value back, counting a mask's entries, and the
# error check of torch.inverse.
WAITS = ('aten.nonzero', 'aten.masked_select', 'aten._linalg_check_errors', 'aten.is_nonzero')


class OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func).rsplit('.', 1)[0]] += 1
        return func(*args, **(kwargs or {}))


def mi_inputs(seed=0, n=24):
    g = torch.Generator().manual_seed(seed)
    content = torch.randn(n, 128, generator=g)
    bias = torch.randn(n, 128, generator=g)
    labels = torch.randint(0, 8, (n, 3), generator=g)
    return content, bias, labels


def test_csad_mi_loss_does_not_wait_for_the_device():
    torch.manual_seed(0)
    mi = CrossSampleMI()
    content, bias, labels = mi_inputs()
    content.requires_grad_(True)
    with OpLog() as log:
        mi(content, bias, labels).backward()
    waits = {op: n for op, n in log.ops.items() if op in WAITS}
    assert not waits, f'host synchronisations in the MI loss: {waits}'


def test_csad_mi_loss_equals_the_masked_indexing_formula():
    """The loss without mask indexing equals their formula with it (within float rounding: the sums run in
    another order), and so do the gradients."""
    torch.manual_seed(0)
    mi = CrossSampleMI()
    content, bias, labels = mi_inputs(1)
    content.requires_grad_(True)
    loss = mi(content, bias, labels)
    grad, = torch.autograd.grad(loss, content)

    a = torch.nn.functional.normalize(mi.content_mlp(content))
    b = torch.nn.functional.normalize(mi.bias_mlp(bias))
    pa = mi.propagate(mi.similarity_graph(a, mi.tau_content))
    pb = mi.propagate(mi.similarity_graph(b, mi.tau_bias))
    s = (pa.matmul(torch.log(pb.t() + 1e-7)) + pb.matmul(torch.log(pa.t() + 1e-7))) / 2 + a.matmul(b.t())
    positive = (labels.unsqueeze(0) - labels.unsqueeze(1)).square().sum(dim=2) < 4
    wp, wn = mi.alpha_pos, mi.alpha_neg
    ref = (torch.log(1 + torch.sum(torch.exp(-wp * s[positive]))) / wp
           + torch.log(1 + torch.sum(torch.exp(wn * s[~positive]))) / wn).squeeze(0)
    ref_grad, = torch.autograd.grad(ref, content)
    assert torch.allclose(loss, ref, rtol=1e-6, atol=0)
    assert (grad - ref_grad).abs().max() <= 1e-5 * ref_grad.abs().max()


def test_masked_exp_sum_has_no_nan_gradient_where_exp_overflows():
    x = torch.tensor([1.0, 1000.0], requires_grad=True)  # exp(1000) = inf, but the entry is masked out
    total = masked_exp_sum(x, torch.tensor([True, False]))
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(x.grad).all() and x.grad[1] == 0


def test_fp32_runs_record_tf32_off_and_turn_it_off():
    opt = get_option(['-e', 'x', '--precision', 'fp32'])
    resolve_arithmetic(opt, torch.device('cpu'))
    conv = getattr(torch.backends.cudnn, 'conv', None)
    state = conv.fp32_precision if conv is not None else torch.backends.cudnn.allow_tf32
    assert opt.tf32 is False and state in ('ieee', False)
    opt = get_option(['-e', 'x', '--precision', 'fp32', '--tf32'])
    resolve_arithmetic(opt, torch.device('cpu'))
    state = conv.fp32_precision if conv is not None else torch.backends.cudnn.allow_tf32
    assert opt.tf32 is True and state in ('tf32', True)
    resolve_arithmetic(get_option(['-e', 'x']), torch.device('cpu'))  # back to the default for other tests
    assert 'tf32' in methods.run_defining('baseline')


def test_a_run_records_where_and_with_what_it_ran(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'r', '--dry_run', '--max_step', 1, '--device', 'cpu')).returncode == 0
    import json
    opts = json.loads((runs / 'r' / 'options.json').read_text())
    env = opts['environment']
    assert env['device'] == 'cpu' and env['device_name'] and env['torch'] == torch.__version__
    assert env == environment(torch.device('cpu')) and opts['tf32'] is False


def test_checkpoints_of_a_cpu_run_read_no_cuda_state(monkeypatch, small_data_dir, tmp_path):
    """Saving the random state of a CPU run touches no CUDA device (it would open a context on every GPU)."""
    def refuse(*a, **k):
        raise AssertionError('CUDA random state read by a CPU run')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_rng_state_all', refuse)
    monkeypatch.setattr(torch.cuda, 'get_rng_state', refuse)

    class Batches:
        def get_state(self):
            return {}

        def set_state(self, state):
            pass
    state = checkpoint.rng_state(Batches(), torch.device('cpu'))
    assert 'cuda' not in state


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_checkpoints_of_a_cuda_run_hold_their_own_device_state_only():
    device = torch.device('cuda', torch.cuda.current_device())

    class Batches:
        def get_state(self):
            return {}

        def set_state(self, state):
            pass
    state = checkpoint.rng_state(Batches(), device)
    assert isinstance(state['cuda'], torch.Tensor)
    torch.cuda.manual_seed(123)
    expected = torch.rand(4, device=device)
    torch.cuda.manual_seed(123)
    saved = checkpoint.rng_state(Batches(), device)
    torch.rand(100, device=device)
    checkpoint.set_rng_state(saved, Batches(), device)
    assert torch.equal(torch.rand(4, device=device), expected)


def test_environment_of_a_cpu_device_opens_no_cuda_context(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a: pytest.fail('CUDA queried for a CPU run'))
    assert environment(torch.device('cpu'))['device'] == 'cpu'
