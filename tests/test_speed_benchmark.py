"""Smoke tests of benchmarks/speed.py: tiny synthetic data, a few iterations, on the CPU."""
import json

import numpy as np
import pytest
import torch

from benchmarks import speed
from dataset.tensors import Split, make_split
from option import get_option
from utils import resolve_precision

REQUIRED_NUMBERS = ('baseline_epoch_s', 'lnl_epoch_s', 'floor_baseline_epoch_s', 'floor_lnl_epoch_s',
                    'reference_baseline_epoch_s', 'reference_lnl_epoch_s', 'baseline_vs_floor',
                    'lnl_vs_floor', 'baseline_speedup_vs_reference', 'lnl_speedup_vs_reference')
REQUIRED_OTHER = ('device', 'torch', 'channels_last', 'amp', 'compile', 'iters', 'data', 'precisions',
                  'default_precision', 'cpu_features', 'native_bf16')


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
    """One quick run (fp32 and bf16) with a JSON record and both README sections; its printed output."""
    import contextlib
    import io
    tmp = tmp_path_factory.mktemp('speed')
    readme = tmp / 'README.md'
    readme.write_text('A\n<!-- train_time:begin -->\nold\n<!-- train_time:end -->\nB\n'
                      '<!-- speed:begin -->\n<!-- speed:end -->\n', encoding='utf-8')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        res = speed.main(['--quick', '--iters', '1', '--warmup', '0', '--synthetic', '--n_images', '512',
                          '--num_workers', '0', '--device', 'cpu', '--threads', '1', '--json', str(tmp / 'speed.json'),
                          '--precisions', 'fp32', 'bf16', '--readme', str(readme)])
    return res, out.getvalue(), tmp / 'speed.json', readme


def test_main_prints_json_last(quick):
    returned, stdout, out_file, _ = quick
    lines = stdout.strip().splitlines()
    res = json.loads(lines[-1])
    assert res == returned
    for key in REQUIRED_NUMBERS:
        assert isinstance(res[key], (int, float)) and res[key] > 0, key
    for key in REQUIRED_OTHER:
        assert key in res, key
    assert res['data'] == 'synthetic'
    assert res['iters'] == 1
    assert 'ours s/epoch' in stdout and ('PASS' in stdout or 'FAIL' in stdout)
    # fp32 and bf16 side by side, each against its own floor; the headline is train.py's default precision
    for p in ('fp32', 'bf16'):
        for key in (f'baseline_epoch_s_{p}', f'lnl_epoch_s_{p}', f'baseline_vs_floor_{p}', f'lnl_vs_floor_{p}'):
            assert res[key] > 0, key
        assert f'lnl_vs_floor_{p}' in res['targets']
    default = resolve_precision(get_option(['-e', 'x']), torch.device('cpu'))
    assert res['precision'] == res['default_precision'] == default
    assert res['baseline_epoch_s'] == res[f'baseline_epoch_s_{default}']
    assert 'CPU features:' in stdout
    assert json.loads(out_file.read_text()) == res


def test_readme_sections_with_the_train_sh_times(quick):
    res, _, _, readme = quick
    text = readme.read_text(encoding='utf-8')
    timing = text.split('<!-- train_time:begin -->')[1].split('<!-- train_time:end -->')[0]
    assert 'old' not in timing and '$ python benchmarks/speed.py --quick' in text
    for p in ('fp32', 'bf16'):
        seconds = 100 * (res[f'baseline_epoch_s_{p}'] + res[f'lnl_epoch_s_{p}'])
        expected = f'{seconds / 3600:.1f} h' if seconds >= 5400 else f'{seconds / 60:.0f} min'
        assert f'{p}: `bash train.sh` about {expected}' in timing, timing
    assert f"default precision here: {res['default_precision']}" in timing


def test_reference_dataset_computes_what_make_split_does():
    images, labels = speed.synthetic_colored_mnist(16, seed=3)
    split = make_split(images, labels)
    ds = speed.AuthorsStyleDataset(images, labels)
    for i in range(len(ds)):
        image, color, label = ds[i]
        assert torch.allclose(image, split.images[i], atol=1e-5)
        assert torch.equal(color, split.colors[i])
        assert label == int(split.labels[i])


class _Recorder:
    """Stands in for a method: records which images each update saw."""

    def __init__(self):
        self.seen = []

    def train(self, mode=True):
        pass

    def lr_now(self):
        return 0.0

    def begin_epoch(self, epoch, data, resumed):
        pass

    def update(self, images, colors, labels):
        self.seen.append(images[:, 0, 0, 0].long())
        return {'loss_cls': torch.zeros(())}


def test_ours_blocks_walk_whole_epochs():
    n = 600  # 5 batches of 128, the last one partial
    ids = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 28, 28).contiguous()
    split = Split(images=ids, labels=torch.zeros(n, dtype=torch.int64),
                  colors=torch.zeros(n, 3, 14, 14, dtype=torch.int64), raw=np.zeros((n, 28, 28, 3), np.uint8))
    opt = speed.get_option(['-e', 'speed', '--no_progress', '--device', 'cpu'])
    rec = _Recorder()
    ours = speed.Ours(opt, rec, split, torch.device('cpu'))
    for _ in range(4):
        ours.run(3)  # blocks of 3 cross the epoch boundary
    seen = torch.cat(rec.seen)
    assert len(rec.seen) == 12
    first, second = seen[:n], seen[n:2 * n]
    assert torch.equal(first.sort().values, torch.arange(n))
    assert torch.equal(second.sort().values, torch.arange(n))
    assert not torch.equal(first, second)


def test_authors_lnl_step_updates_as_the_project_lnl_does():
    """The reference's LNL step (the authors' formulation, with its extra work) and the project's LNL
    start from the same weights and end two updates later at the same weights, to rounding."""
    images, labels = speed.synthetic_colored_mnist(64, seed=5)
    split = make_split(images, labels)
    # in float64, so that the comparison sees the formulation, not fp32 rounding (the project's f folds
    # bn0 into conv1; at these step sizes fp32 rounding alone moves conv1 by ~1e-5 after two updates)
    batch = (split.images.double(), split.colors, split.labels)
    _, ours = speed.build('lnl', torch.device('cpu'), speed.parse_args(['--no_channels_last']))
    _, ref = speed.build('lnl', torch.device('cpu'), speed.parse_args([]), reference=True)
    assert isinstance(ref, speed.AuthorsLNLStep) and not isinstance(ours, speed.AuthorsLNLStep)
    assert ours.net.fast_f and not ref.lnl.net.fast_f
    for m in (ours, ref.lnl):  # large enough that every term of the objective shows in the weights
        m.net.double()
        m.h.double()
        m.opt.lambda_, m.opt.mu = 1.0, 0.5
        for o in m.optimizers.values():
            for group in o.param_groups:
                group['lr'] = 0.05
    before = [p.detach().clone() for p in ours.net.parameters()]
    for p, q in zip(ours.net.parameters(), ref.lnl.net.parameters()):
        assert torch.equal(p, q)
    ours.train(True)
    ref.train(True)
    for _ in range(2):
        out_ours = ours.update(*batch)
        out_ref = ref.update(*batch)
        assert torch.allclose(out_ours['loss_mi'].double(), out_ref['loss_mi'].double(), atol=1e-6)
        assert torch.allclose(out_ours['loss_color'].double(), out_ref['loss_color'].double(), atol=1e-6)
    for module in ('net', 'h'):
        pairs = list(zip(getattr(ours, module).state_dict().items(), getattr(ref.lnl, module).state_dict().items()))
        for (name, a), (_, b) in pairs:
            assert torch.allclose(a.double(), b.double(), atol=1e-7, rtol=1e-6), f'{module}.{name}'
    assert any(not torch.equal(a, b) for a, b in zip(before, ours.net.parameters()))


def test_a_saved_record_gives_the_same_report(quick, capsys, tmp_path):
    """--from_json renders the table a run on another machine (a GPU) saved, as that run printed it."""
    from utils import UserError
    _, stdout, record, _ = quick
    printed = stdout.strip().splitlines()[:-1]  # the table, without the JSON line
    readme = tmp_path / 'speed.md'
    readme.write_text('<!-- speed_gpu:begin -->\n<!-- speed_gpu:end -->\n', encoding='utf-8')
    costs = tmp_path / 'README.md'
    costs.write_text('<!-- train_time:begin -->\nkeep\n<!-- train_time:end -->\n<!-- t_gpu:begin -->\n<!-- t_gpu:end -->\n')
    speed.main(['--from_json', str(record), '--readme', str(readme), '--section', 'speed_gpu',
                '--train_time_readme', str(costs), '--train_time_section', 't_gpu'])
    assert capsys.readouterr().out.strip().splitlines() == printed
    assert '\n'.join(printed) in readme.read_text(encoding='utf-8')
    text = costs.read_text()
    assert 'keep' in text and 'fp32: `bash train.sh` about' in text.split('t_gpu:begin')[1]
    with pytest.raises(UserError, match='not a record'):
        speed.main(['--from_json', str(readme)])
    listed = tmp_path / 'list.json'
    listed.write_text('[1, 2]\n')  # JSON, not a record
    with pytest.raises(UserError, match='holds a list, not a JSON object'):
        speed.main(['--from_json', str(listed)])
