"""The Bazel BUILD file names every module, script and test, and nothing that is missing."""

import ast
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _rules() -> list[tuple[str, dict]]:
    """(rule kind, keyword arguments) of every top-level rule call in BUILD (Starlark parses as
    Python for the subset we use: calls with string, list and glob-free arguments)."""
    tree = ast.parse((ROOT / "BUILD").read_text(), filename="BUILD")
    rules = []
    for statement in tree.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
            call = statement.value
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
            rules.append((call.func.id, kwargs))
    return rules


def _named_files(rules) -> set[str]:
    files = set()
    for _, kwargs in rules:
        for key in ("srcs", "data"):
            files.update(f for f in kwargs.get(key, []) if not f.startswith(":"))
        if "main" in kwargs:
            files.add(kwargs["main"])
    return files


def test_every_module_script_and_test_is_in_build():
    rules = _rules()
    by_kind: dict[str, list[dict]] = {}
    for kind, kwargs in rules:
        by_kind.setdefault(kind, []).append(kwargs)

    library_srcs = {src for lib in by_kind.get("py_library", []) for src in lib.get("srcs", [])}
    library_data = {src for lib in by_kind.get("py_library", []) for src in lib.get("data", [])}
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "tfblend").rglob("*.py")}
    assert modules - library_srcs == set(), "tfblend modules missing from py_library srcs"
    configs = {str(p.relative_to(ROOT)) for p in (ROOT / "tfblend" / "configs").glob("*.yaml")}
    assert configs - library_data == set(), "shipped configs missing from py_library data"

    binaries = {rule["main"] for rule in by_kind.get("py_binary", [])}
    scripts = {str(p.relative_to(ROOT)) for p in (ROOT / "scripts").glob("*.py")}
    scripts.discard("scripts/__init__.py")
    assert scripts - binaries == set(), "scripts without a py_binary"

    tests = {rule["main"] for rule in by_kind.get("py_test", [])}
    test_files = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")}
    assert test_files - tests == set(), "test files without a py_test"


def test_build_names_no_missing_file():
    missing = sorted(f for f in _named_files(_rules()) if not (ROOT / f).exists())
    assert missing == []


def test_targets_depend_on_existing_targets():
    rules = _rules()
    names = {kwargs["name"] for _, kwargs in rules if "name" in kwargs}
    for kind, kwargs in rules:
        for dep in [*kwargs.get("deps", []), *kwargs.get("data", [])]:
            if dep.startswith(":"):
                assert dep[1:] in names, f"{kind} {kwargs['name']} depends on unknown {dep}"


@pytest.mark.skipif(shutil.which("bazel") is None, reason="bazel not installed")
def test_bazel_query_loads_build():
    result = subprocess.run(
        ["bazel", "query", "//..."], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "//:tfblend" in result.stdout.split()
