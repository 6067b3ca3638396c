"""Runs ``python -m tfblend.steps.make_corpus`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.make_corpus import main

if __name__ == "__main__":
    cli.run(main)
