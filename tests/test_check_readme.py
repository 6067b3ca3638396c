"""check_readme tells a stale table from a table of another CPU kind, and the report's footer
names the CPU kind (tfblend.evaluation.machine)."""

import subprocess
import sys

import pytest

from tfblend.evaluation.machine import cpu_facts, footer_line, kind_of_report
from tfblend.tools.check_readme import OTHER_KIND_STATUS, check_readme

AVX2_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
cache size\t: 512 KB
flags\t\t: fpu sse2 avx fma avx2 bmi2

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx fma avx2 bmi2
"""
BF16_CPUINFO = AVX2_CPUINFO.replace("avx2 bmi2", "avx2 bmi2 avx512f avx512_vnni avx512_bf16")

TABLE = [
    "| model | frame acc % | test WER % |",
    "|---|---|---|",
    "| teacher (BLSTM) | {teacher} | 16.87 |",
    "| CNN baseline | 49.48 | 8.43 |",
]


def _report(path, kind, teacher="45.33"):
    facts = cpu_facts(AVX2_CPUINFO if kind == "avx2" else BF16_CPUINFO, environ={})
    assert facts["kind"] == kind
    lines = ["## Results", "", *(line.format(teacher=teacher) for line in TABLE), ""]
    lines += ["Stage wall times (s): corpus 63", "", footer_line(facts)]
    path.write_text("\n".join(lines) + "\n")


def _readme(path, report, kind):
    marker = f"<!-- demo-table: {report}{f'; cpu kind: {kind}' if kind else ''} -->"
    table = [line.format(teacher="45.33") for line in TABLE]
    path.write_text("\n".join(["# Demo", "", marker, *table, "", "Text."]) + "\n")


def test_the_footer_names_the_cpu_and_its_kind():
    assert cpu_facts(AVX2_CPUINFO, environ={}) == {
        "model": "AMD EPYC 7B13 (family 25, model 1, cache 512 KB)",
        "flags": ["avx2"],
        "onednn": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": None},
        "kind": "avx2",
    }
    facts = cpu_facts(BF16_CPUINFO, environ={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert facts["flags"] == ["avx2", "avx512f", "avx512_bf16"]
    assert facts["kind"] == "avx2+avx512f+avx512_bf16/onednn-max=avx2"
    line = footer_line(facts)
    assert line == (
        "This run's CPU: AMD EPYC 7B13 (family 25, model 1, cache 512 KB); flags avx2 avx512f "
        "avx512_bf16 (not amx_bf16); oneDNN: TF_ENABLE_ONEDNN_OPTS=1, ONEDNN_MAX_CPU_ISA=AVX2; "
        "CPU kind: `avx2+avx512f+avx512_bf16/onednn-max=avx2`"
    )
    assert kind_of_report(f"text\n\n{line}\n") == facts["kind"]
    assert cpu_facts(AVX2_CPUINFO, environ={"TF_ENABLE_ONEDNN_OPTS": "0"})["kind"] == "avx2/eigen"
    assert cpu_facts("", environ={})["kind"] == "unknown"
    assert kind_of_report("Stage wall times (s): corpus 63\n") is None


@pytest.mark.parametrize("report_kind", ["avx2", "avx2+avx512f+avx512_bf16"])
def test_an_equal_table_passes_on_any_cpu_kind(tmp_path, report_kind):
    _report(tmp_path / "results.md", report_kind)
    _readme(tmp_path / "README.md", tmp_path / "results.md", "avx2")
    assert check_readme(str(tmp_path / "README.md")) == (1, [], [])


def test_a_changed_cell_on_the_same_cpu_kind_is_a_stale_table(tmp_path):
    _report(tmp_path / "results.md", "avx2", teacher="45.69")
    _readme(tmp_path / "README.md", tmp_path / "results.md", "avx2")
    checked, differences, other_kinds = check_readme(str(tmp_path / "README.md"))
    assert (checked, other_kinds) == (1, [])
    assert differences == [
        f"{tmp_path}/README.md:4: row 'teacher (BLSTM)', column 'frame acc %': README has "
        f"'45.33', the report '45.69' ({tmp_path}/results.md)"
    ]


def test_a_table_without_kinds_is_compared_as_before(tmp_path):
    _report(tmp_path / "results.md", "avx2+avx512f+avx512_bf16", teacher="45.69")
    _readme(tmp_path / "README.md", tmp_path / "results.md", None)
    checked, differences, other_kinds = check_readme(str(tmp_path / "README.md"))
    assert (len(differences), other_kinds) == (1, [])


def test_a_table_from_another_cpu_kind_is_reported_as_such(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _report(tmp_path / "results.md", "avx2+avx512f+avx512_bf16", teacher="45.69")
    _readme(tmp_path / "README.md", "results.md", "avx2")
    checked, differences, other_kinds = check_readme("README.md")
    assert differences == []
    difference = (
        "README.md:4: row 'teacher (BLSTM)', column 'frame acc %': README has '45.33', the "
        "report '45.69' (results.md)"
    )
    assert other_kinds == [(3, "avx2", "avx2+avx512f+avx512_bf16", [difference])]

    check = [sys.executable, "-m", "tfblend.tools.check_readme", "--readme=README.md"]
    result = subprocess.run(check, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == OTHER_KIND_STATUS == 3, result.stderr[-2000:]
    assert result.stdout.strip().splitlines() == [difference]
    assert result.stderr.strip().splitlines()[-1] == (
        "check_readme.py: README.md:3: the table is from another CPU kind (README: avx2; the "
        "report: avx2+avx512f+avx512_bf16): 1 difference(s) listed above; compare with a "
        "report of CPU kind avx2"
    )
