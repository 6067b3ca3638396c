"""Check that the README's demo table is, cell by cell, the table one demo run printed.

A table the README copies from a run's report is marked with the report it comes from, and the
CPU kind that report names in its footer (``CPU kind: `...` ``, see
:mod:`tfblend.evaluation.machine`), on the line above it:

  <!-- demo-table: work/demo/report/results.md; cpu kind: avx2 -->
  | model | frame acc % | ... |

For every marker the check reads the table under it and the first table of the report (the
results table the recipe prints at its end, with the WER column and the pocketsphinx rows that
the wer stage adds) and compares the header and every row, cell by cell. A stale table (copied
from another run, or assembled from several) is caught: every difference is listed on stdout as
"README.md:LINE: row ..., column ...: README has A, the report B", and the check ends in one
line and exit status 1.

A table from another CPU kind is not stale: the BLSTM teacher's training, and the models and
WERs that depend on it, differ in the last digits between CPU kinds (docs/reference-facts.md,
section 6). When the marker's kind and the report's differ, the differences are listed the same
way and the check ends in a line saying the table is from another CPU kind (naming both) and
exit status 3. A marker or a report without a kind is compared as before.

Reads:  --readme (default README.md) and the report each marker names (or --report).
Writes: nothing.

Example (after `make demo`; `make check-readme` runs this):
  python -m tfblend.tools.check_readme --readme=README.md --report=work/demo/report/results.md
"""

import os
import re
import sys

from absl import flags

from tfblend import cli
from tfblend.errors import DataError
from tfblend.evaluation.machine import kind_of_report

flags.DEFINE_string("readme", "README.md", "The Markdown file whose marked tables are checked.")
flags.DEFINE_string(
    "report", None, "The report to compare with (default: the path each marker names)."
)
FLAGS = flags.FLAGS

MARKER = re.compile(r"<!--\s*demo-table:\s*([^\s;]+)\s*(?:;\s*cpu kind:\s*(\S+)\s*)?-->")
#: The exit status of a table from another CPU kind (1: stale, or another error).
OTHER_KIND_STATUS = 3


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def read_table(lines: list[str], start: int) -> tuple[int, list[str], list[list[str]]]:
    """The first Markdown table at or after line index ``start``: ``(index of its header line,
    header cells, rows of cells)``; the separator line is skipped. DataError if there is none."""
    first = next((i for i in range(start, len(lines)) if lines[i].startswith("|")), None)
    if first is None:
        raise DataError("no table")
    last = first
    while last < len(lines) and lines[last].startswith("|"):
        last += 1
    body = [_cells(line) for line in lines[first + 2 : last]]
    return first, _cells(lines[first]), body


def compare_tables(readme: tuple, report: tuple) -> list[str]:
    """The differences between two tables (``(header, rows)``), as phrases naming the row (its
    first cell) and the column; [] when equal. Cells are compared by column name, so a table
    with a column too many or too few still has its common cells checked."""
    (header, rows), (want_header, want_rows) = readme, report
    differences = []
    if header != want_header:
        differences.append(f"columns {header} != the report's {want_header}")
    names, want_names = [row[0] for row in rows], [row[0] for row in want_rows]
    differences += [
        f"row {n!r} is missing (the report has it)" for n in want_names if n not in names
    ]
    differences += [f"row {n!r} is not in the report" for n in names if n not in want_names]
    common = [name for name in names if name in want_names]
    if common != [name for name in want_names if name in names]:
        differences.append(f"rows in another order than the report's {want_names}")
    columns = [column for column in header[1:] if column in want_header]
    for name in common:
        row = dict(zip(header, rows[names.index(name)], strict=False))
        want = dict(zip(want_header, want_rows[want_names.index(name)], strict=False))
        for column in columns:
            have, expected = row.get(column, ""), want.get(column, "")
            if have != expected:
                differences.append(
                    f"row {name!r}, column {column!r}: README has {have!r}, the report {expected!r}"
                )
    return differences


def check_readme(readme_path: str, report_path: str | None = None) -> tuple[int, list, list]:
    """Compares every marked table of ``readme_path`` with its report (``report_path`` instead
    of the marker's, when given). Returns ``(tables checked, differences, other kinds)``, each
    difference "<readme>:<line>: <what differs> (<report>)"; the differences of a table whose
    marker names another CPU kind than its report are not in ``differences`` but in ``other
    kinds``, one ``(readme line, README's kind, report's kind, differences)`` per such table.
    DataError naming the file when the README has no marker, or a report or table is
    missing."""
    with open(readme_path) as stream:
        lines = stream.read().splitlines()
    markers = [(i, m[1], m[2]) for i, line in enumerate(lines) if (m := MARKER.search(line))]
    if not markers:
        raise DataError(f"{readme_path} marks no table (<!-- demo-table: REPORT -->)")
    differences, other_kinds = [], []
    for index, named, kind in markers:
        report = report_path or named
        if not os.path.exists(report):
            raise DataError(f"{report} does not exist: run the demo (make demo) first")
        with open(report) as stream:
            text = stream.read()
        _, header, rows = read_table(text.splitlines(), 0)
        try:
            first, readme_header, readme_rows = read_table(lines, index + 1)
        except DataError:
            raise DataError(f"{readme_path}:{index + 1}: no table under the marker") from None
        found = [
            f"{readme_path}:{first + 1}: {difference} ({report})"
            for difference in compare_tables((readme_header, readme_rows), (header, rows))
        ]
        report_kind = kind_of_report(text)
        if found and kind and report_kind and kind != report_kind:
            other_kinds.append((index + 1, kind, report_kind, found))
        else:
            differences += found
    return len(markers), differences, other_kinds


def main(_):
    checked, differences, other_kinds = check_readme(FLAGS.readme, FLAGS.report)
    for difference in differences + [d for *_, found in other_kinds for d in found]:
        print(difference)
    if differences:
        raise DataError(
            f"{FLAGS.readme}: {len(differences)} difference(s) from the report (listed above): "
            "copy the table of one complete run of its report"
        )
    if other_kinds:
        for line, kind, report_kind, found in other_kinds:
            print(
                f"check_readme.py: {FLAGS.readme}:{line}: the table is from another CPU kind "
                f"(README: {kind}; the report: {report_kind}): {len(found)} difference(s) listed "
                f"above; compare with a report of CPU kind {kind}",
                file=sys.stderr,
            )
        sys.exit(OTHER_KIND_STATUS)
    cli.say(f"{FLAGS.readme}: {checked} marked table(s) equal to their report, cell by cell")


if __name__ == "__main__":
    cli.run(main)
