"""The OS lock on a run folder."""
import os

from utils.errors import UserError


class RunLock:
    """An OS lock on a run folder (``<run_dir>/.lock``, holding the owner's PID) for as long as a process
    trains in it. The kernel releases it when the process ends, however it ends, so a crashed run leaves
    no stale lock.

    Not the ``filelock`` package: its FileLock writes nothing into the lock file, and the owner's PID there
    is what the sweep and the tests read (:meth:`holder`) to report and stop the run that holds a folder."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, '.lock')
        self.fd = None

    def acquire(self):
        import fcntl
        try:
            os.makedirs(self.run_dir, exist_ok=True)
        except OSError as exc:
            raise UserError(f'cannot create the run folder {self.run_dir} ({exc.strerror}); give a --save_dir '
                            'you can write to') from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0), 0o644)
        except OSError as exc:
            if os.path.islink(self.path):
                raise UserError(f'{self.path} is a symbolic link; remove it (a run folder\'s lock is a regular '
                                'file)') from None
            raise UserError(f'cannot create the lock file {self.path}: {exc.strerror}') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors='replace').strip() or 'unknown'
            os.close(fd)
            raise UserError(f'run folder {self.run_dir} is in use by process {holder}; wait for it to finish, '
                            f'stop it, or choose another --exp_name') from None
        os.ftruncate(fd, 0)
        os.write(fd, f'{os.getpid()}\n'.encode())
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def holder(run_dir):
        """The PID text of the process that holds ``run_dir``'s lock, or ``None`` when it is free."""
        import fcntl
        path = os.path.join(run_dir, '.lock')
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.read(fd, 32).decode(errors='replace').strip() or 'unknown'
        finally:
            os.close(fd)
        return None
