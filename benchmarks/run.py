"""Run the benchmarks, print one Markdown table per benchmark, write the results as JSON.

    python -m benchmarks.run [--only NAME[,NAME]] [--output benchmarks/results.json]
                             [--corpus_dir DIR] [--smoke]

A benchmark is a module ``benchmarks/bench_NAME.py`` exposing ``run(args) -> list[dict]`` (one
dict per table row, JSON-serialisable values) and, optionally, ``add_arguments(parser)`` for its
own flags and ``SMOKE``, a dict of those flags' tiny values. Modules are found by name; nothing
else needs registering.

``--corpus_dir`` is a corpus root holding ``train/``, ``dev/``, ``test/`` utterance sets; without
it, benchmarks that need data call ``corpus_dir(args)``, which builds the tiny synthetic corpus
once into a temporary directory. ``--smoke`` runs every benchmark on its ``SMOKE`` sizes: the
same code paths on tiny shapes, in seconds, with numbers that mean nothing (the test suite runs
it, so that a change in the library that breaks a benchmark fails a test); flags given on the
command line still win.

The output file is rewritten after each benchmark: ``results`` (rows by benchmark),
``failures`` (the error of each benchmark that raised; the others still run), ``seconds`` (wall
time by benchmark), ``environment`` and ``smoke``. With ``--only``, the entries of the other
benchmarks already in the file are kept (when the file is of the same kind, smoke or not). The
exit status is 1 when a benchmark failed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pathlib
import pkgutil
import platform
import sys
import tempfile
import time
import traceback

import tfblend  # noqa: F401  (imports TensorFlow quietly, before any benchmark module does)

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


def benchmark_names() -> list[str]:
    """Names NAME of the modules benchmarks/bench_NAME.py, sorted."""
    return sorted(
        info.name[len("bench_") :]
        for info in pkgutil.iter_modules([str(PACKAGE_DIR)])
        if info.name.startswith("bench_")
    )


def load(name: str):
    return importlib.import_module(f"benchmarks.bench_{name}")


def corpus_dir(args) -> pathlib.Path:
    """``--corpus_dir``, or the tiny synthetic corpus built once per run into a temporary dir."""
    if args.corpus_dir:
        return pathlib.Path(args.corpus_dir)
    if getattr(args, "_built_corpus", None) is None:
        from tfblend.corpus.build import build_corpus

        args._corpus_tmp = tempfile.TemporaryDirectory(prefix="tfblend-bench-")
        root = pathlib.Path(args._corpus_tmp.name) / "tiny"
        build_corpus(root, size="tiny", seed=0)
        args._built_corpus = root
    return args._built_corpus


def environment() -> dict:
    import tensorflow as tf

    return {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def markdown_table(rows: list[dict]) -> str:
    """Rows as a Markdown table; columns in first-seen order, floats to 4 significant digits."""
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--output", default=str(PACKAGE_DIR / "results.json"))
    parser.add_argument("--corpus_dir", default="", help="corpus root with train/dev/test sets")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: the code paths in seconds, no figures"
    )
    smoke = parser.parse_known_args(argv)[0].smoke
    for name in benchmark_names():
        module = load(name)
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser.add_argument_group(name))
        if smoke:
            parser.set_defaults(**getattr(module, "SMOKE", {}))
    return parser.parse_args(argv)


def _write(output: pathlib.Path, report: dict) -> None:
    """``report`` as JSON at ``output``, atomically (a reader never sees half a file)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(output)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = benchmark_names()
    selected = [n for n in args.only.split(",") if n] or names
    unknown = sorted(set(selected) - set(names))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {names}", file=sys.stderr)
        return 2
    output = pathlib.Path(args.output)
    report = {"environment": environment(), "smoke": args.smoke}
    kept = json.loads(output.read_text()) if args.only and output.exists() else {}
    if kept.get("smoke", False) != args.smoke:
        kept = {}  # a smoke run's figures never sit beside a full run's
    for key in ("results", "failures", "seconds"):
        report[key] = {n: v for n, v in kept.get(key, {}).items() if n not in selected}
    for name in selected:
        started = time.perf_counter()
        try:
            rows = load(name).run(args)
        except Exception as error:  # recorded; the other benchmarks still run
            traceback.print_exc()
            report["failures"][name] = f"{type(error).__name__}: {error}"
            print(f"\n## {name}\n\nFAILED: {report['failures'][name]}\n", flush=True)
        else:
            report["results"][name] = rows
            print(f"\n## {name}\n\n{markdown_table(rows)}\n", flush=True)
        report["seconds"][name] = round(time.perf_counter() - started, 1)
        _write(output, report)
    failed = sorted(set(selected) & set(report["failures"]))
    print(f"wrote {output}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
