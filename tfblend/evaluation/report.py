"""The report of an evaluation: markdown tables, comparisons, training curves and the WER section.

Reads what :func:`tfblend.evaluation.evaluate_models` returns (``{"split", "frames", "models":
{name: {"runs", "info", "summary"}}}``) and the WER summary of :mod:`tfblend.steps.decode`; writes
``results.md``, ``results.json`` and ``training_curves.png``. Knows no model and no data set.
"""

import json
import math
import os

import numpy as np

from tfblend.errors import DataError
from tfblend.records import write_json


def seed_verdict(a: dict, b: dict, key: str = "accuracy") -> str:
    """``a`` against ``b`` (seed summaries): "better", "worse" or "tie", a tie when the gap is
    within the larger seed spread."""
    gap = a[key]["mean"] - b[key]["mean"]
    spread = max(a[key]["std"], b[key]["std"])
    if abs(gap) <= spread:
        return "tie"
    return "better" if gap > 0 else "worse"


def table_lines(header: list, rows: list) -> list[str]:
    """A Markdown table as lines: ``header`` (column titles) and ``rows`` (lists of cells,
    written with ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table; ``columns`` are (key, header, format) with format "pct", "num" or "str"."""
    lines = [
        "| " + " | ".join(header for _, header, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = []
        for key, _, kind in columns:
            value = row.get(key)
            if value is None:
                cells.append("")
            elif isinstance(value, dict):  # a seed summary
                scale = 100.0 if kind == "pct" else 1.0
                text = f"{value['mean'] * scale:.2f}"
                if len(value["values"]) > 1:
                    text += f" ± {value['std'] * scale:.2f}"
                cells.append(text)
            elif kind == "pct":
                cells.append(f"{value * 100:.2f}")
            elif kind == "num":
                cells.append(f"{value:,.3f}" if isinstance(value, float) else f"{value:,}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_training_curves(histories: dict, path: str) -> None:
    """One PNG: validation accuracy and loss per epoch of every model (``history.csv`` data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        epochs = np.arange(1, len(history.get("loss", [])) + 1)
        for key, axis in (("val_accuracy", left), ("val_loss", right)):
            if key in history:
                axis.plot(epochs, history[key], marker="o", label=name)
    left.set(xlabel="epoch", ylabel="dev frame accuracy", title="dev accuracy")
    right.set(xlabel="epoch", ylabel="dev loss", title="dev loss")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    _save_figure(figure, path)


def _save_figure(figure, path: str) -> None:
    import matplotlib.pyplot as plt

    temporary = f"{path}.tmp-{os.getpid()}.png"
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, path)


def read_history(model_dir: str) -> dict:
    """``history.csv`` of a model directory as column -> list of floats ({} if missing)."""
    path = os.path.join(model_dir, "history.csv")
    if not os.path.exists(path):
        return {}
    with open(path) as stream:
        header = stream.readline().strip().split(",")
        rows = [line.strip().split(",") for line in stream if line.strip()]
    return {
        key: [float(row[i]) if row[i] not in ("", "nan") else math.nan for row in rows]
        for i, key in enumerate(header)
    }


REPORT_COLUMNS = [
    ("name", "model", "str"),
    ("accuracy", "frame acc %", "pct"),
    ("accuracy_speech", "speech acc %", "pct"),
    ("top5", "top-5 %", "pct"),
    ("cross_entropy", "CE (nats)", "num"),
    ("phone_accuracy", "phone acc %", "pct"),
    ("params", "params", "num"),
    ("mflops", "MFLOPs/frame", "num"),
]


def report_rows(results: dict) -> list[dict]:
    """One table row per model/ensemble: seed summaries plus size facts."""
    rows = []
    for name, entry in results["models"].items():
        row = {"name": name, **entry["summary"]}
        if entry["info"]:
            row["params"] = entry["info"][0]["num_params"]
            if "flops_per_frame" in entry["info"][0]:
                row["mflops"] = entry["info"][0]["flops_per_frame"] / 1e6
        rows.append(row)
    return rows


def comparison_lines(results: dict, focus: str, key: str = "accuracy") -> list[str]:
    """One line per other model: ``focus`` better / worse / tie, with the gap in points."""
    models = results["models"]
    if focus not in models:
        raise DataError(f"--focus {focus!r} is not one of the evaluated models {list(models)}")
    mine = models[focus]["summary"]
    lines = []
    for name, entry in models.items():
        if name == focus:
            continue
        verdict = seed_verdict(mine, entry["summary"], key)
        gap = (mine[key]["mean"] - entry["summary"][key]["mean"]) * 100
        spread = max(mine[key]["std"], entry["summary"][key]["std"]) * 100
        runs = min(len(mine[key]["values"]), len(entry["summary"][key]["values"]))
        spread_text = f"seed spread {spread:.2f}" if runs > 1 else "one seed: spread not measured"
        lines.append(f"- {focus} vs {name}: {verdict} ({gap:+.2f} points of {key}; {spread_text})")
    return lines


def write_report(results: dict, output_dir: str, focus: str | None = None, facts=()) -> str:
    """Writes results.json, results.md and training_curves.png; returns the Markdown text.

    Args:
      results: from :func:`evaluate_models`.
      output_dir: the report directory.
      focus: a model compared with every other (gaps within the seed spread are ties).
      facts: extra lines for the report (data size, wall times).
    """
    text = [f"Held-out split `{results['split']}`: {results['frames']:,} frames.", ""]
    text.append(markdown_table(report_rows(results), REPORT_COLUMNS))
    if focus:
        text += ["", *comparison_lines(results, focus)]
    if facts:
        text += ["", *facts]
    markdown = "\n".join(text) + "\n"
    write_json(os.path.join(output_dir, "results.json"), results)
    temporary = os.path.join(output_dir, f".results.md.tmp-{os.getpid()}")
    with open(temporary, "w") as stream:
        stream.write(markdown)
    os.replace(temporary, os.path.join(output_dir, "results.md"))
    histories = {}
    for name, entry in results["models"].items():
        for run, info in enumerate(entry["info"]):
            history = read_history(info["model_dir"])
            if history:
                histories[f"{name} #{run + 1}" if len(entry["info"]) > 1 else name] = history
    if histories:
        plot_training_curves(histories, os.path.join(output_dir, "training_curves.png"))
    return markdown


def add_word_error_rates(report_dir: str, wer_summary: dict) -> str:
    """Adds word error rates (the decode step's ``wer.json`` summary) to an evaluation
    report: a ``test WER %`` column in ``results.md``'s table (models decoded under the same
    name) and a row per anchor system (its WER only), and a "Word error rate" section with
    S/D/I per model, the pocketsphinx anchor rows, per-voice WERs and the paired bootstraps;
    ``results.json`` gains ``word_error_rates``. Returns the new Markdown."""
    results_path = os.path.join(report_dir, "results.json")
    markdown_path = os.path.join(report_dir, "results.md")
    if not os.path.exists(results_path) or not os.path.exists(markdown_path):
        raise DataError(f"{report_dir} holds no evaluation report (results.json, results.md)")
    with open(results_path) as stream:
        results = json.load(stream)
    with open(markdown_path) as stream:
        lines = stream.read().splitlines()
    decoded = wer_summary["models"]
    rows = report_rows(results)
    for row in rows:
        if row["name"] in decoded:
            row["wer"] = decoded[row["name"]]["overall"]["wer"]
    rows += [  # the anchor's rows: WER only (the README's demo table is this table)
        {"name": name, "wer": anchor["overall"]["wer"]}
        for name, anchor in wer_summary.get("anchor", {}).items()
    ]
    table = markdown_table(rows, [*REPORT_COLUMNS, ("wer", "test WER %", "pct")]).splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    last = first
    while last < len(lines) and lines[last].startswith("|"):
        last += 1
    cut = next((i for i, line in enumerate(lines) if line == WER_HEADING), len(lines))
    lines = lines[:first] + table + lines[last:cut]
    results["word_error_rates"] = wer_summary
    write_json(results_path, results)
    markdown = "\n".join([*lines, "", *word_error_rate_lines(wer_summary)]) + "\n"
    temporary = os.path.join(report_dir, f".results.md.tmp-{os.getpid()}")
    with open(temporary, "w") as stream:
        stream.write(markdown)
    os.replace(temporary, markdown_path)
    return markdown


WER_HEADING = "## Word error rate"


def word_error_rate_lines(wer_summary: dict) -> list[str]:
    """The "Word error rate" section of the report, as Markdown lines."""
    graph = wer_summary["graph"]
    rows = []
    for name, entry in [*wer_summary["models"].items(), *wer_summary["anchor"].items()]:
        o = entry["overall"]
        rows.append({
            "name": name, "wer": o["wer"], "sub": o["sub"], "del": o["del"], "ins": o["ins"],
            "ref": o["ref"], "utts": o["utterances"],
            "scale": entry.get("acoustic_scale"), "rtf": entry.get("real_time_factor"),
            **{f"voice {v}": s["wer"] for v, s in entry.get("per_voice", {}).items()},
        })  # fmt: skip
    voices = sorted({k for row in rows for k in row if k.startswith("voice ")})
    columns = [
        ("name", "system", "str"), ("wer", "WER %", "pct"), ("sub", "sub", "num"),
        ("del", "del", "num"), ("ins", "ins", "num"), ("ref", "words", "num"),
        ("utts", "utterances", "num"), ("scale", "acoustic scale (dev)", "num"),
        ("rtf", "x real time", "num"), *[(v, f"{v[6:]} %", "pct") for v in voices],
    ]  # fmt: skip
    lines = [
        WER_HEADING,
        "",
        f"Split `{wer_summary['split']}`; graph: {graph['num_words']:,} words, bigram task LM, "
        f"{graph['sizes']['HCLG_states']:,} states, {graph['hclg_bytes'] / 1e6:.0f} MB. "
        "The acoustic scale of each model was chosen on dev. Test sentences are "
        "closed-vocabulary and unseen in training.",
        "",
        markdown_table(rows, columns),
    ]
    for other, b in wer_summary.get("bootstrap", {}).items():
        lines.append(
            f"- paired bootstrap over {b['utterances']} utterances: focus {b['wer_b']:.2%} vs "
            f"{other} {b['wer_a']:.2%}, P(focus better) = {b['p_b_better']:.3f}"
        )
    return lines
