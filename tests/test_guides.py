"""The README and the guides under docs/: their commands, snippets and links hold against the code.

What is checked, without running any step (one Python process imports TensorFlow once):

- every command line in a ``sh``/``bash``/``console`` block of README.md and docs/*.md that runs
  a step (``python -m tfblend.steps.NAME``, ``python scripts/NAME.py``, ``python -m
  tfblend.recipe``, ``python -m tfblend.study``, ``python -m tfblend.tools.NAME``) is
  parsed by that step's own absl flags, as the step parses its command line before ``main``:
  an unknown or renamed flag, a bad enum value or a missing required flag fails; a
  ``--params_override`` must name keys of the experiment config;
- ``python -m benchmarks.run ...`` is parsed by the harness's own argument parser, and ``--only``
  must name benchmarks that exist; ``make TARGET`` must be a target of the Makefile;
- every ``python`` block compiles, its ``from X import a, b`` names exist, and a class it derives
  from an imported class overrides only methods that the base class has, with the same
  parameters (a subclass of the Distiller overrides real hooks);
- every relative link resolves to a file of the repository, the README links every guide
  docs/*.md, and every guide it links exists.

A block preceded by ``<!-- check: skip -->`` is not checked (illustrations such as a Kaldi
command line); a value holding ``$`` (a shell variable) is not parsed, but its flag must exist.
"""

import ast
import json
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SKIP = "<!-- check: skip -->"
SENTINEL = "<a misspelt flag>"
SHELL_LANGS = {"sh", "bash", "console", "shell"}
# A step run as a module, or through its launcher in scripts/.
MODULE_RUN = re.compile(r"^(tfblend\.(steps\.\w+|recipe|study|tools\.\w+))$")


def guide_paths() -> list[pathlib.Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def fenced_blocks(path: pathlib.Path) -> list[tuple[int, str, str, bool]]:
    """``(line, language, text, skipped)`` of every fenced block of a Markdown file."""
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, language, start = opening[2], opening[3].lower(), i + 1
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        blocks.append((start, language, textwrap.dedent("\n".join(body)), previous == SKIP))
    return blocks


def shell_commands(text: str) -> list[list[str]]:
    """The block's commands as argument lists (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", text)
    while re.search(r"\$\([^()]*\)", joined):  # $(command substitution): one shell variable
        joined = re.sub(r"\$\([^()]*\)", "$SUBSTITUTED", joined)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\s(?:&&|\|\||;)\s", line):
            commands.append(shlex.split(part, comments=True))
    return commands


def classify(argv: list[str]) -> tuple[str, str, list[str]] | None:
    """``(kind, target, args)`` for a command the test checks, None for any other.

    kind: "step" (target: the module whose flags parse the args), "script" (target: the
    launcher's path), "bench" or "make".
    """
    if not argv:
        return None
    while argv and re.match(r"^\w+=", argv[0]):  # VAR=value before the command
        argv = argv[1:]
    if argv[:1] == ["nice"]:
        argv = argv[3:] if argv[1:2] == ["-n"] else argv[1:]
    if not argv:
        return None
    if argv[0] == "make":
        return ("make", " ".join(a for a in argv[1:] if "=" not in a), [])
    if not re.search(r"(^|/)python3?$", argv[0]):
        return None
    if argv[1:2] == ["-m"] and len(argv) > 2:
        module = argv[2]
        if module == "benchmarks.run":
            return ("bench", module, argv[3:])
        if MODULE_RUN.match(module):
            module = "tfblend.study.__main__" if module == "tfblend.study" else module
            return ("step", module, argv[3:])
        return None
    if len(argv) > 1 and argv[1].startswith("scripts/") and argv[1].endswith(".py"):
        return ("script", argv[1], argv[2:])
    return None


def script_module(path: str) -> str:
    """The module whose ``main`` a launcher in scripts/ runs (it parses the same flags)."""
    tree = ast.parse((ROOT / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "main" for a in node.names):
            return node.module
    raise AssertionError(f"{path} imports no main")


def collect():
    """Every checked command and python block: (where, kind, target, args or source)."""
    items = []
    for path in guide_paths():
        name = path.relative_to(ROOT).as_posix()
        for line, language, text, skipped in fenced_blocks(path):
            if skipped:
                continue
            where = f"{name}:{line}"
            if language == "python":
                items.append((where, "python", "", text))
            elif language in SHELL_LANGS:
                for argv in shell_commands(text):
                    found = classify(argv)
                    if found:
                        items.append((where, *found))
    return items


# Run in a fresh interpreter: imports every step once, parses each command with its flags.
CHECKER = r"""
import ast, importlib, inspect, json, sys
from absl import app, flags
import tfblend  # noqa: F401  (TensorFlow, once)
from tfblend.config import load_experiment

FLAGS = flags.FLAGS
app.define_help_flags()
flags.DEFINE_boolean("verbose", False, "Defined by tfblend.cli.run for every step.")
items = json.load(sys.stdin)
errors = []
base = set(FLAGS)


def argv_for(args):
    argv, literal = ["step"], []
    for arg in args:
        if not arg.startswith("--"):
            argv.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        if name.startswith("help") or name == "flagfile":
            continue
        if "$" in value:  # a shell variable: the flag must exist, its value is not parsed
            literal.append(name)
            flag = FLAGS[name] if name in FLAGS else None
            kind = flag.flag_type() if flag is not None else ""
            dummy = {"int": "1", "float": "1.0"}.get(kind, "x")
            argv.append(f"--{name}={dummy}")
            continue
        argv.append(arg)
    return argv, literal


def check_step(where, module, args):
    argv, literal = argv_for(args)
    for name in literal:
        if name not in FLAGS:
            errors.append(f"{where}: {module} has no flag --{name}")
            return
    try:
        FLAGS(argv)
    except (flags.Error, app.UsageError) as error:
        errors.append(f"{where}: python -m {module}: {error}")
        return
    finally:
        overrides = FLAGS["params_override"].value if "params_override" in FLAGS else ""
        FLAGS.unparse_flags()
    if argv[1:] and any(not a.startswith("--") for a in argv[1:]):
        errors.append(f"{where}: {module}: unexpected arguments {argv[1:]}")
    if overrides:
        try:
            load_experiment(None, overrides)
        except Exception as error:
            errors.append(f"{where}: --params_override={overrides!r}: {error}")


def check_bench(where, args):
    import benchmarks.run as bench

    try:
        parsed = bench.parse_args(args)
    except SystemExit:
        errors.append(f"{where}: python -m benchmarks.run {' '.join(args)}: refused (above)")
        return
    unknown = {n for n in parsed.only.split(",") if n} - set(bench.benchmark_names())
    if unknown:
        errors.append(f"{where}: benchmarks.run --only names no benchmark {sorted(unknown)}")


def check_python(where, source):
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        errors.append(f"{where}: python block does not parse: {error}")
        return
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            try:
                module = importlib.import_module(node.module)
            except ImportError as error:
                errors.append(f"{where}: from {node.module} import ...: {error}")
                continue
            for alias in node.names:
                if not hasattr(module, alias.name):
                    errors.append(f"{where}: {node.module} has no {alias.name}")
                else:
                    imported[alias.asname or alias.name] = getattr(module, alias.name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        bases = [imported.get(b.id) for b in node.bases if isinstance(b, ast.Name)]
        bases = [b for b in bases if inspect.isclass(b)]
        for item in node.body:
            if not bases or not isinstance(item, ast.FunctionDef):
                continue
            if item.name == "__init__":
                continue
            found = [getattr(b, item.name) for b in bases if hasattr(b, item.name)]
            if not found:
                errors.append(
                    f"{where}: {node.name}.{item.name} overrides nothing of "
                    f"{[b.__name__ for b in bases]}"
                )
                continue
            ours = [a.arg for a in item.args.args]
            theirs = list(inspect.signature(found[0]).parameters)
            required = [
                p.name for p in inspect.signature(found[0]).parameters.values()
                if p.default is inspect.Parameter.empty
            ]
            if ours[: len(required)] != required or len(ours) > len(theirs):
                errors.append(
                    f"{where}: {node.name}.{item.name}({', '.join(ours)}) does not match the "
                    f"base's ({', '.join(theirs)})"
                )


by_module = {}
for where, kind, target, payload in items:
    if kind == "step":
        by_module.setdefault(target, []).append((where, payload))
    elif kind == "bench":
        check_bench(where, payload)
    elif kind == "python":
        check_python(where, payload)
for module, commands in sorted(by_module.items()):
    before = set(FLAGS)
    try:
        importlib.import_module(module)
    except Exception as error:
        errors.append(f"{commands[0][0]}: python -m {module}: cannot import: {error!r}")
        continue
    for where, args in commands:
        check_step(where, module, args)
    for name in set(FLAGS) - before:  # the next step defines its own (some share names)
        delattr(FLAGS, name)
    sys.modules.pop(module, None)
print(json.dumps(errors))
"""


@pytest.fixture(scope="module")
def items():
    found = collect()
    assert found, "no checked commands found in README.md and docs/*.md"
    return found


def test_guides_commands_and_snippets_match_the_code(items):
    """Every step command line parses with the step's flags; every snippet's names exist."""
    errors, payload = [], []
    for where, kind, target, args in items:
        if kind == "script":
            path = ROOT / target
            if not path.is_file():
                errors.append(f"{where}: {target} does not exist")
                continue
            payload.append((where, "step", script_module(target), args))
        elif kind == "make":
            rules = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M))
            errors += [f"{where}: make has no target {t}" for t in target.split() if t not in rules]
        else:
            payload.append((where, kind, target, args))
    assert any(kind == "step" for _, kind, _, _ in payload), "no step command found"
    # A command with a flag no step defines: the checker must find it (it is not vacuous).
    payload.append((SENTINEL, "step", "tfblend.steps.export", ["--model_dir=m", "--expor_base=x"]))
    run = subprocess.run(
        [sys.executable, "-c", CHECKER],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert any(e.startswith(SENTINEL) and "expor_base" in e for e in found), found
    errors += [e for e in found if not e.startswith(SENTINEL)]
    assert not errors, "\n".join(errors)


def test_readme_links_every_guide_and_links_resolve():
    readme = (ROOT / "README.md").read_text()
    guides = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert guides, "docs/ holds no guide"
    linked = set(re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)", readme))
    assert not guides - linked, f"guides the README does not link: {sorted(guides - linked)}"
    assert not linked - guides, f"the README links guides that do not exist: {linked - guides}"
    broken = []
    for path in guide_paths():
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"^(https?:|mailto:|#)", target):
                continue
            file = (path.parent / target.split("#")[0]).resolve()
            if not file.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, f"links to nothing: {broken}"


def test_block_parsing():
    """Continuation lines, comments and environment prefixes are read as a shell reads them."""
    text = textwrap.dedent(
        """\
        # train
        TF_CONFIG='{"task": {"index": 0}}' python scripts/blend.py --strategy=multi_worker \\
            --batch_size=1024  # global
        python -m tfblend.steps.export --model_dir=m && make check-readme
        curl -s http://localhost:8501
        """
    )
    assert [classify(argv) for argv in shell_commands(text)] == [
        ("script", "scripts/blend.py", ["--strategy=multi_worker", "--batch_size=1024"]),
        ("step", "tfblend.steps.export", ["--model_dir=m"]),
        ("make", "check-readme", []),
        None,
    ]
