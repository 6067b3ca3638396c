"""Runs ``python -m tfblend.steps.sweep_k`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.sweep_k import main

if __name__ == "__main__":
    cli.run(main)
