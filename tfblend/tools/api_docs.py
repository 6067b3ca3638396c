"""Build the API reference (HTML) from the docstrings of the public modules, with pdoc.

The reference covers what users subclass or call: the Distiller and its soft losses
(``tfblend.distill``), the models (``tfblend.models``), the input pipeline
(``tfblend.pipeline``), the stored targets' writers and readers (``tfblend.targets``,
``tfblend.records``), the export (``tfblend.export``) and the error type (``tfblend.errors``);
``tfblend`` itself is the index page that re-exports them. Docstrings are Google style (``Args:``,
``Returns:``, ``Raises:``) with reStructuredText roles, as pdoc's ``google`` format reads them.

Any warning pdoc gives while it renders (a module that does not import, a docstring it cannot
parse, an annotation it cannot resolve) fails the build, and so does a docstring that renders
wrong: an inline literal (double backquotes) that pdoc left as text, which happens when one is
split across lines. The problems are listed and the command ends in one line and exit status 1,
with nothing written.

Needs the ``docs`` extra (``pip install -e '.[docs]'``, pinned pdoc).

Reads:  the installed tfblend modules.
Writes: --output_dir (default docs/api, ignored by git): index.html, tfblend.html and one page
        per documented module.

Example (`make docs` runs this):
  python -m tfblend.tools.api_docs --output_dir=docs/api
"""

import importlib
import os
import pathlib
import re
import shutil
import tempfile
import warnings

from absl import flags

from tfblend import cli
from tfblend.errors import DataError

#: The documented modules (packages bring their submodules).
MODULES = (
    "tfblend",
    "tfblend.distill",
    "tfblend.models",
    "tfblend.pipeline",
    "tfblend.targets",
    "tfblend.records",
    "tfblend.export",
    "tfblend.errors",
)

flags.DEFINE_string("output_dir", "docs/api", "Where the HTML reference is written.")
flags.DEFINE_list("modules", list(MODULES), "Modules to document (packages with submodules).")
FLAGS = flags.FLAGS


def build(output_dir: str, modules=MODULES) -> list[str]:
    """Render ``modules`` to ``output_dir`` (replaced whole) and return the files written.

    Raises:
      DataError listing every warning pdoc gave (nothing is written then), or when pdoc is not
      installed.
    """
    try:
        import pdoc
        import pdoc.render
    except ImportError as error:
        raise DataError("pdoc is not installed: pip install -e '.[docs]'") from error
    for name in modules:  # import first: the libraries' own import-time notices are not ours
        importlib.import_module(name)
    pdoc.render.configure(docformat="google", show_source=False, search=False)
    # pdoc renders into a fresh directory, moved into place only when it gave no warning.
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".api-", dir=parent)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pdoc.pdoc(*modules, output_directory=pathlib.Path(staging))
        problems = [f"{w.category.__name__}: {str(w.message).strip()}" for w in caught]
        problems += _unrendered_literals(staging)
        if problems:
            raise DataError(
                f"the API reference has {len(problems)} problem(s):\n" + "\n".join(problems)
            )
        shutil.rmtree(output_dir, ignore_errors=True)
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    written = []
    for root, _, files in os.walk(output_dir):
        written += [os.path.relpath(os.path.join(root, f), output_dir) for f in files]
    return sorted(written)


def _unrendered_literals(directory: str) -> list[str]:
    """``page: ...text...`` for every literal whose double backquotes were left in a page."""
    found = []
    for page in sorted(pathlib.Path(directory).rglob("*.html")):
        text = page.read_text()
        for match in re.finditer(r"``[^`<>]{0,200}?``|``", text):
            context = " ".join(text[max(0, match.start() - 60) : match.end() + 60].split())
            found.append(f"{page.relative_to(directory)}: unrendered literal: ...{context}...")
    return found


def main(_):
    files = build(FLAGS.output_dir, tuple(FLAGS.modules))
    cli.say(f"wrote the API reference: {FLAGS.output_dir}/index.html ({len(files)} files)")


if __name__ == "__main__":
    cli.run(main)
