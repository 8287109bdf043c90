"""One run's steps in one child process of the sweep: ``python -m experiments.sweep.child FD STEPS``.

The sweep trains and then evaluates a run (train.py, then test.py) in one interpreter, so that a run starts
Python and imports PyTorch once rather than once per step (seconds each, more on a cluster's network file
system). ``STEPS`` is a JSON list of ``[script, arg, ...]``; each step is the script's ``main`` run from its
file (:func:`runner.run_in_process`), preceded in the output by the command it stands for, so that the run's
sweep.log reads as when each step had a process of its own and each line can be pasted. The child stops at the
first step that fails or is interrupted and exits with that step's status. Before each step it writes the
step's script name to the file descriptor ``FD``, so that the sweep can say which step a failure came from.
"""
import json
import os
import sys

from experiments.sweep.runner import STOP, run_in_process, step_command


def main(argv):
    report_fd, steps = int(argv[0]), json.loads(argv[1])
    with os.fdopen(report_fd, 'w', encoding='utf-8') as report:
        for script, *args in steps:
            report.write(script + '\n')
            report.flush()
            print(f'$ {step_command(script, args)}', flush=True)
            status = run_in_process(script, args, sys.stdout)
            sys.stdout.flush()
            if status == 0 and STOP['signal'] is not None:  # a signal during a step that still succeeded
                status = 130
            if status != 0:
                return status
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C between two steps
        sys.exit(130)
