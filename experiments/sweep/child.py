"""One run's steps in one child process of the sweep: ``python -m experiments.sweep.child FD PLAN``.

The sweep trains and then evaluates a run (train.py, then test.py) in one interpreter, so that a run starts
Python and imports PyTorch once rather than once per step (seconds each, more on a cluster's network file
system). ``PLAN`` is a JSON object: ``steps``, a list of ``[script, arg, ...]``, and ``tests``, a list of
``[[script, arg, ...], log path]``. Each step is the script's ``main`` run from its file (:func:`runner.run_here`,
as the smoke run runs them), preceded in the output by the command it stands for, so that the run's sweep.log
reads as when each step had a process of its own and each line can be pasted. The child stops at the first of
``steps`` that fails or is interrupted and exits with that step's status. When they all succeeded it runs each of
``tests`` (the runs of a pack: one test.py each, after the pack's training) with its output appended to its own
log, whatever the others' status, until a signal stops the sweep.

It reports to the file descriptor ``FD``, one JSON object a line: ``{"script": name}`` before each of ``steps``
(so that the sweep can say which step a failure came from), ``{"test": i}`` before test ``i`` and ``{"test": i,
"status": rc}`` after it.
"""
import json
import os
import sys

from experiments.sweep.runner import STOP, run_here
from utils import open_no_follow


def main(argv):
    report_fd, plan = int(argv[0]), json.loads(argv[1])
    with os.fdopen(report_fd, 'w', encoding='utf-8') as report:
        def say(**fields):
            report.write(json.dumps(fields) + '\n')
            report.flush()
        status = run_here(plan['steps'], sys.stdout, lambda script: say(script=script))[1] if plan['steps'] else 0
        if status == 0:
            sys.stdout.flush()  # the training's output is in the log before a test's, should the two be one file
            for i, (step, log) in enumerate(plan['tests']):
                if STOP['signal'] is not None:
                    break
                say(test=i)
                with open_no_follow(log, 'a') as fh:
                    say(test=i, status=run_here([step], fh)[1])
    if status == 0 and STOP['signal'] is not None:  # a signal during a step that still succeeded
        return 130
    return status


if __name__ == '__main__':
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C between two steps
        sys.exit(130)
