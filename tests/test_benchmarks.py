"""The benchmarks run: every ``benchmarks/bench_*.py`` on its ``--smoke`` sizes (the same code
paths as ``make bench`` on tiny shapes), and ``benchmarks.run`` writes each result as it comes,
records a failing benchmark without losing the others, and exits non-zero then."""

import json
import math
import pathlib
import types

import pytest

from benchmarks import run as bench_run

NAMES = bench_run.benchmark_names()


def test_every_benchmark_is_found_and_has_smoke_sizes_for_its_own_flags():
    assert {"dense", "distiller", "learning", "pipeline", "precision", "serving"} <= set(NAMES)
    args = bench_run.parse_args(["--smoke"])
    for name in NAMES:
        module = bench_run.load(name)
        smoke = getattr(module, "SMOKE", None)
        assert smoke, f"bench_{name}.py has no SMOKE sizes"
        for dest, value in smoke.items():
            assert dest.startswith(f"{name}_") and getattr(args, dest) == value


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_smoke_run(name, tiny_corpus, tmp_path):
    output = tmp_path / "results.json"
    argv = ["--smoke", "--only", name, "--output", str(output), "--corpus_dir", str(tiny_corpus)]
    assert bench_run.main(argv) == 0
    report = json.loads(output.read_text())
    assert report["smoke"] is True and report["failures"] == {}
    rows = report["results"][name]
    assert rows and all(isinstance(row, dict) and row for row in rows)
    numbers = [v for row in rows for v in row.values() if isinstance(v, int | float)]
    assert any(v > 0 and math.isfinite(v) for v in numbers if not isinstance(v, bool))
    if name == "pipeline":
        from benchmarks.bench_pipeline import CONFIGS

        measured = {row["config"]: row for row in rows if "pipeline_frames_s" in row}
        assert set(measured) == set(CONFIGS)
        for row in measured.values():
            for key in ("pipeline_frames_s", "step_frames_s", "fed_frames_s"):
                assert row[key] > 0
            assert row["pipeline_x_step"] == pytest.approx(
                row["pipeline_frames_s"] / row["step_frames_s"]
            )
        assert measured["student"]["context"] == 20 and measured["student"]["batch"] == 512
        assert measured["student"]["view"] == "chunks L=8" and measured["dnn"]["view"] == "windows"


def test_distiller_worker_process_times_a_case():
    """The distiller's smoke runs its cases in process; ``make bench`` runs each in a worker
    process of its own: that protocol, on the cheapest case."""
    import multiprocessing

    from benchmarks import bench_distiller

    worker = bench_distiller._WorkerProcess(multiprocessing.get_context("spawn"), "roof_conv", {})
    try:
        status, facts = worker.ready()
        assert status == "ready" and facts["flops_per_op"] > 0, facts
        assert worker.time(1) > 0
        assert worker.finish()["peak_rss_mb"] > 0
    finally:
        worker.join()
        worker.process.kill()


def _fake(rows=None, error=None, seen=None):
    def run(args):
        if seen is not None:
            seen.append(json.loads(pathlib.Path(args.output).read_text()))
        if error:
            raise error
        return rows

    return types.SimpleNamespace(run=run)


def test_results_are_written_as_they_come_and_a_failure_is_recorded(tmp_path, monkeypatch):
    output = tmp_path / "results.json"
    seen = []
    modules = {
        "a": _fake(rows=[{"case": "a", "x": 1.0}]),
        "b": _fake(error=RuntimeError("broken on purpose")),
        "c": _fake(rows=[{"case": "c", "x": 2.0}], seen=seen),
    }
    monkeypatch.setattr(bench_run, "benchmark_names", lambda: sorted(modules))
    monkeypatch.setattr(bench_run, "load", modules.__getitem__)
    assert bench_run.main(["--output", str(output)]) == 1
    # When c ran, a's result and b's failure were already on disk.
    assert seen[0]["results"] == {"a": [{"case": "a", "x": 1.0}]}
    assert seen[0]["failures"] == {"b": "RuntimeError: broken on purpose"}
    report = json.loads(output.read_text())
    assert set(report["results"]) == {"a", "c"} and set(report["failures"]) == {"b"}
    assert set(report["seconds"]) == {"a", "b", "c"} and report["smoke"] is False
    # --only reruns one benchmark and keeps the others' entries; a success clears its failure.
    modules["b"] = _fake(rows=[{"case": "b"}])
    assert bench_run.main(["--only", "b", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert set(report["results"]) == {"a", "b", "c"} and report["failures"] == {}
    assert bench_run.main(["--only", "nope", "--output", str(output)]) == 2
