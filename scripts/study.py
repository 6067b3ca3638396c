"""Runs ``python -m tfblend.study`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.study.__main__ import main

if __name__ == "__main__":
    cli.run(main)
