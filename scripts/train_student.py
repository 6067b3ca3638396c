"""Runs ``python -m tfblend.steps.train_student`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.train_student import main

if __name__ == "__main__":
    cli.run(main)
