"""RESULTS.md's diagnosis: how much of each gap is the training budget, and how much is context.

The learning-curve section (:func:`learning_curve_lines`) reads dev histories; the context
section (:func:`context_lines`) reads the test scores of the teachers scored from the CNN's window
only (role ``teacher_window``, ``python -m tfblend.study --windowed_teacher``).

The study records in study.json, for seed 0 of every trained model and for the CNN
baseline and the blended CNN trained again for ``longer_epochs`` (roles ``cnn_longer`` and
``blend_longer``)::

  "learning_curves": [{"name", "role", "run", "train_accuracy": [per epoch],
                       "dev_accuracy": [per epoch], "seconds": wall seconds or null}],
  "longer_epochs": N (0: no longer runs)

The learning curves are dev frame accuracy of one seed: they explain the test verdicts, decide
nothing, and carry no interval (the seed spread is in the model table). The context section
decides nothing either; its intervals are the study's paired bootstrap on test.
"""

from tfblend.evaluation.report import markdown_table
from tfblend.study.goals import FRAME_ACCURACY, compare, interval_text, points

#: What ``<role> − windowed teacher`` measures, for the roles the context section compares.
CONTEXT_READINGS = (
    ("teacher", "what the whole utterance adds to the teacher"),
    ("cnn", "finding 1 at equal context"),
    ("blend", "the blend against the teacher at equal context"),
)


def _pct(value: float) -> str:
    return f"{value * 100:.2f}"


#: The table's (key, header, format) columns (``tfblend.evaluation.report.markdown_table``).
COLUMNS = [
    ("name", "model", "str"),
    ("epochs", "epochs", "str"),
    ("dev", "dev acc % after each epoch", "str"),
    ("train", "train acc %", "str"),
    ("gap", "train − dev", "str"),
    ("per_epoch", "s per epoch", "str"),
]


def _row(curve: dict) -> dict:
    dev, train = curve["dev_accuracy"], curve["train_accuracy"]
    seconds = curve.get("seconds")
    return {
        "name": curve["name"],
        "epochs": str(len(dev)),
        "dev": " → ".join(_pct(v) for v in dev),
        "train": _pct(train[-1]),
        "gap": points(train[-1] - dev[-1]),
        "per_epoch": "not recorded" if seconds is None else f"{seconds / len(dev):,.0f}",
    }


def _epochs(curve: dict) -> str:
    n = len(curve["dev_accuracy"])
    return f"{n} epoch" + ("" if n == 1 else "s")


def _final(curve: dict) -> float:
    return curve["dev_accuracy"][-1]


def _readings(by_role: dict) -> list:
    """Bullet lines comparing the curves present (each skipped when a curve is missing)."""
    teacher, cnn, blend = by_role.get("teacher"), by_role.get("cnn"), by_role.get("blend")
    cnn_long, blend_long = by_role.get("cnn_longer"), by_role.get("blend_longer")
    lines = []
    if teacher and cnn:
        n = len(cnn["dev_accuracy"])
        if len(teacher["dev_accuracy"]) > n:
            gap = teacher["dev_accuracy"][n - 1] - _final(cnn)
            lines.append(
                f"- The teacher after {_epochs(cnn)} against the CNN trained for {_epochs(cnn)} "
                f"(the same passes over the data): {points(gap)} points on dev."
            )
        for student in (cnn, cnn_long):
            if student:
                lines.append(
                    f"- The teacher ({_epochs(teacher)}) against the CNN ({_epochs(student)}): "
                    f"{points(_final(teacher) - _final(student))} points on dev."
                )
    if cnn and cnn_long:
        lines.append(
            f"- Training the CNN for {_epochs(cnn_long)} instead of {_epochs(cnn)} gains "
            f"{points(_final(cnn_long) - _final(cnn))} points on dev."
        )
    for pair in ((blend, cnn), (blend_long, cnn_long)):
        if all(pair):
            lines.append(
                f"- The blended CNN's lead over the CNN at {_epochs(pair[0])}: "
                f"{points(_final(pair[0]) - _final(pair[1]))} points on dev."
            )
    not_over = [
        c["name"] for c in by_role.values() if c["train_accuracy"][-1] <= c["dev_accuracy"][-1]
    ]
    if not_over:
        lines.append(
            "- Training accuracy not above dev (no sign of overfitting at this budget): "
            + ", ".join(not_over)
            + "."
        )
    return lines


def learning_curve_lines(study: dict) -> list:
    """The section's Markdown lines ("not recorded" when study.json has no learning curves)."""
    lines = ["## Learning curves on dev (seed 0)", ""]
    curves = study.get("learning_curves")
    if not curves:
        return [*lines, "Not recorded by this study.", ""]
    longer = study.get("longer_epochs")
    lines += [
        "What the training budget explains. Dev frame accuracy of seed 0 after each epoch (a "
        "run's learning rate follows one cosine over all its epochs, so a longer run is a run of "
        "its own, not the shorter one continued); training accuracy is Keras's mean over the last "
        "epoch's batches, taken while the weights still change. Dev only: nothing here is "
        "chosen, and one seed carries no interval.",
        "",
    ]
    if not longer:
        lines += ["No longer runs were trained (`--longer_epochs=0`).", ""]
    lines.append(markdown_table([_row(c) for c in curves], COLUMNS))
    by_role = {}
    for curve in curves:
        if curve["role"] != "sweep":
            by_role.setdefault(curve["role"], curve)
    return [*lines, "", *_readings(by_role), ""]


def context_lines(data, *, num_resamples: int, seed: int) -> list:
    """The context section's Markdown lines: the teacher (BLSTM) scored from each frame's CNN
    window only, against the teacher on whole utterances, the CNN baseline and the blended CNN
    (test frame accuracy; ``data`` a :class:`tfblend.study.inputs.StudyData`)."""
    lines = ["## Context: the teacher on the CNN's window", ""]
    windowed = data.role("teacher_window")
    if windowed is None or windowed.frames is None:
        return [*lines, "Not run by this study (`--windowed_teacher`).", ""]
    context = windowed.entry.get("context")
    lines += [
        f"The BLSTM reads whole utterances; the CNN reads {2 * context + 1} frames. Scored from "
        f"each frame's window of {context} frames either side only (the window run as a short "
        "utterance and its centre frame kept, edge frames repeated as the CNN sees them, as the "
        "Distiller's online teacher sees it), the teacher shows how much of its lead is context "
        "the CNN never has. Test frame accuracy, paired bootstrap over utterances pooled over "
        "seeds (the model table has its mean ± std).",
        "",
    ]
    for role, reading in CONTEXT_READINGS:
        model = data.role(role)
        if model is None or model.frames is None:
            continue
        c = compare(model, [windowed], FRAME_ACCURACY, num_resamples=num_resamples, seed=seed)[
            windowed.name
        ]
        lines.append(
            f"- {model.name} − {windowed.name} ({reading}): {interval_text(c)}: {c.verdict}"
        )
    return [*lines, ""]
