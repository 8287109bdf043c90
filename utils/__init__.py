"""Helpers shared by every entry point, one concern per module: ``errors`` (the user's mistakes, how entry
points report them), ``files`` (atomic writes, JSON-lines records, links, hashes), ``locks`` (a run folder's
lock), ``cli`` (the parser and option checks), ``tables`` (text and Markdown tables), ``readme`` (the one place
README and docs sections are written, and the command they show), ``runtime`` (device, precision, seeds).
Everything is importable from ``utils`` itself."""
import os

# Default folders of the data files and the runs, the same whatever the working folder: every entry point
# (train.py, test.py, the sweep, the generator) reads and writes the same ones unless told otherwise.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO_ROOT, 'data')
RUNS_DIR = os.path.join(REPO_ROOT, 'runs')

from utils.errors import UserError, run_main  # noqa: E402
from utils.files import (append_line, atomic_open, atomic_path, atomic_write_text, fsync_dir,  # noqa: E402
                         open_fd_no_follow, open_no_follow, read_jsonl, refuse_links, sha256_file)
from utils.locks import RunLock  # noqa: E402
from utils.cli import (Parser, add_data_dir, add_device, add_no_generate, add_precision, add_save_dir,
                       add_trust_checkpoint, existing_or_new_folder, nonneg_float, nonneg_int, number, positive_float,  # noqa: E402
                       positive_int, run_name, seed_number, thread_count, usable_cores)
from utils.tables import format_table, markdown_table  # noqa: E402
from utils.readme import replace_readme_section, without_options  # noqa: E402
from utils.runtime import (NATIVE_BF16_CPU_FLAGS, cpu_features, environment, native_bf16, resolve_arithmetic,  # noqa: E402
                           resolve_device, resolve_precision, seed_everything, set_tf32)
