"""``python -m experiments.sweep ...``: the sweep's command line (see the package's docstring)."""
from experiments.sweep.cli import main
from utils import run_main

run_main(main)
