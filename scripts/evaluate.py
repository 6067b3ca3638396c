"""Runs ``python -m tfblend.steps.evaluate`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.evaluate import main

if __name__ == "__main__":
    cli.run(main)
