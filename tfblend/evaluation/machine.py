"""The CPU a run's figures come from, and the settings that change its floating-point results.

TensorFlow's oneDNN kernels (on by default in tfblend: ``TF_ENABLE_ONEDNN_OPTS=1``) choose their
code at run time by the CPU's instruction sets: the same float32 matmul runs AVX2 code on one
CPU and AVX-512 code on another, and sums in another order. Where a model's training takes many
such steps (the BLSTM teacher), its figures then differ in the last digits between CPU kinds,
while they repeat exactly on one kind (docs/reference-facts.md, section 6). A report therefore
names its CPU kind, and ``tfblend.tools.check_readme`` compares a table with a report of the
same kind only.

The **CPU kind** is the set of the CPU's instruction-set flags that oneDNN dispatches on
(:data:`KIND_FLAGS`, joined with ``+``, e.g. ``avx2`` or ``avx2+avx512f+avx512_bf16``), followed
by the settings that change the kernels: ``onednn-max=<ISA>`` where ``ONEDNN_MAX_CPU_ISA`` caps
them, ``eigen`` where ``TF_ENABLE_ONEDNN_OPTS=0`` turns oneDNN off (``/``-separated).
"""

from __future__ import annotations

import os
import re

#: The flags of /proc/cpuinfo that decide oneDNN's kernels, in the CPU kind's order.
KIND_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
#: The footer's CPU kind, as :func:`footer_line` writes it and :func:`kind_of_report` reads it.
KIND_PATTERN = re.compile(r"CPU kind: `([^`]+)`")


def cpu_facts(cpuinfo: str | None = None, environ=None) -> dict:
    """What a report says about its CPU: ``model`` (name, family, model number, cache),
    ``flags`` (those of :data:`KIND_FLAGS` present), ``onednn`` (the two settings) and
    ``kind``. ``cpuinfo``: the text of /proc/cpuinfo (read when None; "unknown" where it cannot
    be read); ``environ``: the environment (``os.environ`` when None)."""
    environ = os.environ if environ is None else environ
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as stream:
                cpuinfo = stream.read()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() not in fields:  # the first processor's
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    present = [flag for flag in KIND_FLAGS if flag in flags]
    opts = environ.get("TF_ENABLE_ONEDNN_OPTS", "1")
    max_isa = environ.get("ONEDNN_MAX_CPU_ISA")
    kind = ("+".join(present) or "no-avx2") if fields.get("flags") else "unknown"
    if max_isa:
        kind += f"/onednn-max={max_isa.lower()}"
    if opts == "0":
        kind += "/eigen"
    model = fields.get("model name", "unknown CPU")
    details = [
        f"{name} {fields[key]}"
        for name, key in (("family", "cpu family"), ("model", "model"), ("cache", "cache size"))
        if key in fields
    ]
    return {
        "model": f"{model} ({', '.join(details)})" if details else model,
        "flags": present,
        "onednn": {"TF_ENABLE_ONEDNN_OPTS": opts, "ONEDNN_MAX_CPU_ISA": max_isa},
        "kind": kind,
    }


def footer_line(facts: dict) -> str:
    """The report footer's CPU line: the model, the flags present and missing, the oneDNN
    settings and the CPU kind (read back by :func:`kind_of_report`)."""
    missing = [flag for flag in KIND_FLAGS if flag not in facts["flags"]]
    flags = " ".join(facts["flags"]) or "none of " + " ".join(KIND_FLAGS)
    if missing and facts["flags"]:
        flags += f" (not {' '.join(missing)})"
    onednn = facts["onednn"]
    return (
        f"This run's CPU: {facts['model']}; flags {flags}; oneDNN: TF_ENABLE_ONEDNN_OPTS="
        f"{onednn['TF_ENABLE_ONEDNN_OPTS']}, ONEDNN_MAX_CPU_ISA="
        f"{onednn['ONEDNN_MAX_CPU_ISA'] or 'unset'}; CPU kind: `{facts['kind']}`"
    )


def kind_of_report(text: str) -> str | None:
    """The CPU kind a report's footer names, or None (a report from before kinds were
    recorded)."""
    match = KIND_PATTERN.search(text)
    return match[1] if match else None
