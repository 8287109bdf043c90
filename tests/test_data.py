"""Colored-MNIST: the protocol, the generator, the file format and the in-memory tensors (damaged files and raw
MNIST: test_data_sources.py)."""
import math
import os

import numpy as np
import pytest
import torch

from conftest import SMALL_VAR, fake_mnist, run_py
from dataset import colored_mnist
from dataset.tensors import color_target, load_splits, make_split, nearest_mean_color, to_gray
from utils import UserError


def _phi(x):
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _Phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def truncated_normal_moments(mean, std, low, high):
    a, b = (low - mean) / std, (high - mean) / std
    z = _Phi(b) - _Phi(a)
    m = mean + std * (_phi(a) - _phi(b)) / z
    var = std ** 2 * (1 + (a * _phi(a) - b * _phi(b)) / z - ((_phi(a) - _phi(b)) / z) ** 2)
    return m, math.sqrt(var)


def stroke_colors(images, gray):
    """The flat colour of each image's stroke (N, 3), checking that it is flat."""
    mask = gray > 128
    first = np.argmax(mask.reshape(len(mask), -1), axis=1)
    cols = images.reshape(len(images), -1, 3)[np.arange(len(images)), first]
    assert (images[mask] == np.repeat(cols, mask.reshape(len(mask), -1).sum(1), axis=0)).all()
    return cols


def test_protocol_statistics_on_real_mnist(real_020):
    mnist, data = real_020
    for split in ('train', 'test'):
        img, gray = data[f'{split}_image'], mnist[f'{split}_images']
        stroke = gray > 128
        # stroke = grey > 128 gets a colour (never exactly 0 in any channel); the rest is exactly black
        assert (img[~stroke] == 0).all()
        assert (img[stroke] > 0).all() and (img[stroke] < 255).all()
    assert (data['test_gray'] == mnist['test_images']).all()
    assert (data['train_label'] == mnist['train_labels']).all()

    cols = stroke_colors(data['train_image'], mnist['train_images']).astype(np.float64)
    std = math.sqrt(0.020) * 255
    for k in range(10):
        c = cols[data['train_label'] == k]
        for ch in range(3):
            m, s = floored_truncated_moments(colored_mnist.MEAN_COLORS[k, ch], std)
            # stratified draws: the class's empirical moments are those of the distribution, to a small
            # fraction of the ~0.5-unit standard error that independent draws would leave
            assert abs(c[:, ch].mean() - m) < 0.05, (k, ch, c[:, ch].mean(), m)
            assert abs(c[:, ch].std() - s) < 0.01 * s, (k, ch, c[:, ch].std(), s)


def floored_truncated_moments(mean, std, low=colored_mnist.LOW, high=colored_mnist.HIGH):
    """Mean and std of floor(X), X ~ N(mean, std^2) (0..255 scale) truncated to [low, high + 1)."""
    edges = np.arange(low, high + 2, dtype=np.float64)
    cdf = np.array([_Phi((e - mean) / std) for e in edges])
    p = np.diff(cdf) / (cdf[-1] - cdf[0])
    k = edges[:-1]
    m = (p * k).sum()
    return m, math.sqrt((p * (k - m) ** 2).sum())


def test_default_palette_reproduces_the_released_statistics(real_020):
    # The released file's per-class statistics (its own estimator), full 60,000-image training split:
    # class means within +-1.0 unit (about two standard errors of the released file's sampling noise,
    # ~0.46 for 6,000 images with sigma = 36 units) and variances within +-0.002.
    from dataset import color_stats
    _, data = real_020
    result = color_stats.compare(data['train_image'], data['train_label'])
    assert abs(result['worst_mean'][2]) <= 1.0, result['worst_mean']
    assert abs(result['worst_var'][2]) <= 0.002, result['worst_var']
    assert color_stats.within_tolerance(result)


def test_supplementary_palette_does_not_reproduce_the_released_statistics(real_mnist):
    from dataset import color_stats
    data = colored_mnist.generate(real_mnist, 0.020, palette='supplementary_names')
    assert (data['mean_colors'] == colored_mnist.PALETTES['supplementary_names']).all()
    result = color_stats.compare(data['train_image'], data['train_label'])
    assert not color_stats.within_tolerance(result)
    k, ch, diff = result['worst_mean']
    assert abs(diff) > 10 and k in (0, 2, 3, 4, 7), result['worst_mean']


def test_stats_estimator_borrows_from_the_next_channel():
    from dataset import color_stats
    img = np.zeros((2, 28, 28, 3), dtype=np.uint8)
    img[0, 5, 5:9] = (128, 2, 60)     # G at or below 2 is skipped: (R, B, R of the next pixel)
    img[1, 3, 3:9] = (10, 20, 30)
    est = color_stats.first_three_bright(img)
    assert est.tolist() == [[128, 60, 128], [10, 20, 30]]


def test_check_flag_prints_the_worst_cell(tmp_path, real_020, monkeypatch):
    _, data = real_020
    shown = {'data': data}  # what the file holds; read in memory rather than written as a 170 MB file
    from dataset import color_stats  # --check reads the file through color_stats.check_file
    monkeypatch.setattr(color_stats, 'load', lambda path, color_var=None: shown['data'])
    path = tmp_path / 'mnist_10color_jitter_var_0.020.npy'
    proc = run_py(['-m', 'dataset.colored_mnist', '--check', path])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'worst mean: digit' in proc.stdout and 'within tolerance' in proc.stdout
    shown['data'] = dict(data, train_image=np.where(data['train_image'] > 0, data['train_image'] // 2 + 1, 0)
                         .astype(np.uint8))
    proc = run_py(['-m', 'dataset.colored_mnist', '--check', path])
    assert proc.returncode == 1 and 'OUT OF TOLERANCE' in proc.stdout, proc.stdout + proc.stderr


def test_test_colour_is_independent_of_label(real_020):
    mnist, data = real_020
    cols = stroke_colors(data['test_image'], mnist['test_images']).astype(np.float64)
    labels = data['test_label']
    # The mean test colour of every class is close to the average of the ten colours (a label-independent
    # draw), far from the class's own colour.
    overall = colored_mnist.MEAN_COLORS.astype(np.float64).mean(0)
    for k in range(10):
        class_mean = cols[labels == k].mean(0)
        assert np.abs(class_mean - overall).max() < 20, (k, class_mean, overall)
    # and the nearest-mean-colour index is spread over all ten colours for every label
    idx = nearest_mean_color(data['test_image'])
    table = np.zeros((10, 10))
    np.add.at(table, (labels, idx), 1)
    frac = table / table.sum(1, keepdims=True)
    assert frac.min() > 0.03 and frac.max() < 0.25


def test_train_colour_follows_label(real_020):
    _, data = real_020
    # with sigma = 0.14 the jitter sometimes moves a colour nearer to another class's mean
    idx = nearest_mean_color(data['train_image'][:5000])
    assert (idx == data['train_label'][:5000]).mean() > 0.75


def test_deterministic_and_seeded(tmp_path):
    mnist = fake_mnist()
    a, b = tmp_path / 'a.npy', tmp_path / 'b.npy'
    colored_mnist.save(colored_mnist.generate(mnist, 0.03, seed=5), a)
    colored_mnist.save(colored_mnist.generate(mnist, 0.03, seed=5), b)
    assert a.read_bytes() == b.read_bytes()
    c = colored_mnist.generate(mnist, 0.03, seed=6)
    assert not (c['train_image'] == colored_mnist.generate(mnist, 0.03, seed=5)['train_image']).all()


def test_authors_loading_idiom_round_trip(small_data_dir):
    path = colored_mnist.file_path(str(small_data_dir), SMALL_VAR)
    assert os.path.basename(path) == 'mnist_10color_jitter_var_0.020.npy'
    d = np.load(path, encoding='latin1', allow_pickle=True).item()
    assert sorted(d) == sorted(['train_image', 'train_label', 'test_image', 'test_label', 'test_gray', 'mean_colors',
                               'seed'])
    assert d['train_image'].dtype == np.uint8 and d['train_image'].shape[1:] == (28, 28, 3)
    assert d['test_image'].dtype == np.uint8 and d['test_image'].shape[1:] == (28, 28, 3)
    assert d['test_gray'].dtype == np.uint8 and d['test_gray'].shape[1:] == (28, 28)
    assert d['train_label'].shape == (len(d['train_image']),)
    loaded = colored_mnist.load(path)
    for k in d:
        assert (loaded[k] == d[k]).all()


def test_no_temporary_files_left(small_data_dir):
    assert [f for f in os.listdir(small_data_dir) if not f.endswith('.npy')] == []


def test_color_target_of_hand_made_image():
    img = np.zeros((1, 28, 28, 3), dtype=np.uint8)
    # PIL's nearest-neighbour 28 -> 14 samples source pixel 2*i + 1
    img[0, 1, 1] = (0, 31, 32)
    img[0, 3, 5] = (255, 200, 1)
    img[0, 2, 2] = (100, 100, 100)  # even position: not sampled
    t = color_target(img)
    assert t.shape == (1, 3, 14, 14) and t.dtype == torch.int64
    assert t[0, :, 0, 0].tolist() == [255, 0, 1]
    assert t[0, :, 1, 2].tolist() == [7, 6, 0]
    assert t[0, :, 1, 1].tolist() == [255, 255, 255]
    assert (t[0, :, 5:, 5:] == 255).all()


def _pil_target(img):
    """The authors' colour target through PIL: a nearest-neighbour 14x14 resize, value // 32, 255 on black."""
    from PIL import Image
    ref = []
    for im in img:
        s = np.asarray(Image.fromarray(im).resize((14, 14), Image.NEAREST)).transpose(2, 0, 1).astype(np.int64)
        lab = s // 32
        lab[s == 0] = 255
        ref.append(lab)
    return np.stack(ref)


def test_color_target_matches_pil():
    data = colored_mnist.generate(fake_mnist(64, 8), 0.05, seed=1)
    img = data['train_image']
    assert (color_target(img).numpy() == _pil_target(img)).all()


def test_tensors_normalised_and_gray_view():
    data = colored_mnist.generate(fake_mnist(64, 8), 0.05, seed=1)
    split = make_split(data['train_image'], data['train_label'])
    x = split.images
    assert x.shape == (64, 3, 28, 28) and x.dtype == torch.float32
    expect = (data['train_image'][3, 10, 10, 1] / 255 - 0.4822) / 0.1994
    assert abs(float(x[3, 1, 10, 10]) - expect) < 1e-5
    g = make_split(data['train_image'], data['train_label'], gray=True)
    gi = g.images * torch.tensor([0.2023, 0.1994, 0.2010]).view(1, 3, 1, 1) + \
        torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    assert torch.allclose(gi[:, 0], gi[:, 1], atol=1e-5) and torch.allclose(gi[:, 1], gi[:, 2], atol=1e-5)
    px = data['train_image'][3, 10, 10].astype(float)
    assert to_gray(data['train_image'])[3, 10, 10, 0] == round(px @ [0.299, 0.587, 0.114])
    assert (g.colors == split.colors).all()  # h's target still describes the colour


def test_validation_split_is_held_out(small_data_dir):
    path = colored_mnist.file_path(str(small_data_dir), SMALL_VAR)
    s = load_splits(path, val_size=100, seed=0)
    assert len(s['val']) == 100 and len(s['train']) == 412 and len(s['test']) == 256
    with pytest.raises(UserError, match='--val_size'):
        load_splits(path, val_size=512)


def test_generator_cli(tmp_path, monkeypatch):
    monkeypatch.setattr(colored_mnist, 'load_mnist', lambda **kw: fake_mnist(200, 100))
    proc = run_py(['-m', 'dataset.colored_mnist', '--color_var', '0.045', '--data_dir', tmp_path, '--seed', '4'])
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / 'mnist_10color_jitter_var_0.045.npy'
    assert out.exists() and str(out) in proc.stdout and 'sha256' in proc.stdout
    d = colored_mnist.load(str(out))
    assert d['train_image'].shape == (200, 28, 28, 3) and d['test_image'].shape == (100, 28, 28, 3)


def test_generator_cli_rejects_bad_variance(tmp_path):
    proc = run_py(['-m', 'dataset.colored_mnist', '--color_var', '-0.1', '--data_dir', tmp_path])
    assert proc.returncode == 2 and 'must be a positive number' in proc.stderr and 'Traceback' not in proc.stderr


def test_the_palette_travels_with_the_file(tmp_path):
    data = colored_mnist.generate(fake_mnist(64, 32), 0.05, seed=1, palette='supplementary_names')
    path = str(tmp_path / colored_mnist.file_name(0.05, 'supplementary_names'))
    assert path.endswith('mnist_10color_jitter_var_0.050_supplementary_names.npy')
    colored_mnist.save(data, path)
    # the authors' loader reads the file as before; the extra key is one more array in the dict
    authors = np.load(path, encoding='latin1', allow_pickle=True).item()
    assert authors['train_image'].shape == (64, 28, 28, 3) and authors['mean_colors'].shape == (10, 3)
    splits = load_splits(path, palette='supplementary_names')
    assert (splits['test'].mean_colors == colored_mnist.PALETTES['supplementary_names']).all()
    # the aligned/conflicting split measures nearness to the file's own colours
    expect = nearest_mean_color(data['test_image'], colored_mnist.PALETTES['supplementary_names'])
    assert (splits['test'].mean_index == expect).all()
    with pytest.raises(UserError, match='supplementary_names palette'):
        load_splits(path)  # asks for the released palette


def test_a_file_without_mean_colors_is_read_as_the_released_palette(tmp_path):
    data = colored_mnist.generate(fake_mnist(64, 32), 0.05, seed=1)
    del data['mean_colors']
    path = str(tmp_path / colored_mnist.file_name(0.05))
    colored_mnist.save(data, path)
    notes = []
    splits = load_splits(path, log=notes.append)
    assert (splits['train'].mean_colors == colored_mnist.PALETTES['released']).all()
    assert len(notes) == 1 and 'does not record its mean colours' in notes[0] and 'released' in notes[0]


def test_sampling_is_floor_of_a_truncated_normal():
    rng = np.random.default_rng(0)
    idx = np.zeros(20000, dtype=int)
    one = np.array([[0, 128, 255]] + [[0, 0, 0]] * 9, dtype=np.uint8)
    cols = colored_mnist.sample_colors(idx, 0.02, rng, one).astype(np.float64)
    assert cols.min() >= 1 and cols.max() <= 254
    for ch in range(3):
        m, s = floored_truncated_moments(one[0, ch], math.sqrt(0.02) * 255)
        assert abs(cols[:, ch].mean() - m) < 0.05 and abs(cols[:, ch].std() - s) < 0.01 * s
    # rounding instead of flooring would put the interior mean 0.5 higher
    assert abs(cols[:, 1].mean() - 127.5) < 0.1


def test_a_keyless_file_is_matched_by_its_colours(tmp_path):
    # an old file of this project (supplementary colours, no key) is not mistaken for the default data
    old = colored_mnist.generate(fake_mnist(400, 32), 0.02, seed=1, palette='supplementary_names')
    del old['mean_colors']
    path = str(tmp_path / colored_mnist.file_name(0.02))
    colored_mnist.save(old, path)
    with pytest.raises(UserError, match='supplementary_names palette.*--palette released'):
        load_splits(path, color_var=0.02)
    notes = []
    splits = load_splits(path, color_var=0.02, palette='supplementary_names', log=notes.append)
    assert (splits['train'].mean_colors == colored_mnist.PALETTES['supplementary_names']).all()
    assert len(notes) == 1 and 'match the supplementary_names palette' in notes[0]


def test_gray_test_views(small_data_dir):
    """Gray's test inputs: the luminance of the coloured digits (default), or the file's test_gray digits
    before colouring; training is always the luminance view; the colour target and the coloured raw images
    (aligned/conflicting) stay those of the coloured digits."""
    from dataset.tensors import load_splits, normalize, to_gray
    path = colored_mnist.file_path(str(small_data_dir), SMALL_VAR)
    data = colored_mnist.load(path)
    lum = load_splits(path, gray=True, gray_view='luminance')
    orig = load_splits(path, gray=True, gray_view='original')
    assert torch.equal(load_splits(path, gray=True)['test'].images, orig['test'].images)  # the default view
    assert torch.equal(lum['test'].images, normalize(to_gray(data['test_image'])))
    assert torch.equal(orig['test'].images, normalize(np.repeat(data['test_gray'][..., None], 3, axis=-1)))
    assert not torch.equal(lum['test'].images, orig['test'].images)
    assert torch.equal(orig['train'].images, normalize(to_gray(data['train_image'])))
    assert torch.equal(orig['test'].colors, lum['test'].colors) and np.array_equal(orig['test'].raw, data['test_image'])


def test_a_keyless_file_far_from_every_palette_is_refused(tmp_path):
    """A file without mean_colors whose colours match no palette (here: every class the colour of another)
    was read as 'released' at 127 units RMS; it is refused, naming the distance."""
    from utils import UserError
    data = colored_mnist.generate(fake_mnist(400, 32), 0.02, seed=1)
    del data['mean_colors']
    data['train_label'] = ((data['train_label'].astype(int) + 5) % 10).astype(np.uint8)  # colours of other classes
    path = colored_mnist.file_path(str(tmp_path), 0.02)
    colored_mnist.save(data, path)
    with pytest.raises(UserError, match='units .RMS. from the nearest palette'):
        load_splits(path, color_var=0.02)


def test_a_run_refuses_a_data_file_of_another_seed(small_data_dir, tmp_path):
    """--data_seed was ignored whenever the file existed: two runs recorded different seeds and trained on the
    same bytes. The file records its seed, a run that asks for another is refused (naming both), and a run
    records the seed of the file it trained on."""
    import json
    from utils import UserError
    path = colored_mnist.file_path(str(small_data_dir), SMALL_VAR)  # generated with seed 3
    assert int(colored_mnist.load(path)['seed']) == 3
    load_splits(path, data_seed=3, check_data_seed=True)
    with pytest.raises(UserError, match='generated with seed 3, but the run asks for --data_seed 6'):
        load_splits(path, data_seed=6, check_data_seed=True)
    proc = run_py(['train.py', '-e', 'r', '--save_dir', tmp_path / 'runs', '--data_dir', small_data_dir, '--no_generate',
                   '--dry_run', '--max_step', 1, '--data_seed', 4])
    assert proc.returncode == 2 and '--data_seed 4' in proc.stderr
    assert run_py(['train.py', '-e', 'r', '--save_dir', tmp_path / 'runs', '--data_dir', small_data_dir, '--no_generate',
                   '--dry_run', '--max_step', 1]).returncode == 0
    assert json.loads((tmp_path / 'runs' / 'r' / 'options.json').read_text())['data_file_seed'] == 3
    data = colored_mnist.load(path)
    del data['seed']  # an authors' file: accepted without --data_seed, refused with one
    colored_mnist.save(data, path)
    assert load_splits(path, check_data_seed=True)
    with pytest.raises(UserError, match='does not record the seed'):
        load_splits(path, data_seed=3, check_data_seed=True)


def test_sampling_joint_law_per_class():
    """Within a class, the three channels are independent draws (correlation near 0), the colours do not
    depend on the image's position (strata shuffled), and each channel's bytes follow the floored truncated
    normal (Kolmogorov-Smirnov distance below 0.015). Fails when one draw is shared by R, G and B
    (correlation 1) or when the strata are left in order (correlation with the index near 1)."""
    rng = np.random.default_rng(0)
    n = 6000
    mean = np.array([[200, 128, 60]] + [[0, 0, 0]] * 9, dtype=np.uint8)
    cols = colored_mnist.sample_colors(np.zeros(n, dtype=int), 0.02, rng, mean).astype(np.float64)
    corr = np.corrcoef(np.column_stack([cols, np.arange(n)]).T)
    assert np.abs(corr[:3, :3][~np.eye(3, dtype=bool)]).max() < 0.05
    assert np.abs(corr[3, :3]).max() < 0.05
    std = math.sqrt(0.02) * 255
    edges = np.arange(1, 256, dtype=np.float64)  # byte k <=> 255 v in [k, k + 1), k = 1..254
    for ch in range(3):
        mu = float(mean[0, ch])
        cdf = torch.special.ndtr(torch.as_tensor((edges - mu) / std)).numpy()
        true = (cdf[1:] - cdf[0]) / (cdf[-1] - cdf[0])  # P(byte <= k), k = 1..254
        emp = np.searchsorted(np.sort(cols[:, ch]), np.arange(1, 255), side='right') / n
        assert np.abs(emp - true).max() < 0.015, (ch, np.abs(emp - true).max())


def test_color_target_matches_pil_on_unaligned_strokes():
    """Random pixels everywhere (no 2-pixel alignment): sampling any other pixel of a 2x2 block than PIL's
    (source index 2i + 1) fails."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, size=(16, 28, 28, 3)).astype(np.uint8)
    img[rng.random((16, 28, 28)) < 0.4] = 0  # background pixels
    assert (color_target(img).numpy() == _pil_target(img)).all()


def test_test_gray_is_optional_unless_the_original_grey_view_is_asked_for(tmp_path):
    from utils import UserError
    data = colored_mnist.generate(fake_mnist(64, 32), 0.02, seed=1)
    del data['test_gray']
    path = colored_mnist.file_path(str(tmp_path), 0.02)
    colored_mnist.save(data, path)
    assert len(load_splits(path, gray=True, gray_view='luminance')['test']) == 32
    assert len(load_splits(path)['test']) == 32  # a colour-input method never reads it
    with pytest.raises(UserError, match='no test_gray'):
        load_splits(path, gray=True, gray_view='original')
