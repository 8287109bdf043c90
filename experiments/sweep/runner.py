"""Running one run of the sweep: its training and test steps, in one child process (or in this process for the
smoke run), and the signal that stops the sweep passed on to the running children."""
import contextlib
import json
import os
import runpy
import shlex
import signal
import subprocess
import sys

import run_folder
from experiments.sweep.state import describe, differences, start_checkpoint, status
from utils import REPO_ROOT, RunLock, UserError, open_no_follow

# The training and test processes running now, and the signal that stops the sweep (None while it runs).
# One object each for the whole sweep: the launchers and the signal handlers change them in place.
CHILDREN = set()
STOP = {'signal': None}


def forward_signal(signum, frame):
    """SIGINT/SIGTERM to the sweep: pass it to every running child (train.py saves a checkpoint and exits),
    start nothing new, and exit once they have."""
    STOP['signal'] = signum
    for child in list(CHILDREN):
        try:
            child.send_signal(signum)
        except OSError:
            pass


def script_main(script):
    """The ``main`` of the entry-point script ``script`` (train.py, test.py), run from its file: the script is
    not imported as a module of that name."""
    stem = os.path.splitext(os.path.basename(script))[0]
    return runpy.run_path(os.path.join(REPO_ROOT, script), run_name=f'sweep_in_process_{stem}')['main']


def run_in_process(script, argv, log):
    """``script``'s ``main(argv)`` in this process, its output into ``log``; returns an exit status. Ctrl-C
    (or SIGTERM) stops the sweep as it stops the other launchers: training saves its state and exits 130,
    elsewhere the signal ends the step; either way nothing further starts."""
    main = script_main(script)
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            main(argv)
            return 0
        except UserError as exc:
            print(f'error: {exc}', file=log)
            return 2
        except KeyboardInterrupt:
            STOP['signal'] = STOP['signal'] or signal.SIGINT
            return 130
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            if code == 130:  # train.py saved its state after a signal
                STOP['signal'] = STOP['signal'] or signal.SIGINT
            return code


def stop_in_process(signum, frame):
    """SIGINT/SIGTERM to the in-process launcher outside training: stop the sweep (training installs its
    own handler, which saves the state first)."""
    STOP['signal'] = signum
    raise KeyboardInterrupt


def run_child(cmd, log, env=None, show=False, pass_fds=()):
    """Run ``cmd`` in a child process (output to ``log``, and to this terminal with ``show``); its exit status.
    A signal to the sweep is passed on to it (see :func:`forward_signal`)."""
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE if show else log, stderr=subprocess.STDOUT,
                             cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, pass_fds=pass_fds)
    CHILDREN.add(child)
    try:
        if STOP['signal'] is not None:  # the signal came between the caller's check and the start
            child.send_signal(STOP['signal'])
        if show:
            for chunk in iter(lambda: child.stdout.read1(1 << 14), b''):
                text = chunk.decode('utf-8', errors='replace')
                log.write(text)
                log.flush()
                sys.stderr.write(text)
                sys.stderr.flush()
        return child.wait()
    finally:
        CHILDREN.discard(child)


def plan(spec, fresh=False, overwrite=False):
    """What one run needs: ``(status, None)`` when nothing (skipped, refused, not started), else ``(train, note)``:
    the train.py arguments that train or resume it (None: training is done, only test.py is left) and the note of
    its status line.

    A run that starts from another (``spec['base']``) starts only from that run's finished checkpoint (the
    one its ``done`` marker names), records its SHA-256, and is trained again when that start has changed.
    A run already in the folder is compared with the request (:func:`differences`): one that differs is
    refused, or trained again with ``overwrite``; one that trained fewer epochs than asked is extended."""
    if STOP['signal'] is not None:
        return 'not started (sweep interrupted)', None
    state = status(spec)
    if state == 'running':
        return f'skipped (process {RunLock.holder(spec["run_dir"])} is training in {spec["run_dir"]})', None
    train = list(spec['train'])
    note = ''
    if spec.get('base') or spec.get('base_file'):
        start, digest = start_checkpoint(spec)
        if start is None:
            return f'not started ({digest}: it starts once that run has finished as this request asks)', None
        train += ['--use_pretrain', '--checkpoint', start]
    if fresh and state in ('done', 'trained', 'partial'):
        state = 'new'  # --overwrite below replaces it
    if state in ('done', 'trained', 'partial'):
        recorded = run_folder.read_options(spec['run_dir'])
        diffs, extend = differences(spec, train, recorded)
        if (spec.get('base') or spec.get('base_file')) and recorded.get('pretrain_sha256') != digest:
            changed = spec['base']['name'] if spec.get('base') else f'its start ({spec["base_file"]})'
            state, note = 'new', f' (trained again: {changed} changed since this run started from it)'
        elif diffs:
            if not overwrite:
                return (f'refused (the run in {spec["run_dir"]} differs from this request: {describe(diffs)}; '
                        'relaunch with --overwrite to train it again)'), None
            state, note = 'new', f' (trained again, --overwrite: {describe(diffs)})'
        elif extend:
            state, note = 'partial', ' (extended to the requested epochs)'
    if state == 'done':
        return 'skipped', None
    if state in ('new', 'partial'):
        # a 'new' folder holds no checkpoint: whatever an earlier start left there is replaced
        return train + (['--resume'] if state == 'partial' else ['--overwrite']), note
    return None, note


def step_status(script, rc, log):
    """The status line of a run whose step ``script`` ended with ``rc``: None when it succeeded."""
    if STOP['signal'] is not None:
        return f'interrupted ({script} exit {rc}; relaunch the sweep to resume)'
    if rc != 0:
        return f'failed ({script} exit {rc}, see {log})'
    return None


def run_steps(spec, steps, env=None, in_process=False, show=False):
    """Run ``steps`` ([script, args...]) for one run, output appended to its sweep.log: in one child process
    (:mod:`experiments.sweep.child`: one start of Python for all of them), or in this process for the smoke run;
    None when all succeeded, else the run's status line."""
    os.makedirs(spec['run_dir'], exist_ok=True)
    log = run_folder.file(spec['run_dir'], run_folder.SWEEP_LOG)
    with open_no_follow(log, 'a') as fh:
        script, rc = run_here(steps, fh) if in_process else run_child_steps(steps, fh, env, show)
    return step_status(script, rc, log)


def run_group_steps(specs, steps, env=None):
    """The training ``steps`` of the runs ``specs`` (a pack's train_pack.py, a run's train.py, or none), output
    appended to the first run's sweep.log, then each run's test.py, its output appended to its own sweep.log, whatever
    the others' status: all in one child process. ``{name: status line}``, None for a run that finished."""
    for spec in specs:
        os.makedirs(spec['run_dir'], exist_ok=True)
    logs = [run_folder.file(spec['run_dir'], run_folder.SWEEP_LOG) for spec in specs]
    tests = [(['test.py'] + spec['test'], log) for spec, log in zip(specs, logs)]
    with open_no_follow(logs[0], 'a') as fh:
        (script, rc), tested = run_child_steps(steps, fh, env, tests=tests)
    failed = step_status(script, rc, logs[0]) if steps else None
    if failed is not None:
        return {spec['name']: failed for spec in specs}
    statuses = {}
    for spec, log, test_rc in zip(specs, logs, tested):
        if test_rc is None:  # never started: the sweep was stopped, or the child ended before it
            statuses[spec['name']] = 'not started (sweep interrupted)' if STOP['signal'] is not None else \
                f'failed (test.py not started: the child exited {rc}, see {logs[0]})'
        else:  # a test that finished before a signal stopped the sweep has finished
            statuses[spec['name']] = None if test_rc == 0 else step_status('test.py', test_rc, log)
    return statuses


def step_command(script, args):
    """The command line a step stands for, as the run's sweep.log shows it (it can be pasted)."""
    return shlex.join([sys.executable, os.path.join(REPO_ROOT, script)] + list(args))


def run_here(steps, log, starting=None):
    """``steps`` in this process, until one fails or a signal stops the sweep; ``(script, status)`` of the
    last step run. ``starting(script)`` is called before each step."""
    for script, *rest in steps:
        if starting is not None:
            starting(script)
        log.write(f'$ {step_command(script, rest)}\n')
        log.flush()
        rc = run_in_process(script, rest, log)
        if rc != 0 or STOP['signal'] is not None:
            break
    return script, rc


def run_child_steps(steps, log, env=None, show=False, tests=None):
    """``steps`` one after the other in one child process (:mod:`experiments.sweep.child`), which stops at the
    first that fails; ``(script, status)``: the last step it started and its exit status. ``tests``: then, in the
    same child when ``steps`` all succeeded, each of these ``(step, log path)`` (runs of a pack: one test.py each,
    into its own log) whatever the others' status; with ``tests`` the return value is ``((script, status),
    statuses)``, one status per test (None: not started)."""
    read_fd, write_fd = os.pipe()  # the child names each step here as it starts it, and each test's status
    try:
        plan = {'steps': steps, 'tests': tests or []}
        cmd = [sys.executable, '-m', 'experiments.sweep.child', str(write_fd), json.dumps(plan)]
        rc = run_child(cmd, log, env, show, pass_fds=(write_fd,))
    finally:
        os.close(write_fd)
        with os.fdopen(read_fd, encoding='utf-8') as fh:
            reports = [json.loads(line) for line in fh.read().splitlines() if line.strip()]
    started = [r['script'] for r in reports if 'script' in r]
    last = (started[-1] if started else steps[0][0] if steps else None), rc
    if tests is None:
        return last
    tested = [None] * len(tests)
    for r in reports:
        if 'test' in r:  # started (the child's status, should it end during the test), then its own status
            tested[r['test']] = r.get('status', rc)
    return last, tested


def execute(spec, env=None, in_process=False, fresh=False, overwrite=False, show=False):
    """Train (or resume) and evaluate one run (see :func:`plan`); returns its status. Runs in a subprocess so that
    one run's failure or memory does not affect the others (``in_process``: in this one, for the seconds-long
    smoke run); output goes to ``<run_dir>/sweep.log``. ``fresh`` trains again over a finished run."""
    train, note = plan(spec, fresh, overwrite)
    if note is None:
        return train
    steps = ([['train.py'] + train] if train is not None else []) + [['test.py'] + spec['test']]
    return run_steps(spec, steps, env, in_process, show) or 'finished' + note


def execute_pack(specs, env=None, overwrite=False):
    """Train runs of one method as one pack (train_pack.py), then evaluate each; returns ``{name: status}``. Each
    run is planned as alone (:func:`plan`); those to train from their start go in one pack, those to resume in
    another (an interrupted pack resumes as one), a group of one trains alone, and those trained already are only
    evaluated. A group trains and then evaluates its runs in one child process (:func:`run_group_steps`). The
    pack's output goes to the first run's sweep.log, the others' logs name it; each run's test.py writes into its
    own."""
    results, planned = {}, []
    for spec in specs:
        train, note = plan(spec, overwrite=overwrite)
        if note is None:
            results[spec['name']] = train
        else:
            planned.append((spec, train, note))
    for flag in ('--overwrite', '--resume', None):
        group = [(spec, train) for spec, train, _ in planned
                 if (train[-1] == flag if train is not None else flag is None)]
        if not group:
            continue
        if flag is None:  # trained already: their tests only
            steps = []
        elif len(group) == 1:
            steps = [['train.py'] + group[0][1]]
        else:
            first = group[0][0]
            steps = [['train_pack.py'] + [a for _, train in group for a in ('--run', shlex.join(train))]]
            for spec, _ in group[1:]:
                os.makedirs(spec['run_dir'], exist_ok=True)
                with open_no_follow(run_folder.file(spec['run_dir'], run_folder.SWEEP_LOG), 'a') as fh:
                    fh.write(f'trained in a pack of {len(group)}; its output: {first["run_dir"]}/sweep.log\n')
        if STOP['signal'] is not None:
            statuses = {spec['name']: 'not started (sweep interrupted)' for spec, _ in group}
        else:
            statuses = run_group_steps([spec for spec, _ in group], steps, env)
        results.update(statuses)
    for spec, _, note in planned:
        if results[spec['name']] is None:
            results[spec['name']] = 'finished' + note
    return results


def guarded(spec, **kwargs):
    """:func:`execute`, with an exception inside it reported as the run's failure (one line) so that the other
    runs of the sweep go on."""
    try:
        return execute(spec, **kwargs)
    except Exception as exc:
        return failure(exc)


def guarded_pack(specs, **kwargs):
    """:func:`execute_pack`, an exception inside it reported as the failure of each of its runs."""
    try:
        return execute_pack(specs, **kwargs)
    except Exception as exc:
        return {spec['name']: failure(exc) for spec in specs}


def failure(exc):
    """A run's status line for an exception raised while it ran."""
    first = str(exc).splitlines()[0][:200] if str(exc) else ''
    return f'failed ({type(exc).__name__}: {first})' if first else f'failed ({type(exc).__name__})'
