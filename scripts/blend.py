"""Runs ``python -m tfblend.steps.blend`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.blend import main

if __name__ == "__main__":
    cli.run(main)
