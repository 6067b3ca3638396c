"""Runs ``python -m tfblend.steps.decode`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.decode import main

if __name__ == "__main__":
    cli.run(main)
