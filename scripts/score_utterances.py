"""Runs ``python -m tfblend.steps.score_utterances`` (same flags, --help and exit status)."""

from tfblend import cli
from tfblend.steps.score_utterances import main

if __name__ == "__main__":
    cli.run(main)
