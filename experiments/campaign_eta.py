"""How long the campaign's runs left take to train, for ``python -m experiments.campaign --list``: a rough figure
from the epoch times recorded by the runs of ``--out`` (this machine, now), else by the committed runs trained in
the same precision (other machines: a guide only)."""
import os
import statistics

import run_folder
from experiments.records import epoch_seconds

RECENT = 10  # the last epochs of a run that count (a resumed run's first epoch, a busy hour, weigh little)


def epoch_times(run_dir):
    """The recorded seconds of each epoch of a run, in order (:func:`records.epoch_seconds`)."""
    return [t for t in map(epoch_seconds, run_folder.read_results(run_dir)) if t is not None]


def epochs_done(run_dir):
    """The last epoch a run recorded training (0 when none)."""
    return max((r['epoch'] for r in run_folder.read_results(run_dir)
                if 'epoch_time_s' in r and isinstance(r.get('epoch'), int)), default=0)


def typical_epoch(method, out, records, precision):
    """``(seconds, source)``: the median of the recent epoch times of ``method``'s runs in ``out``, else of its
    committed runs in ``records`` trained in ``precision``; ``(None, None)`` when neither has any."""
    for folder, source in ((out, 'this machine'), (records, f'committed {precision} runs')):
        times = []
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
            opts = run_folder.read_options(os.path.join(folder, name))
            if opts.get('method') != method or opts.get('dry_run'):
                continue
            if folder == records and opts.get('precision') != precision:
                continue
            times += epoch_times(os.path.join(folder, name))[-RECENT:]
        if times:
            return statistics.median(times), source
    return None, None


def hours(seconds):
    return f'{seconds / 3600:.1f} h'


class Estimate:
    """Seconds of training left over the runs of a listing, run by run (:meth:`add`), and its summary line."""

    def __init__(self, out, records, precision, asked_epochs):
        self.out, self.records, self.precision, self.asked_epochs = out, records, precision, asked_epochs
        self.epoch = {}
        self.total, self.unknown = 0.0, []

    def add(self, method, name):
        """Seconds left of run ``name`` (its saved epochs in ``out`` count as done), or None without an epoch time."""
        if method not in self.epoch:
            self.epoch[method] = typical_epoch(method, self.out, self.records, self.precision)
        seconds, _ = self.epoch[method]
        if seconds is None:
            self.unknown.append(name)
            return None
        run_dir = os.path.join(self.out, name)
        left = max(0, self.asked_epochs(method) - (epochs_done(run_dir) if os.path.isdir(run_dir) else 0)) * seconds
        self.total += left
        return left

    def summary(self, runs_at_once):
        """One line: the training left, and at ``runs_at_once`` runs at once, with where the epoch times come from."""
        if not self.total and not self.unknown:
            return ''
        sources = ', '.join(f'{m} {s:.0f} s ({src})' for m, (s, src) in self.epoch.items() if s is not None)
        line = f'about {hours(self.total)} of training'
        if runs_at_once > 1:
            line += f', {hours(self.total / runs_at_once)} at {runs_at_once} runs at once'
        line += f' (epoch times: {sources})' if sources else ''
        if len(self.unknown) == 1:
            line += f'; no epoch time for {self.unknown[0]}'
        elif self.unknown:
            line += f'; no epoch time for {len(self.unknown)} runs ({self.unknown[0]}, ...)'
        return line
