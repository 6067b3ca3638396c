"""The study's models against the GPU replication of the same corpus and architectures.

A replication outside tfblend's code (PyTorch on one NVIDIA H200, run on 2026-12-04 on the
medium corpus exported with the pipeline's global CMVN; docs/reference-facts.md section 5)
trained the BLSTM of ``teacher.yaml``'s size and the ``deep`` student at 41 frames (batch norm,
dense chunks of 4 output frames, 2,048 frames per batch, Adam 2e-3, warm-up and cosine decay,
8 passes) and blended them (alpha 0.5, T 1, top-51).
Its test frame accuracies are the figures a converged TF model of the same setting should come
within :data:`TOLERANCE` of; :func:`reference_lines` puts each of the study's models beside its
figure (the range over the replication's seeds) and says how far outside it lies.

Only the medium corpus was replicated: for another size the section says so and compares
nothing.
"""

from tfblend.evaluation.report import table_lines

#: Role -> (what the replication trained, its test frame accuracies in %, one per seed).
REPLICATION = {
    "teacher": ("BLSTM 2 x 128, 8 passes", (67.14, 67.21)),
    "cnn": ("deep CNN, 41 frames, dense chunks of 4, 8 passes", (69.29, 68.35)),
    "blend": ("blended CNN, 41 frames, 2 x 128 teacher, 8 passes", (69.47,)),
}
#: How close (percentage points) a converged model should come to the replication's range.
TOLERANCE = 1.0


def distance(ours: float, figures) -> float:
    """Signed points from ``ours`` to the range of ``figures`` (0 inside it; negative below)."""
    low, high = min(figures), max(figures)
    if ours < low:
        return ours - low
    return max(0.0, ours - high)


def reference_lines(data) -> list:
    """The Markdown section: one row per replicated role the study scored (test frame accuracy,
    mean ± std over seeds, the replication's figures, the distance, and whether it lies within
    :data:`TOLERANCE`). ``data``: :class:`tfblend.study.inputs.StudyData`."""
    lines = ["## Against the GPU replication", ""]
    size = data.study.get("size")
    if size != "medium":
        return [*lines, f"Not compared: the replication trained on the medium corpus, this "
                f"study on {size!r}.", ""]  # fmt: skip
    epochs = data.study.get("epochs", {})
    lines += [
        "The same corpus and architectures trained in PyTorch on one NVIDIA H200 (2026-12-04; "
        "docs/reference-facts.md section 5): 8 passes for every model, the student on chunks "
        "of 4 frames, 2,048 frames per batch. "
        f"This study: teacher {epochs.get('teacher', '?')} epochs, students "
        f"{epochs.get('student', '?')}, chunks and batch of the study's student. Test frame "
        f"accuracy; a model is within tolerance when it lies within {TOLERANCE:g} point of the "
        "replication's range over seeds.",
        "",
    ]
    rows = []
    for role, (setting, figures) in REPLICATION.items():
        model = data.role(role)
        if model is None or model.accuracy is None:
            rows.append([role, setting, "not scored", _figures(figures), "", "not run"])
            continue
        ours = model.accuracy["mean"] * 100
        # To the figures' 2 decimals, as shown: 68.21 against 67.21 is +1.00, within 1 point
        # (in binary floating point the difference is 1.0000000000000142).
        gap = round(distance(ours, figures), 2)
        spread = f" ± {model.accuracy['std'] * 100:.2f}" if model.accuracy["n"] > 1 else ""
        verdict = "within" if abs(gap) <= TOLERANCE else ("below" if gap < 0 else "above")
        rows.append([
            model.name, setting, f"{ours:.2f}{spread} ({model.accuracy['n']})",
            _figures(figures), f"{gap:+.2f}", verdict,
        ])  # fmt: skip
    header = ["model", "replication's setting", "ours % (seeds)", "replication %", "distance",
              f"within {TOLERANCE:g} point"]  # fmt: skip
    return [*lines, *table_lines(header, rows), ""]


def _figures(figures) -> str:
    return " / ".join(f"{value:.2f}" for value in figures)
