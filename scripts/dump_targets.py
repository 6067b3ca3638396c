"""Runs ``python -m tfblend.steps.dump_targets`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.dump_targets import main

if __name__ == "__main__":
    cli.run(main)
