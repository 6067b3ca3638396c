"""Runs ``python -m tfblend.steps.compute_loglikes`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.compute_loglikes import main

if __name__ == "__main__":
    cli.run(main)
