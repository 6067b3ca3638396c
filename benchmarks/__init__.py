"""The tfblend performance harness: ``python -m benchmarks.run`` (see benchmarks/run.py)."""
