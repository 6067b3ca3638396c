"""The study report's plots, with error bars over seeds (matplotlib, Agg backend, PNG files).

Values are the seed summaries of :func:`tfblend.study.statistics.mean_std` (``{"mean", "std",
...}``, fractions) or plain floats (one run, no error bar); the plots show percentages. Files are
written atomically (a temporary name, then a rename).
"""

import os

import numpy as np


def _mean_std(value) -> tuple[float, float]:
    if isinstance(value, dict):
        return value["mean"], value.get("std", 0.0)
    return float(value), 0.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str) -> None:
    plt = _pyplot()
    temporary = f"{path}.tmp-{os.getpid()}.png"
    try:
        figure.savefig(temporary, dpi=110)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        if os.path.exists(temporary):
            os.remove(temporary)


def plot_per_voice(
    results: dict, path: str, *, ylabel: str = "test frame accuracy, %", title: str = ""
) -> None:
    """Grouped bars: one group per held-out voice, one bar per model, error bars of one std.

    Args:
      results: model name -> voice -> a seed summary or float
        (:func:`tfblend.study.statistics.per_voice` gives this shape); every model must have the
        same voices.
      path: the PNG to write.
      ylabel, title: the axis label and the title.
    """
    if not results:
        raise ValueError("plot_per_voice: no models")
    voices = sorted(next(iter(results.values())))
    for name, by_voice in results.items():
        if sorted(by_voice) != voices:
            raise ValueError(f"plot_per_voice: {name} has voices {sorted(by_voice)}, not {voices}")
    plt = _pyplot()
    width = 0.8 / len(results)
    x = np.arange(len(voices))
    inches = min(14.0, max(6.5, 1.3 * len(voices) * (1 + len(results) / 4)))
    figure, axis = plt.subplots(figsize=(inches, 4.8))
    for i, (name, by_voice) in enumerate(results.items()):
        means, stds = zip(*(_mean_std(by_voice[v]) for v in voices), strict=True)
        axis.bar(
            x + (i - (len(results) - 1) / 2) * width,
            np.array(means) * 100,
            width,
            yerr=np.array(stds) * 100,
            capsize=2,
            label=name,
        )
    axis.set_xticks(x, voices, rotation=20, ha="right", fontsize=8)
    axis.set(ylabel=ylabel, title=title or "Held-out voices (error bars: one std over seeds)")
    axis.grid(alpha=0.3, axis="y")
    # Below the axes: inside, the legend hides the tallest bars.
    axis.legend(
        fontsize=8, ncol=min(len(results), 4), loc="upper center", bbox_to_anchor=(0.5, -0.22),
        frameon=False,
    )  # fmt: skip
    figure.tight_layout()
    _save(figure, path)


def plot_k_sweep(points: list, num_classes: int, path: str, baselines: dict | None = None) -> None:
    """The blended student's accuracy against k (log x axis), error bars of one std over seeds.

    Args:
      points: dicts with ``k`` (int) and ``accuracy`` (a seed summary or float).
      num_classes: K (the x axis is k as a percentage of K).
      path: the PNG to write.
      baselines: name -> a seed summary or float, drawn as a horizontal line with a band of one
        std (e.g. the CNN baseline and the teacher).
    """
    if not points:
        raise ValueError("plot_k_sweep: no points")
    plt = _pyplot()
    points = sorted(points, key=lambda p: p["k"])
    x = np.array([p["k"] / num_classes * 100 for p in points])
    means, stds = (
        np.array(v) * 100 for v in zip(*(_mean_std(p["accuracy"]) for p in points), strict=True)
    )
    figure, axis = plt.subplots(figsize=(6.5, 4))
    axis.errorbar(x, means, yerr=stds, marker="o", capsize=3, label="blended CNN")
    for i, (name, value) in enumerate((baselines or {}).items()):
        mean, std = (v * 100 for v in _mean_std(value))
        color = f"C{i + 1}"
        axis.axhline(mean, linestyle="--", linewidth=1, color=color, label=name)
        if std:
            axis.axhspan(mean - std, mean + std, color=color, alpha=0.12)
    axis.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    axis.set_xscale("log")
    axis.set(
        xlabel="k, % of the classes (log scale)",
        ylabel="test frame accuracy, %",
        title="Accuracy against the teacher targets kept\n(error bars: one std over seeds)",
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, path)
