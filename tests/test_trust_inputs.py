"""Inputs that must fail cleanly (one line, no hang, no traceback), printed commands that paste back, and smaller
holes: checkpoints of earlier versions and other devices, the authors' Python 2 data file."""
import json
import os
import signal

import numpy as np
import pytest
import torch

from conftest import wait_for, SMALL_VAR, assert_user_error, fake_mnist, popen, run_py, train_args
from dataset import colored_mnist
from dataset.tensors import color_target
from models import ConvNet
import checkpoint
from models.weights import load_net_weights
import trainer


# -- 5. inputs that hung or ended in a traceback ------------------------------------------------------

@pytest.mark.parametrize('args,fragment', [
    (['--color_var', '1e9'], 'must be at most 1'),
    (['--color_var', '0.0204'], 'more than three decimals'),
])
def test_unusable_variances_are_refused(tmp_path, args, fragment):
    proc = run_py(['train.py', '-e', 'x', '--save_dir', tmp_path] + args)
    assert_user_error(proc, fragment)
    proc = run_py(['-m', 'dataset.colored_mnist', '--data_dir', tmp_path] + args)
    assert_user_error(proc, fragment)


def test_a_folder_where_the_data_file_belongs(tmp_path):
    data_dir = tmp_path / 'data'
    os.makedirs(colored_mnist.file_path(str(data_dir), SMALL_VAR))
    proc = run_py(train_args(data_dir, tmp_path / 'runs', 'x', '--max_step', 1))
    assert_user_error(proc, 'is a folder, not a Colored-MNIST file')


@pytest.mark.parametrize('case,fragment', [
    ('empty_test', 'the test split of the data file is empty'),
    ('empty_train', 'the train split of the data file is empty'),
    ('batch', '--batch_size 100000 is larger than the training set'),
    ('n_class', '--n_class 5 is smaller than the data'),
])
def test_inputs_that_do_not_fit_the_data(tmp_path, case, fragment):
    data_dir = tmp_path / 'data'
    data = colored_mnist.generate(fake_mnist(64, 32), SMALL_VAR)
    extra = []
    if case == 'empty_test':
        for k in ('test_image', 'test_label', 'test_gray'):
            data[k] = data[k][:0]
    elif case == 'empty_train':
        for k in ('train_image', 'train_label'):
            data[k] = data[k][:0]
    elif case == 'batch':
        extra = ['--batch_size', 100000]
    else:
        extra = ['--n_class', 5]
    colored_mnist.save(data, colored_mnist.file_path(str(data_dir), SMALL_VAR))
    proc = run_py(train_args(data_dir, tmp_path / 'runs', 'x', '--max_step', 1, *extra))
    assert_user_error(proc, fragment)


def test_num_bins_sets_the_bin_width():
    img = np.zeros((1, 28, 28, 3), dtype=np.uint8)
    img[0, 1, 1] = (1, 128, 254)
    for bins, want in ((8, (0, 4, 7)), (4, (0, 2, 3)), (2, (0, 1, 1)), (16, (0, 8, 15))):
        target = color_target(img, bins)
        assert tuple(int(v) for v in target[0, :, 0, 0]) == want, bins
        assert int(target[0, 0, 1, 1]) == 255  # background stays ignored


def test_num_bins_4_trains_and_tests(small_data_dir, tmp_path):
    proc = run_py(train_args(small_data_dir, tmp_path / 'runs', 'x', '--method', 'lnl', '--num_bins', 4,
                             '--max_step', 1, '--dry_run'))
    assert proc.returncode == 0, proc.stderr
    proc = run_py(['test.py', '-e', 'x', '--save_dir', tmp_path / 'runs', '--data_dir', small_data_dir, '--probe'])
    assert proc.returncode == 0, proc.stderr
    assert 'probe_color_acc' in proc.stdout and 'color_acc' in proc.stdout


def test_checkpoint_whose_state_dict_is_a_tensor(small_data_dir, tmp_path):
    path = tmp_path / 'odd.pth'
    torch.save({'net_state_dict': torch.zeros(3)}, path)
    proc = run_py(['test.py', '--checkpoint', path, '--color_var', SMALL_VAR, '--data_dir', small_data_dir])
    assert_user_error(proc, 'net_state_dict is a Tensor, not a state dict')


def test_collect_results_rejects_a_non_numeric_accuracy(tmp_path):
    run = tmp_path / 'sweep' / 'baseline_var0.020_seed1'
    run.mkdir(parents=True)
    (run / 'options.json').write_text(json.dumps({'method': 'baseline', 'color_var': 0.02, 'random_seed': 1}))
    (run / 'results.jsonl').write_text(json.dumps({'tag': 'test', 'test_acc': 'high'}) + '\n')
    proc = run_py(['-m', 'experiments.collect_results', tmp_path / 'sweep'])
    assert_user_error(proc, "test_acc = 'high', not a number")


def test_ctrl_c_at_start_up_is_one_line():
    from utils import run_main

    def main():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exc:
        run_main(main)
    assert exc.value.code == 130


# -- 6. printed commands paste back ---------------------------------------------------------------------

def test_printed_commands_are_quoted_and_drop_the_resume_path():
    from train import command_line
    argv = ['train.py', '-e', 'my run', '--save_dir', '/tmp/a b', '--resume', '/tmp/a b/checkpoint_last.pth',
            '--max_step', '3']
    line = command_line(argv, drop_resume=True)
    assert line == "python train.py -e 'my run' --save_dir '/tmp/a b' --max_step 3"
    assert command_line(['train.py', '--resume', '--max_step', '3'], drop_resume=True) == \
        'python train.py --max_step 3'


def test_interrupt_hint_pastes_back(small_data_dir, tmp_path):
    runs = tmp_path / 'my runs'
    proc = popen(train_args(small_data_dir, runs, 'r', '--method', 'baseline', '--max_step', 10000))
    wait_for(lambda: (runs / 'r' / 'checkpoint_last.pth').exists(), proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    log = (runs / 'r' / 'train.log').read_text()
    hint = log.split('Resume with: ', 1)[1].splitlines()[0]
    assert f"'{runs}'" in hint and hint.endswith('--resume')


# -- 7. smaller holes ------------------------------------------------------------------------------------

def test_test_py_refuses_another_method_than_the_checkpoints(small_data_dir, tmp_path):
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'g', '--method', 'gray', '--max_step', 1,
                         '--dry_run')).returncode == 0
    proc = run_py(['test.py', '-e', 'g', '--save_dir', runs, '--data_dir', small_data_dir, '--method', 'baseline'])
    assert_user_error(proc, 'is a gray checkpoint', '--method baseline')


def test_a_run_folder_records_the_evaluations_of_its_own_checkpoints_only(small_data_dir, tmp_path):
    """Another run's checkpoint evaluated into a trained run's folder would be counted as that run's result."""
    runs = tmp_path / 'runs'
    assert run_py(train_args(small_data_dir, runs, 'b', '--max_step', 1, '--dry_run')).returncode == 0
    other = tmp_path / 'elsewhere.pth'
    other.write_bytes((runs / 'b' / 'checkpoint_last.pth').read_bytes())
    records = (runs / 'b' / 'results.jsonl').read_text()
    proc = run_py(['test.py', '-e', 'b', '--save_dir', runs, '--data_dir', small_data_dir, '--checkpoint', other])
    assert_user_error(proc, 'is not one of its checkpoints', 'give -e a new name')
    assert (runs / 'b' / 'results.jsonl').read_text() == records
    for name, ckpt in (('b', runs / 'b' / 'checkpoint_last.pth'), ('copy', other)):  # its own; a new folder
        proc = run_py(['test.py', '-e', name, '--save_dir', runs, '--data_dir', small_data_dir, '--checkpoint', ckpt])
        assert proc.returncode == 0, proc.stderr


def test_a_diverging_checkpoint_is_not_called_good():
    class M:
        net = ConvNet()
        h = torch.nn.Linear(2, 2)
    assert trainer.weights_healthy(M)
    with torch.no_grad():
        M.net.conv1.weight[0, 0, 0, 0] = 1.6e9
    assert not trainer.weights_healthy(M)


def test_a_file_that_cannot_be_written_or_is_a_folder_is_one_line(tmp_path):
    from utils import UserError, atomic_write_text, open_no_follow, read_jsonl
    (tmp_path / 'FILE').write_text('x')
    (tmp_path / 'results.jsonl').mkdir()
    for write, fragment in ((tmp_path / 'FILE' / 'out.md', 'cannot write'),
                            (tmp_path / 'results.jsonl', 'is a folder where a file')):
        with pytest.raises(UserError, match=fragment):
            atomic_write_text(str(write), 'text')
    for read in (lambda p: read_jsonl(p), lambda p: open_no_follow(p, 'a')):
        with pytest.raises(UserError, match='where a file belongs'):
            read(str(tmp_path / 'results.jsonl'))
    assert sorted(os.listdir(tmp_path)) == ['FILE', 'results.jsonl']  # no temporary file left behind
    from utils import replace_readme_section
    (tmp_path / 'binary.md').write_bytes(b'\xff\xfe\x00<!-- s:begin -->')
    with pytest.raises(UserError, match='not a UTF-8 text file'):
        replace_readme_section(str(tmp_path / 'binary.md'), 's', 'text')


def test_atomic_writes_flush_the_folder(tmp_path, monkeypatch):
    import utils
    seen = []
    monkeypatch.setattr(utils.files, 'fsync_dir', lambda folder: seen.append(folder))
    utils.atomic_write_text(str(tmp_path / 'f.txt'), 'x')
    assert seen == [str(tmp_path)] and (tmp_path / 'f.txt').read_text() == 'x'


def test_checkpoints_of_earlier_versions_still_load(tmp_path):
    # earlier versions stored NumPy's random state as (name, uint32 array, ...): a plain array, no code
    gen = torch.Generator().manual_seed(1)
    state = checkpoint.rng_state(gen)
    state['numpy'] = np.random.get_state()
    state['python'] = __import__('random').getstate()
    path = tmp_path / 'old.pth'
    torch.save({'format': checkpoint.CHECKPOINT_FORMAT, 'net_state_dict': ConvNet().state_dict(), 'rng': state}, path)
    ckpt = checkpoint.read_checkpoint(str(path))
    checkpoint.set_rng_state(ckpt['rng'], gen)
    assert isinstance(ckpt['rng']['numpy'][1], np.ndarray)


def test_authors_era_state_dict_without_num_batches_tracked_loads(tmp_path):
    """PyTorch <= 0.4.0 saved BatchNorm without num_batches_tracked; such a file is accepted (it was refused as
    'another architecture'), and the weights are the file's."""
    from models import ConvNet
    net = ConvNet()
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith('num_batches_tracked')}
    sd['fc.bias'] = torch.full_like(sd['fc.bias'], 0.25)
    other = ConvNet()
    load_net_weights(other, sd, 'old.pth')
    assert torch.equal(other.fc.bias, sd['fc.bias'])


def test_bf16_is_native_only_on_compute_capability_8(monkeypatch):
    from utils import native_bf16
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)  # counts emulation
    for cap, native in (((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None, cap=cap: cap)
        assert native_bf16(torch.device('cuda')) is native


def test_an_earlier_checkpoint_s_cuda_states_restore_the_run_s_own_device_only(monkeypatch, capsys):
    """Earlier versions saved the random state of every visible CUDA device; a run now restores its own
    device's (by index) and no other, and a CPU run none."""
    seen = {}
    monkeypatch.setattr(torch.cuda, 'set_rng_state', lambda state, device: seen.setdefault(str(device), state))
    gen = torch.Generator()
    state = checkpoint.rng_state(gen, torch.device('cpu'))
    assert 'cuda' not in state
    zeros, ones = torch.zeros(4, dtype=torch.uint8), torch.ones(4, dtype=torch.uint8)
    state['cuda'] = [zeros, ones]
    checkpoint.set_rng_state(state, gen, torch.device('cpu'))
    assert not seen
    checkpoint.set_rng_state(state, gen, torch.device('cuda', 1))
    assert list(seen) == ['cuda:1'] and torch.equal(seen['cuda:1'], ones)
    seen.clear()
    state['cuda'] = [zeros]
    checkpoint.set_rng_state(state, gen, torch.device('cuda', 1))
    assert not seen and 'saved the random state of 1 CUDA devices' in capsys.readouterr().err


def _python2_npy(data):
    """The bytes Python 2's np.save wrote for a dict: a version 1.0 header for a 0-d object array, then a
    protocol-2 pickle in which every string is a byte string (BINSTRING, no unicode opcodes) and NumPy's
    globals live in numpy.core."""
    import io
    import pickle
    import struct

    class Py2Pickler(pickle._Pickler):
        def save_bytes(self, b):
            if len(b) < 256:
                self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
            else:
                self.write(pickle.BINSTRING + struct.pack('<i', len(b)) + b)

        def save_str(self, s):
            self.save_bytes(s.encode('latin-1'))

        def save_global(self, obj, name=None):
            module = obj.__module__.replace('numpy._core', 'numpy.core')
            self.write(pickle.GLOBAL + f'{module}\n{name or obj.__qualname__}\n'.encode('ascii'))
            self.memoize(obj)

        dispatch = dict(pickle._Pickler.dispatch)
        dispatch[bytes] = save_bytes
        dispatch[str] = save_str
    arr = np.empty((), dtype=object)
    arr[()] = data
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {'descr': '|O', 'fortran_order': False, 'shape': ()})
    Py2Pickler(buf, protocol=2).dump(arr)
    return buf.getvalue()


def test_a_python2_authors_file_loads(tmp_path):
    """The authors' files were written by Python 2 (pickle protocol 2, byte strings read as latin-1): such a
    file loads through the restricted reader with the same arrays, and so does the authors' own idiom."""
    import pickletools
    from conftest import fake_mnist
    from dataset import colored_mnist
    data = colored_mnist.generate(fake_mnist(16, 8), 0.02, seed=1)
    del data['mean_colors'], data['seed']  # the authors' keys only
    raw = _python2_npy(data)
    ops = {op.name for op, _, _ in pickletools.genops(raw[raw.index(b'\x80\x02'):])}
    assert 'BINUNICODE' not in ops and {'SHORT_BINSTRING', 'BINSTRING', 'GLOBAL'} <= ops
    assert b'numpy.core.multiarray' in raw and b'numpy._core' not in raw
    path = tmp_path / 'mnist_10color_jitter_var_0.020.npy'
    path.write_bytes(raw)
    loaded = colored_mnist.load(str(path))
    assert sorted(loaded) == sorted(data) and all(np.array_equal(loaded[k], data[k]) for k in data)
    idiom = np.load(path, encoding='latin1', allow_pickle=True).item()
    assert all(np.array_equal(idiom[k], data[k]) for k in data)
