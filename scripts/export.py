"""Runs ``python -m tfblend.steps.export`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.export import main

if __name__ == "__main__":
    cli.run(main)
