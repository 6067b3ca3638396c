"""Runs ``python -m tfblend.recipe`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.recipe import main

if __name__ == "__main__":
    cli.run(main)
