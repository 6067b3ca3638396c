"""Runs ``python -m tfblend.steps.import_kaldi`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.import_kaldi import main

if __name__ == "__main__":
    cli.run(main)
