"""The package runs installed: a non-editable install in a fresh virtual environment runs the
recipe end to end from outside the source tree, every step from the installed package."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig

from conftest import ROOT

# What a build of the package reads (setup.cfg's long_description is README.md).
SOURCES = ("tfblend", "setup.cfg", "pyproject.toml", "README.md")
SHOW_IMPORTS = "import json, sys, tfblend; print(json.dumps([tfblend.__file__, sys.path]))"


def _fresh_venv(path) -> str:
    """A virtual environment without pip that sees this environment's installed packages (not
    its .pth files: the editable finder of a development install does not come along); its
    python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = str(path / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    with open(os.path.join(site, "_dependencies.pth"), "w") as stream:
        stream.write(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_installed_package_runs_the_recipe(tiny_corpus, tiny_teacher, tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside it
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(ROOT / name, source / name)
    python = _fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", str(source)],
        check=True, capture_output=True, env=env, timeout=300,
    )  # fmt: skip
    shutil.rmtree(source)
    work = tmp_path / "run"  # the cwd: outside the source tree
    work.mkdir()
    where = subprocess.run(
        [python, "-c", SHOW_IMPORTS],
        capture_output=True, text=True, cwd=work, env=env, check=True,
    ).stdout  # fmt: skip
    package, path = json.loads(where)
    assert package.startswith(str(tmp_path / "venv")), package
    assert str(ROOT) not in path, path  # the source tree is not importable

    # The corpus and the teacher of the session stand in for the first two stages (complete:
    # skipped); every other stage runs from the installed package.
    shutil.copytree(tiny_corpus, work / "demo" / "corpus")
    shutil.copytree(tiny_teacher, work / "demo" / "teacher-seed0")
    done = subprocess.run(
        [python, "-m", "tfblend.recipe", "--work_dir=demo", "--size=tiny", "--nower",
         "--smoothing_grid=0.1", "--export_base=exports"],
        capture_output=True, text=True, cwd=work, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "stage teacher-seed0: complete, skipped" in done.stdout
    for step in ("train_student", "dump_targets", "blend", "evaluate", "export", "check_export"):
        assert f"-m tfblend.steps.{step} " in done.stdout, step
    assert "| blended CNN |" in (work / "demo" / "report" / "results.md").read_text()
    assert (work / "exports" / "tfblend_blended_cnn" / "1" / "saved_model.pb").exists()

    # Kaldi style, one stage again: the check of the latest export; nothing else runs.
    again = subprocess.run(
        [python, "-m", "tfblend.recipe", "--work_dir=demo", "--size=tiny", "--nower",
         "--smoothing_grid=0.1", "--export_base=exports", "--stage=score", "--stop_stage=score"],
        capture_output=True, text=True, cwd=work, env=env, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    ran = [line.split("stage ")[1] for line in again.stdout.splitlines() if ": done in" in line]
    assert [name.split(":")[0] for name in ran] == ["score"], again.stdout[-3000:]
    assert (
        "-m tfblend.steps.check_export --export_dir=exports/tfblend_blended_cnn/1 " in again.stdout
    )
    assert "stage evaluate: not run (part evaluate is not selected)" in again.stdout

    # The README's demo table is checked against the report of the run: a README
    # whose marked table is the report's passes; one changed cell is named, with exit 1.
    report = (work / "demo" / "report" / "results.md").read_text().splitlines()
    first = next(i for i, line in enumerate(report) if line.startswith("|"))
    last = next(i for i in range(first, len(report) + 1) if i == len(report) or
                not report[i].startswith("|"))  # fmt: skip
    table = report[first:last]
    marker = "<!-- demo-table: demo/report/results.md -->"
    (work / "README.md").write_text("\n".join(["# Demo", "", marker, *table, "", "Text."]) + "\n")
    check = [python, "-m", "tfblend.tools.check_readme", "--readme=README.md"]
    same = subprocess.run(check, capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert same.returncode == 0, same.stderr[-2000:]
    assert "README.md: 1 marked table(s) equal to their report, cell by cell" in same.stdout
    cells = table[2].split("|")
    row, old = cells[1].strip(), cells[2].strip()
    cells[2] = " 99.99 "
    stale = [*table[:2], "|".join(cells), *table[3:]]
    (work / "README.md").write_text("\n".join(["# Demo", "", marker, *stale]) + "\n")
    changed = subprocess.run(check, capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert changed.returncode == 1
    assert changed.stdout.strip().splitlines() == [
        f"README.md:4: row {row!r}, column 'frame acc %': README has '99.99', the report "
        f"{old!r} (demo/report/results.md)"
    ]
    assert changed.stderr.strip().splitlines()[-1] == (
        "check_readme.py: error: README.md: 1 difference(s) from the report (listed above): "
        "copy the table of one complete run of its report"
    )
    results = (work / "demo" / "report" / "results.md").read_text()
    assert "This run: " in results and "load average" in results
