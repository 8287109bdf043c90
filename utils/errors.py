"""The error a user can fix, and how every entry point reports it."""
import sys


class UserError(Exception):
    """A mistake the user can fix (bad option, missing or corrupt file).

    Entry points catch it at the top level and print its message on one line with a
    non-zero exit; genuine bugs are not caught and keep their traceback.
    """


def run_main(main):
    """Run an entry point: ``UserError`` becomes ``error: ...`` on stderr and exit status 2; Ctrl-C
    outside the training loop (which saves its state itself) is one line and exit status 130."""
    try:
        return main()
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(130)
