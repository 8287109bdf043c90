"""The method registry is the one place a method is declared: an extra method, registered for the length of
a test, trains in a sweep (after the run it starts from, at its own learning rate, with its own option),
is evaluated and reported, without a line changed anywhere else."""
import json

import pytest
import torch.nn.functional as F

import methods
from conftest import SMALL_VAR
from experiments import collect_results, sweep
from option import get_option
from utils import sha256_file


class Tiny(methods.Baseline):
    """The baseline with its cross-entropy scaled by its own option, started from the baseline run."""
    name, card = 'tiny', methods.Card('Tiny', 'tab:purple')
    start_from, lr = 'baseline', 0.002
    probed = False
    hyper_parameters = (methods.HyperParameter('--tiny_scale', 'tiny_scale', 1.0, 'Tiny: scale of the loss'),)

    def update(self, images, colors, labels):
        with self.autocast():
            logits = self.predict(images)
            loss = self.opt.tiny_scale * F.cross_entropy(logits.float(), labels)
        self.zero_grad()
        loss.backward()
        self.optimizers['net'].step()
        return {'loss_cls': loss.detach(), 'acc': self._acc(logits.detach(), labels)}


def test_an_extra_method_runs_through_the_sweep_and_the_report(small_data_dir, tmp_path):
    out = tmp_path / 'sweep'
    with methods.registered(Tiny):
        assert get_option(['-e', 'x', '--method', 'tiny']).tiny_scale == 1.0
        assert 'tiny_scale' in methods.run_defining('tiny') and 'tiny_scale' not in methods.run_defining('lnl')
        argv = ['--color_vars', f'{SMALL_VAR:.3f}', '--methods', 'tiny', 'baseline', '--seeds', '1',
                '--out', str(out), '--data_dir', str(small_data_dir), '--launcher', 'inprocess',
                '--', '--dry_run', '--max_step', '2', '--no_generate', '--tiny_scale', '0.5']
        results = sweep.main(argv)
        assert results == {'baseline_var0.020_seed1': 'finished', 'tiny_var0.020_seed1': 'finished'}
        # relaunched, the finished runs are kept (only --smoke starts its runs afresh)
        assert set(sweep.main(argv).values()) == {'skipped'}
        opts = json.loads((out / 'tiny_var0.020_seed1' / 'options.json').read_text())
        assert opts['method'] == 'tiny' and opts['lr'] == 0.002 and opts['tiny_scale'] == 0.5
        # it started from the baseline's finished checkpoint (the one its done marker names), and recorded its hash
        assert opts['use_pretrain'] and opts['checkpoint'].endswith('baseline_var0.020_seed1/checkpoint_epoch_0002.pth')
        assert opts['pretrain_sha256'] == sha256_file(opts['checkpoint'])
        prefix = tmp_path / 'report' / 'fig4'
        agg = collect_results.main([str(out), '--out_prefix', str(prefix)])
        assert ('tiny', '0.020') in agg['cells'] and agg['methods'][-1] == 'tiny'
        table = (tmp_path / 'report' / 'fig4.md').read_text(encoding='utf-8')
        assert '| Tiny |' in table and '| Baseline |' in table
        assert (tmp_path / 'report' / 'fig4.png').is_file()
    # the registry is as it was: the extra method is gone from every command
    assert 'tiny' not in methods.METHODS
    with pytest.raises(SystemExit):
        get_option(['-e', 'x', '--method', 'tiny'])
