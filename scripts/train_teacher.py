"""Runs ``python -m tfblend.steps.train_teacher`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.train_teacher import main

if __name__ == "__main__":
    cli.run(main)
