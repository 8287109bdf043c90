"""Where the runs of a sweep run: one after another here, K at a time here, one per GPU, or as Slurm jobs.
Each launcher takes the runs in two phases (the runs that start from another come second) and returns
``{run name: status}``."""
import os
import sys

from experiments.sweep import devices, runner
from utils import UserError, usable_cores


def with_threads(spec, threads):
    """``spec`` with train.py's ``--threads`` set, unless the sweep's train.py arguments set it already."""
    if threads is None or any(a == '--threads' or a.startswith('--threads=') for a in spec['train']):
        return spec
    return dict(spec, train=spec['train'] + ['--threads', str(threads)])


def units(phase, args):
    """The phase's runs as the units the launchers start: one run each, or with ``args.pack`` > 1 packs of up to
    that many runs of one method (in the phase's order)."""
    if getattr(args, 'pack', 1) <= 1:
        return [[spec] for spec in phase]
    by_method = {}
    for spec in phase:
        by_method.setdefault(spec['method'], []).append(spec)
    return [group[i:i + args.pack] for group in by_method.values() for i in range(0, len(group), args.pack)]


def run_unit(unit, **kwargs):
    """One unit's ``{name: status}``: a run alone (:func:`runner.guarded`) or a pack (:func:`runner.guarded_pack`)."""
    if len(unit) == 1:
        return {unit[0]['name']: runner.guarded(unit[0], **kwargs)}
    kwargs = {k: v for k, v in kwargs.items() if k in ('env', 'overwrite')}
    return runner.guarded_pack(unit, **kwargs)


def report(args, done):
    """``done`` (``{name: status}`` of a unit that ended) to the caller of the sweep where it asked for it
    (``sweep.main(on_run_end=...)``: the campaign copies a finished run's records at once); returns ``done``. What
    the caller does cannot fail the run: its error is one line on stderr."""
    hook = getattr(args, 'on_run_end', None)
    if hook is not None:
        try:
            hook(done)
        except Exception as exc:  # the run itself ended as ``done`` says
            from tqdm import tqdm
            tqdm.write(f'sweep: after {", ".join(done)}: {type(exc).__name__}: {exc}', file=sys.stderr)  # not in the bar
    return done


def launch_slots(phases, bar, args, slots):
    """Runs on ``slots``, a list of ``(environment, train.py --threads)``: as many runs at once as slots, each
    slot one run at a time, in the phases' order. A run that starts from another run of this sweep waits for
    that run (LNL for its baseline), not for the whole first phase: a slot that would idle until the last
    baseline finishes trains the LNL of a finished one meanwhile. Runs are taken in order, so a waiting run
    waits only for runs that already hold a slot or have finished. Runs are told apart by their folder: a run
    whose start is in another folder (``--base_dir``) waits for no run of this sweep. A run whose step raises
    is reported failed; the others go on."""
    from concurrent.futures import ThreadPoolExecutor
    import queue
    free = queue.Queue()
    for slot in slots:
        free.put(slot)
    futures = {}

    def on_slot(unit):
        for spec in unit:
            base = spec.get('base')
            if base is not None and base['run_dir'] in futures:
                futures[base['run_dir']].result()  # its base's run (or pack) ends first (plan checks it finished)
        env, threads = free.get()
        try:
            done = run_unit([with_threads(spec, threads) for spec in unit], env=env, overwrite=args.overwrite)
        finally:
            free.put((env, threads))
        return report(args, done)

    ordered = [unit for phase in phases for unit in units(phase, args)]
    results = {}
    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        for unit in ordered:  # a base is submitted (and its future stored) before any run that starts from it
            future = pool.submit(on_slot, unit)
            for spec in unit:
                futures[spec['run_dir']] = future
        for unit in ordered:
            try:
                done = futures[unit[0]['run_dir']].result()
            except Exception as exc:  # outside the runs' steps (the slot itself): still one line for each run
                done = {spec['name']: runner.failure(exc) for spec in unit}
            for spec in unit:
                results[spec['name']] = done[spec['name']]
                bar.update()
    return results


def gpu_slots(k, threads):
    """``k`` slots of ``threads`` CPU threads each, the visible GPUs dealt round-robin among them (one
    ``CUDA_VISIBLE_DEVICES`` per slot); on a machine without a GPU the runs' environment is left as it is."""
    gpus = devices.visible_gpus()
    if not gpus:
        return [(None, threads)] * k
    return [(dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpus[i % len(gpus)])), threads) for i in range(k)]


def launch_local(phases, bar, args, in_process=False):
    """One run after another on this machine, each in a process of its own; with ``--runs_at_once K``, K runs at
    once, the cores split between them (train.py ``--threads``) and, on a machine with GPUs, each slot on its
    own GPU (round-robin when there are fewer GPUs than slots)."""
    if args.runs_at_once > 1 and not in_process:
        threads = max(1, usable_cores() // args.runs_at_once)
        return launch_slots(phases, bar, args, gpu_slots(args.runs_at_once, threads))
    results = {}
    for phase in phases:
        for unit in units(phase, args):
            bar.set_postfix_str(unit[0]['name'] + (f' (+{len(unit) - 1} packed)' if len(unit) > 1 else ''))
            results.update(report(args, run_unit(unit, in_process=in_process, fresh=args.smoke,
                                                 overwrite=args.overwrite, show=args.show_output)))
            bar.update(len(unit))
    return results


def launch_in_process(phases, bar, args):
    """One run after another in this process (the smoke run; methods registered only in this process).
    The smoke run starts every run afresh; otherwise finished runs are skipped and others resumed, as with
    the local launcher."""
    return launch_local(phases, bar, args, in_process=True)


def launch_multi_gpu(phases, bar, args):
    """``--runs_at_once`` runs per visible GPU at a time (default one); a run that starts from another waits for it."""
    gpus = devices.visible_gpus()
    if not gpus:
        raise UserError('--launcher multi_gpu found no GPU (set CUDA_VISIBLE_DEVICES or use --launcher local)')
    threads = max(1, usable_cores() // (len(gpus) * args.runs_at_once))  # the CPU work of each run (data, logging)
    slots = [(dict(os.environ, CUDA_VISIBLE_DEVICES=str(g)), threads) for g in gpus for _ in range(args.runs_at_once)]
    return launch_slots(phases, bar, args, slots)


def launch_submitit(phases, bar, args):
    """Through submitit: Slurm on a cluster, or its local executor (``--launcher submitit_local``)."""
    import submitit
    folder = os.path.join(args.out, '_submitit')
    if args.launcher == 'slurm':
        executor = submitit.AutoExecutor(folder=folder, cluster='slurm')
        params = dict(timeout_min=args.timeout_min, gpus_per_node=args.gpus_per_job, tasks_per_node=1,
                      cpus_per_task=args.cpus_per_job, name='lnl-sweep')
        if args.partition:
            params['slurm_partition'] = args.partition
        executor.update_parameters(**params)
    else:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=args.timeout_min)
    results = {}
    for phase in phases:
        jobs = [(spec['name'], executor.submit(runner.execute, spec, overwrite=args.overwrite)) for spec in phase]
        for name, job in jobs:
            try:
                results[name] = job.result()
            except Exception as exc:  # a job that crashed or was killed: report it, keep the sweep going
                results[name] = runner.failure(exc)
            bar.update()
    return results


LAUNCHERS = {
    'local': (launch_local, 'one run after another on this machine (--runs_at_once K: K at a time)'),
    'inprocess': (launch_in_process, 'one run after another inside this process (what --smoke uses)'),
    'multi_gpu': (launch_multi_gpu, 'one run per visible GPU at a time'),
    'slurm': (launch_submitit, 'one Slurm job per run through submitit'),
    'submitit_local': (launch_submitit, 'submitit\'s local executor'),
}
SIGNAL_FORWARDING = ('local', 'multi_gpu')  # launchers whose children the sweep stops itself
