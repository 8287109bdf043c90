"""The error a user can fix, and how every entry point reports it."""
import os
import sys


class UserError(Exception):
    """A mistake the user can fix (bad option, missing or corrupt file).

    Entry points catch it at the top level and print its message on one line with a
    non-zero exit; genuine bugs are not caught and keep their traceback.
    """


def run_main(main):
    """Run an entry point: ``UserError`` becomes ``error: ...`` on stderr and exit status 2; Ctrl-C
    outside the training loop (which saves its state itself) is one line and exit status 130; a reader of the
    output that went away (``... | head``) ends the command quietly with exit status 141, as for any tool."""
    try:
        code = main()
        sys.stdout.flush()  # here, where a reader that went away is caught, not at the interpreter's exit
        return code
    except BrokenPipeError:
        if not stdout_gone():
            raise  # another pipe (a child's): a genuine error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush writes nowhere
        sys.exit(141)
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)


def stdout_gone():
    """Whether the reader of standard output has gone away: its buffer cannot be written, or it is a pipe whose
    reading end is closed (poll reports an error on the writing end)."""
    import select
    import stat
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLERR)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except BrokenPipeError:
        return True
    except (OSError, ValueError, AttributeError):  # no file descriptor behind it (a test's capture)
        return False
