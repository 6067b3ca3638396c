"""Run the benchmarks, print one Markdown table per benchmark, write the results as JSON.

    python -m benchmarks.run [--only NAME[,NAME]] [--output benchmarks/results.json]
                             [--corpus_dir DIR]

A benchmark is a module ``benchmarks/bench_NAME.py`` exposing ``run(args) -> list[dict]`` (one
dict per table row, JSON-serialisable values) and, optionally, ``add_arguments(parser)`` for its
own flags. Modules are found by name; nothing else needs registering.

``--corpus_dir`` is a corpus root holding ``train/``, ``dev/``, ``test/`` utterance sets; without
it, benchmarks that need data call ``corpus_dir(args)``, which builds the tiny synthetic corpus
once into a temporary directory. With ``--only``, the results of the other benchmarks already in
the output file are kept.
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
    for name in benchmark_names():
        module = load(name)
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser.add_argument_group(name))
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = benchmark_names()
    selected = [n for n in args.only.split(",") if n] or names
    unknown = sorted(set(selected) - set(names))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {names}", file=sys.stderr)
        return 2
    output = pathlib.Path(args.output)
    results = {}
    if args.only and output.exists():
        results = json.loads(output.read_text()).get("results", {})
    for name in selected:
        rows = load(name).run(args)
        results[name] = rows
        print(f"\n## {name}\n\n{markdown_table(rows)}\n", flush=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(json.dumps({"environment": environment(), "results": results}, indent=1) + "\n")
    tmp.replace(output)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
