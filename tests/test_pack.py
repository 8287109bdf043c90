"""Runs trained packed (train_pack.py) equal the same runs trained alone (train.py), to float rounding: fp32 on the
CPU, every weight, BatchNorm buffer and optimiser state after two epochs of a few steps, for each packable method
(LNL's two steps and BlindEye's h included, from their baselines), with members of different sigma^2 and seeds."""
import json
import shlex

import signal

import pytest
import torch

import methods
import packing
import run_folder
import train
import train_pack
from conftest import SMALL_VAR, fake_mnist, train_args
from dataset import colored_mnist
from utils import UserError

OTHER_VAR = 0.035
COMMON = ['--max_step', '2', '--batch_size', '64', '--precision', 'fp32', '--no_channels_last', '--val_size', '64',
          '--threads', '1']
MEMBERS = [(SMALL_VAR, 1), (OTHER_VAR, 2)]


@pytest.fixture(scope='module')
def two_vars(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp('pack') / 'data'
    for i, var in enumerate((SMALL_VAR, OTHER_VAR)):
        data = colored_mnist.generate(fake_mnist(n_train=384, n_test=128, seed=i), var, seed=3)
        colored_mnist.save(data, colored_mnist.file_path(str(data_dir), var))
    return data_dir


def member_args(data_dir, runs, method, var, seed, *extra):
    return [str(a) for a in train_args(data_dir, runs, f'{method}_{var}_{seed}', '--method', method, '--color_var',
                                       var, '--random_seed', seed, *COMMON, *extra)[1:]]


def state(path):
    ckpt = torch.load(path, weights_only=True)
    out = {f'net.{k}': v for k, v in ckpt['net_state_dict'].items()}
    out.update({f'h.{k}': v for k, v in (ckpt.get('h_state_dict') or {}).items()})
    for name, o in ckpt['optimizers'].items():
        for i, entry in o['state'].items():
            out.update({f'opt.{name}.{i}.{key}': v for key, v in entry.items() if torch.is_tensor(v)})
    return out


def assert_same(alone, packed):
    assert alone.keys() == packed.keys()
    for k, a in alone.items():
        b = packed[k]
        if not a.is_floating_point():
            assert torch.equal(a, b), k
        else:
            # float rounding (grouped and plain convolutions sum in different orders), grown over the steps; the
            # momentum buffers are sums of gradients, and bn0's gradients cancel over the batch: 10x that
            rel = 1.5e-2 if k.startswith('opt.') else 2e-3  # 5x the largest seen
            err = float((a - b).abs().max() / (a.abs().max() + 1e-6))
            assert err <= rel, (k, err)


def test_each_members_loss_and_gradient_are_its_own_alone():
    """Every loss and accuracy of models/losses.py with members = K: member k's entry, and the gradient the sum of
    the entries gives member k's logits, equal those of member k's logits alone, to float rounding (a member's loss
    scaled, or mixed with another's, fails here however small its weight in the objective)."""
    from models import losses
    k, n, bins, classes = 3, 8, 8, 10
    g = torch.Generator().manual_seed(0)
    digits = torch.randn(n, k * classes, generator=g, requires_grad=True)
    labels = torch.randint(0, classes, (n, k), generator=g)
    colors = [torch.randn(n, k * bins, 14, 14, generator=g, requires_grad=True) for _ in range(3)]
    target = torch.randint(0, bins, (n, k * 3, 14, 14), generator=g)
    target[:, :, :4] = 255  # background: ignored

    def alone(t, i, size):
        return t[:, i * size:(i + 1) * size]
    cases = {  # name: (packed, member i alone, the logits)
        'cross_entropy': (lambda: losses.cross_entropy(digits, labels, members=k),
                          lambda i: losses.cross_entropy(alone(digits, i, classes), labels[:, i]), [digits]),
        'color_loss': (lambda: losses.color_loss(colors, target, members=k),
                       lambda i: losses.color_loss([alone(c, i, bins) for c in colors], alone(target, i, 3)), colors),
        'neg_entropy': (lambda: losses.neg_entropy(colors, members=k),
                        lambda i: losses.neg_entropy([alone(c, i, bins) for c in colors]), colors),
        'uniform_cross_entropy': (lambda: losses.uniform_cross_entropy(colors, members=k),
                                  lambda i: losses.uniform_cross_entropy([alone(c, i, bins) for c in colors]), colors),
    }
    for name, (packed, single, leaves) in cases.items():
        value = packed()
        assert value.shape == (k,), name
        grads = torch.autograd.grad(value.sum(), leaves)
        for i in range(k):
            mine = single(i)
            torch.testing.assert_close(value[i], mine, rtol=1e-6, atol=1e-7, msg=name)
            owns = torch.autograd.grad(mine, leaves)
            for leaf, grad, own in zip(leaves, grads, owns):
                size = classes if leaf is digits else bins
                torch.testing.assert_close(alone(grad, i, size), alone(own, i, size), rtol=1e-5, atol=1e-8, msg=name)
    acc = losses.accuracy(digits, labels, members=k)
    hits, counted = losses.color_accuracy(colors, target, members=k)
    for i in range(k):
        assert acc[i] == losses.accuracy(alone(digits, i, classes), labels[:, i])
        own_hits, own_counted = losses.color_accuracy([alone(c, i, bins) for c in colors], alone(target, i, 3))
        assert (hits[i], counted[i]) == (own_hits, own_counted)


def train_both(data_dir, tmp_path, method, extra_of=lambda var, seed: ()):
    alone, packed = tmp_path / 'alone', tmp_path / 'packed'
    for var, seed in MEMBERS:
        train.main(member_args(data_dir, alone, method, var, seed, *extra_of(var, seed)))
    train_pack.main([a for var, seed in MEMBERS for a in
                     ('--run', shlex.join(member_args(data_dir, packed, method, var, seed, *extra_of(var, seed))))])
    return alone, packed


@pytest.mark.parametrize('method', ['baseline', 'gray'])
def test_packed_runs_equal_the_runs_alone(two_vars, tmp_path, method):
    alone, packed = train_both(two_vars, tmp_path, method)
    for var, seed in MEMBERS:
        name = f'{method}_{var}_{seed}'
        assert_same(state(alone / name / 'checkpoint_last.pth'), state(packed / name / 'checkpoint_last.pth'))
        assert (packed / name / 'done').exists()


@pytest.mark.slow
@pytest.mark.parametrize('method', ['lnl', 'blindeye'])
def test_packed_runs_from_their_baselines_equal_the_runs_alone(two_vars, tmp_path, method):
    base = tmp_path / 'base'
    for var, seed in MEMBERS:
        train.main(member_args(two_vars, base, 'baseline', var, seed))

    def start(var, seed):
        # LNL's terms at full weight (defaults: lambda 0.01, mu 0.1): a packed objective that mis-weighs one of them
        # then moves the weights by more than the rounding the comparison allows
        strong = ('--lambda', '1', '--mu', '1') if method == 'lnl' else ()
        return ('--use_pretrain', '--checkpoint', base / f'baseline_{var}_{seed}' / 'checkpoint_last.pth',
                '--lr', '0.001') + strong
    alone, packed = train_both(two_vars, tmp_path, method, start)
    for var, seed in MEMBERS:
        name = f'{method}_{var}_{seed}'
        a, p = state(alone / name / 'checkpoint_last.pth'), state(packed / name / 'checkpoint_last.pth')
        assert any(k.startswith('opt.h.') for k in a)  # h trained and its optimiser state compared
        assert_same(a, p)


def test_the_packable_methods_are_the_default_grid():
    assert {n for n in methods.method_names() if methods.get(n).in_default_grid} <= \
        {n for n in methods.method_names() if methods.get(n).packable}


def test_an_interrupted_pack_resumes_to_the_runs_alone(two_vars, tmp_path, monkeypatch):
    """Stopped by a signal in its first epoch, each run of the pack saves its own mid-epoch checkpoint; the pack
    started again with --resume on every run ends where the runs alone end."""
    alone, packed = tmp_path / 'alone', tmp_path / 'packed'
    for var, seed in MEMBERS:
        train.main(member_args(two_vars, alone, 'baseline', var, seed))
    real, calls = packing.PackTrainer.batch, []

    def stop_after_three(self, orders, i):
        calls.append(i)
        if len(calls) == 3:
            self.stop_signal = signal.SIGTERM
        return real(self, orders, i)
    monkeypatch.setattr(packing.PackTrainer, 'batch', stop_after_three)
    runs = [member_args(two_vars, packed, 'baseline', var, seed) for var, seed in MEMBERS]
    with pytest.raises(SystemExit) as stop:
        train_pack.main([a for r in runs for a in ('--run', shlex.join(r))])
    assert stop.value.code == 130
    for var, seed in MEMBERS:
        assert (packed / f'baseline_{var}_{seed}' / run_folder.batch_checkpoint(0, 3)).exists()
        assert not (packed / f'baseline_{var}_{seed}' / 'done').exists()
    monkeypatch.setattr(packing.PackTrainer, 'batch', real)
    train_pack.main([a for r in runs for a in ('--run', shlex.join(r + ['--resume']))])
    for var, seed in MEMBERS:
        name = f'baseline_{var}_{seed}'
        assert_same(state(alone / name / 'checkpoint_last.pth'), state(packed / name / 'checkpoint_last.pth'))
        assert [r['epoch'] for r in map(json.loads, (packed / name / 'results.jsonl').read_text().splitlines())] \
            == [1, 2]


@pytest.mark.parametrize('other, message', [
    (['--lr', '0.02'], 'differ in lr'),
    (['--method', 'lnl'], 'differ in method'),
])
def test_runs_that_cannot_train_as_one_are_refused(two_vars, tmp_path, other, message):
    a = member_args(two_vars, tmp_path, 'baseline', SMALL_VAR, 1)
    b = member_args(two_vars, tmp_path, 'baseline', OTHER_VAR, 1, *other)
    with pytest.raises(UserError, match=message):
        train_pack.main(['--run', shlex.join(a), '--run', shlex.join(b)])
    with pytest.raises(UserError, match='does not train packed'):
        train_pack.main(['--run', shlex.join(member_args(two_vars, tmp_path, 'csad', SMALL_VAR, 1)),
                         '--run', shlex.join(member_args(two_vars, tmp_path, 'csad', SMALL_VAR, 2))])
    with pytest.raises(UserError, match='at least two runs'):
        train_pack.main(['--run', shlex.join(a)])
    assert not any(tmp_path.iterdir())


def test_a_pack_with_a_run_folder_taken_writes_none_of_its_folders(two_vars, tmp_path):
    a = member_args(two_vars, tmp_path, 'baseline', SMALL_VAR, 1)
    b = member_args(two_vars, tmp_path, 'baseline', OTHER_VAR, 2)
    taken = tmp_path / f'baseline_{OTHER_VAR}_2'
    taken.mkdir()
    (taken / 'results.jsonl').write_text('{"epoch": 1}\n')  # an earlier run of the second member's name
    with pytest.raises(UserError, match='already holds a run'):
        train_pack.main(['--run', shlex.join(a), '--run', shlex.join(b)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [taken.name]  # the first member's folder not started


def test_pack_speed_times_each_pack_against_its_runs_one_by_one(tmp_path):
    from benchmarks import pack_speed
    readme = tmp_path / 'speed.md'
    readme.write_text('<!-- pack_speed:begin -->\n<!-- pack_speed:end -->\n')
    res = pack_speed.main(['--device', 'cpu', '--k', '2', '--methods', 'baseline', '--iters', '1', '--rounds', '1',
                           '--warmup', '1', '--threads', '1', '--readme', str(readme)])
    one, two = res['rows']
    assert (one['k'], two['k']) == (1, 2) and one['speedup'] == 1
    assert two['speedup'] == pytest.approx(2 * one['update_s'] / two['update_s'])
    assert two['run_epoch_s'] == pytest.approx(two['update_s'] * pack_speed.EPOCH_ITERS / 2)
    assert 'ms/update (pack)' in readme.read_text()
