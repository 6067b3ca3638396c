"""Runs ``python -m tfblend.steps.check_export`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.check_export import main

if __name__ == "__main__":
    cli.run(main)
