"""RESULTS.md's learning-curve section: how much of each gap on dev is the training budget.

``scripts/study.py`` records in study.json, for seed 0 of every trained model and for the CNN
baseline and the blended CNN trained again for ``longer_epochs`` (roles ``cnn_longer`` and
``blend_longer``)::

  "learning_curves": [{"name", "role", "run", "train_accuracy": [per epoch],
                       "dev_accuracy": [per epoch], "seconds": wall seconds or null}],
  "longer_epochs": N (0: no longer runs)

Everything here is dev frame accuracy of one seed: it explains the test verdicts, it decides
nothing, and it carries no interval (the seed spread is in the model table).
"""

from tfblend.report import markdown_table
from tfblend.study_goals import points


def _pct(value: float) -> str:
    return f"{value * 100:.2f}"


#: The table's (key, header, format) columns (``tfblend.report.markdown_table``).
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
