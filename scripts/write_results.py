"""Runs ``python -m tfblend.steps.write_results`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.write_results import main

if __name__ == "__main__":
    cli.run(main)
