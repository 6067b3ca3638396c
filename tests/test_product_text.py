"""The product speaks of the product alone.

Every file of the checkout that git tracks or would track (``git ls-files --cached --others
--exclude-standard``: new files count before they are committed) is read as text, and none may:

- cite a file the repository does not have: a notes file (its name in capitals, with or without
  ``.md`` or a section number), the design notes, or a relative path into the shared folder
  beside a checkout (an absolute example path of a user's shared disk is allowed);
- hold a machine's absolute path: one that starts in the work, home, root or Users folder at the
  file system's root (after the start of a line, a space, a quote, a backquote, ``=``, ``(``,
  ``[``, ``:`` or ``,``). Generic example paths (``/tmp/...``, ``/data/...``) are allowed;
- speak of how it was developed: "issue 12"-style references to the project's tracker, and,
  outside ``tests/`` (where pytest's fixture sessions are meant), the word "session" (TensorFlow's
  Session-based loader and ``start_new_session`` excepted).

The facts such references used to point to live in ``docs/reference-facts.md`` and
``docs/formats.md``.
"""

import re
import subprocess

import pytest
from conftest import ROOT

THIS_FILE = "tests/test_product_text.py"

# The names the rules forbid, assembled so that this file does not hold them itself.
NOTE_NAME = "NO" + "TES"
DESIGN = "DE" + "SIGN.md"
SHARED = "sha" + "red/"
WORK = "/" + "work/"

#: name -> (pattern, applies to the path?)
RULES = {
    "cites a notes file outside the repository": (re.compile(rf"\b{NOTE_NAME}\b"), None),
    "cites the design notes": (re.compile(rf"\b{re.escape(DESIGN)}\b"), None),
    "cites the shared folder": (re.compile(rf"(?<![\w/.-]){SHARED}"), None),
    "holds a machine's absolute path": (
        re.compile(r"(?:^|(?<=[\s\"'`=(\[:,]))/(?:work|home|root|Users)/", re.MULTILINE),
        None,
    ),
    "cites the project's issue tracker": (re.compile(r"\b[Ii]ssues? #?\d+\b"), None),
    "speaks of working sessions": (
        re.compile(r"\b[Ss]essions?\b"),
        lambda path: not path.startswith("tests/"),
    ),
}


def _product_files():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    for name in sorted({n.decode() for n in listed.split(b"\0") if n} - {THIS_FILE}):
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the working tree
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            yield name, data.decode()
        except UnicodeDecodeError:
            continue  # binary (figures)


def offences(name: str, text: str) -> list:
    """``"path:line: rule: the line"`` for every rule a file's text breaks."""
    found = []
    for rule, (pattern, applies) in RULES.items():
        if applies is not None and not applies(name):
            continue
        for match in pattern.finditer(text):
            if rule == "speaks of working sessions" and _technical_session(text, match):
                continue
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{name}:{line}: {rule}: {text.splitlines()[line - 1].strip()[:120]}")
    return found


def _technical_session(text: str, match) -> bool:
    around = text[max(0, match.start() - 20) : match.end() + 10]
    return bool(re.search(r"Session-based|start_new_session|tf\.(compat\.v1\.)?Session", around))


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        (f"see {NOTE_NAME}.md section 10", "cites a notes file outside the repository"),
        (f"the GPU replication ({NOTE_NAME} 10)", "cites a notes file outside the repository"),
        (f"A dataset ({DESIGN}).", "cites the design notes"),
        (f"read {SHARED}corpus first", "cites the shared folder"),
        (f"python {WORK}tree/tfblend/study/__main__.py", "holds a machine's absolute path"),
        (f"--work_dir={WORK}study --size=small", "holds a machine's absolute path"),
        (f"`/{'home'}/me/data`", "holds a machine's absolute path"),
        (f"/{'Users'}/me/corpus", "holds a machine's absolute path"),
        ("as issue 21 asks", "cites the project's issue tracker"),
        ("Issue #12: nothing goes wrong", "cites the project's issue tracker"),
        ("one 3-hour session finishes it", "speaks of working sessions"),
    ],
)
def test_each_rule_catches_what_it_names(text, rule):
    assert [line.split(": ")[1] for line in offences("tfblend/x.py", text)] == [rule]


@pytest.mark.parametrize(
    "text",
    [
        f"--corpus_dir=/{SHARED}corpus --targets_dir=/{SHARED}targets",  # a user's shared disk
        "tf.saved_model.save(model, '/tmp/student')",
        "python -m tfblend.study --work_dir=work/study-small",
        "f'{tmp}" + WORK + "study'",  # under a temporary directory, not a machine's root
        "loads through the Session-based loader; start_new_session=True",
        "tensorflow#48157, keras#15509",
        "release notes; the design of the records",
    ],
)
def test_product_wording_passes(text):
    assert offences("tfblend/x.py", text) == []


def test_fixture_sessions_are_allowed_in_tests():
    assert offences("tests/conftest.py", '@pytest.fixture(scope="session")') == []


def test_no_tracked_file_cites_outside_files_or_machine_paths():
    found = [line for name, text in _product_files() for line in offences(name, text)]
    assert not found, "\n".join(found)
