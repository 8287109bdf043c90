"""One run's steps in one child process of the sweep: ``python -m experiments.sweep.child FD STEPS``.

The sweep trains and then evaluates a run (train.py, then test.py) in one interpreter, so that a run starts
Python and imports PyTorch once rather than once per step (seconds each, more on a cluster's network file
system). ``STEPS`` is a JSON list of ``[script, arg, ...]``; each step is the script's ``main`` run from its
file (:func:`runner.run_here`, as the smoke run runs them), preceded in the output by the command it stands
for, so that the run's sweep.log reads as when each step had a process of its own and each line can be pasted.
The child stops at the first step that fails or is interrupted and exits with that step's status. Before each
step it writes the step's script name to the file descriptor ``FD``, so that the sweep can say which step a
failure came from.
"""
import json
import os
import sys

from experiments.sweep.runner import STOP, run_here


def main(argv):
    report_fd, steps = int(argv[0]), json.loads(argv[1])
    with os.fdopen(report_fd, 'w', encoding='utf-8') as report:
        def starting(script):
            report.write(script + '\n')
            report.flush()
        _, status = run_here(steps, sys.stdout, starting)
    if status == 0 and STOP['signal'] is not None:  # a signal during a step that still succeeded
        return 130
    return status


if __name__ == '__main__':
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C between two steps
        sys.exit(130)
