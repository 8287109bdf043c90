"""K runs of one method trained as one network (``train_pack.py``): each run keeps its own :class:`trainer.Trainer`
(its data, batch order, run folder, logger, evaluation and checkpoints) around an ordinary one-run method, its
*view*; :class:`PackTrainer` trains a packed method (``members = K``: grouped convolutions, :mod:`models.pack`)
that holds all K runs' weights and optimiser states, and copies each run's share back into its view whenever a run
is evaluated or saved. Every mini-batch is the K runs' own batches side by side and one update of the method's
own code (the same :meth:`methods.Method.update` as alone, its losses reduced per member), so each run trains as it
would alone, to float rounding (tests/test_pack.py). The runs must agree on everything but their own
(:data:`MEMBER_OWN`) and be at the same point (all fresh, or all stopped at the same batch).
"""
import time

import numpy as np
import torch
from tqdm import tqdm

import methods
import run_folder
from methods.base import Method
from models.pack import (member_optimizer_state, member_state_dict, pack_optimizer_states, pack_state_dicts)
from trainer import Interrupted, StopOnSignal
from utils import UserError

# the options in which the runs of a pack may differ: which run it is, where it is written, what it starts from
MEMBER_OWN = frozenset({'exp_name', 'color_var', 'random_seed', 'checkpoint', 'pretrain_sha256', 'data_file_seed',
                        'resume', 'overwrite', 'save_dir', 'data_seed', 'use_pretrain', 'environment',
                        'precision_requested'})


def check_packable(opts):
    """Refuse, in one line, runs that cannot train as one pack."""
    if len(opts) < 2:
        raise UserError('a pack is at least two runs; train one run with train.py')
    cls = methods.get(opts[0].method)
    if not cls.packable:
        packable = ', '.join(n for n in methods.method_names() if methods.get(n).packable)
        raise UserError(f'--method {opts[0].method} does not train packed (packable: {packable}); train its runs '
                        'one by one with train.py')
    first = vars(opts[0])
    for opt in opts[1:]:
        other = vars(opt)
        differ = sorted(k for k in set(first) | set(other) if k not in MEMBER_OWN and first.get(k) != other.get(k))
        if differ:
            raise UserError(f'the runs of a pack must agree on everything but {", ".join(sorted(MEMBER_OWN))}; '
                            f'{opts[0].exp_name} and {opt.exp_name} differ in {", ".join(differ)}')
    names = [(o.save_dir, o.exp_name) for o in opts]
    if len(set(names)) < len(names):
        raise UserError('two runs of the pack write the same run folder; give each its own -e/--exp_name')


class PackTrainer(StopOnSignal):
    """Trains the runs of ``trainers`` (one :class:`trainer.Trainer` each, made ready as for training alone) as one
    packed method."""

    def __init__(self, trainers):
        self.trainers = trainers
        self.k = len(trainers)
        first = trainers[0]
        self.opt, self.device = first.opt, first.method.device
        starts = {(t.start_epoch, self._position(t)) for t in trainers}
        if len(starts) > 1:
            raise UserError('the runs of a pack are at different points (' + ', '.join(
                f'{t.opt.exp_name}: epoch {t.start_epoch}, batch {self._position(t)}' for t in trainers) +
                '); train them on one by one with train.py --resume, or pack runs that stop together')
        if type(first.method).begin_epoch is not Method.begin_epoch:
            raise UserError(f'--method {self.opt.method} does work before its epochs; it does not train packed')
        sizes = {len(t.splits['train']) for t in trainers}
        if len(sizes) > 1:
            raise UserError(f'the runs of a pack have training sets of different sizes ({sorted(sizes)}); '
                            'pack runs of the same --val_size on full data files')
        self.start_epoch = first.start_epoch
        self.packed = methods.build_method(self.opt, self.device, members=self.k)
        self.pack_in()

    @staticmethod
    def _position(t):
        progress = t.progress or {}
        return progress.get('pos', 0) if 'before_epoch' not in progress else 0

    # -- the runs' state into the pack and back --
    def _modules(self, m):
        return (('net', m.net), ('h', m.h))

    def pack_in(self):
        views = [t.method for t in self.trainers]
        self.starts = {}
        for name, module in self._modules(self.packed):
            states = [{k: t.clone() for k, t in getattr(v, name).state_dict().items()} for v in views]
            module.load_state_dict(pack_state_dicts(states))
            self.starts[name] = ({k: v.clone() for k, v in module.state_dict().items() if v.dim() == 0}, states)
        for name, o in self.packed.optimizers.items():
            params = [p for g in o.param_groups for p in g['params']]
            o.load_state_dict(pack_optimizer_states([v.optimizers[name].state_dict() for v in views], params))
        for name, s in self.packed.schedulers.items():
            s.load_state_dict(views[0].schedulers[name].state_dict())

    def unpack(self):
        """Each run's share of the packed weights, BatchNorm statistics, optimiser and schedule into its view."""
        for k, t in enumerate(self.trainers):
            view = t.method
            for name, module in self._modules(self.packed):
                getattr(view, name).load_state_dict(member_state_dict(module.state_dict(), k, self.k,
                                                                      self.starts[name]))
            for name, o in self.packed.optimizers.items():
                view.optimizers[name].load_state_dict(member_optimizer_state(o.state_dict(), k, self.k))
            for name, s in self.packed.schedulers.items():
                view.schedulers[name].load_state_dict(s.state_dict())

    # -- loop --
    def fit(self):
        """Train every run to ``--max_step``; returns each run's last checkpoint."""
        opt, trainers = self.opt, self.trainers
        train0 = trainers[0].splits['train']
        n_batches = 1 if opt.dry_run else train0.num_batches(opt.batch_size)
        with self.signals():
            for epoch in range(self.start_epoch, opt.max_step):
                records = self.train_epoch(epoch, n_batches)
                self.packed.step_schedulers()
                self.unpack()
                for t, record in zip(trainers, records):
                    t.end_epoch(record, epoch)
        return [t.last_saved for t in trainers]

    def _orders(self):
        """Each run's batch order and sums for this epoch, and the batch to start at (the same for all)."""
        orders, sums, pos = [], [], 0
        for t in self.trainers:
            progress, t.progress = t.progress, None
            train = t.splits['train']
            if progress is not None and 'before_epoch' not in progress:  # resuming in the middle of this epoch
                orders.append(progress['order'].to(train.labels.device))
                pos = progress['pos']
                sums.append({k: torch.as_tensor(v) for k, v in progress['sums'].items()})
            else:
                orders.append(torch.randperm(len(train), generator=t.batch_gen).to(train.labels.device))
                sums.append({})
        return orders, sums, pos

    def batch(self, orders, i):
        """The runs' i-th batches side by side: images and colour maps as blocks of channels, labels as columns."""
        bs, parts = self.opt.batch_size, []
        for t, order in zip(self.trainers, orders):
            train, idx = t.splits['train'], order[i * bs:(i + 1) * bs]
            parts.append((train.images[idx], train.colors[idx], train.labels[idx]))
        fmt = torch.channels_last if self.opt.channels_last else torch.contiguous_format
        images = torch.cat([p[0] for p in parts], 1).contiguous(memory_format=fmt)
        return images, torch.cat([p[1] for p in parts], 1), torch.stack([p[2] for p in parts], 1)

    def train_epoch(self, epoch, n_batches):
        opt, m = self.opt, self.packed
        m.train(True)
        orders, sums, pos = self._orders()
        bar = tqdm(total=n_batches, initial=pos, desc=f'{opt.method} x{self.k} epoch {epoch + 1}/{opt.max_step}',
                   dynamic_ncols=True, leave=False, disable=opt.no_progress)
        t0 = time.time()
        for i in range(pos, n_batches):
            out = m.update(*self.batch(orders, i))
            for k, s in enumerate(sums):
                for key, v in out.items():
                    s[key] = s[key] + v[k] if key in s else v[k].clone()
                s['n'] = s.get('n', 0) + 1
            bar.update()
            if (i + 1) % opt.log_step == 0 or i + 1 == n_batches or opt.dry_run or self.stop_signal is not None:
                self.check_finite(out, epoch, i)
            if self.stop_signal is not None:
                bar.close()
                self.unpack()
                paths = []
                for t, order, s in zip(self.trainers, orders, sums):
                    progress = {'order': order.cpu(), 'pos': i + 1,
                                'sums': {k: torch.as_tensor(v).detach().cpu() for k, v in s.items()}}
                    paths.append(t.save(run_folder.batch_checkpoint(epoch, i + 1), epoch, progress))
                raise Interrupted(', '.join(paths))
        bar.close()
        elapsed = time.time() - t0
        records = []
        for t, s in zip(self.trainers, sums):
            n = int(s.pop('n', 1))
            record = {k: float(v) / n for k, v in s.items()}
            for k, v in record.items():
                if not np.isfinite(v):
                    self.unpack()
                    raise t.diverged(f'{t.opt.exp_name}: non-finite {k} in epoch {epoch + 1}; training stopped')
            record['lr'] = m.lr_now()
            record['epoch_time_s'] = elapsed  # the pack's: K runs' epochs in this time
            record['pack'] = self.k
            records.append(record)
        return records

    def check_finite(self, out, epoch, i):
        for k, t in enumerate(self.trainers):
            for key, v in out.items():
                if not torch.isfinite(v[k]).all():
                    self.unpack()
                    raise t.diverged(f'{t.opt.exp_name}: non-finite {key} in epoch {epoch + 1}, batch {i + 1}; '
                                     'training stopped')
