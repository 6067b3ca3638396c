"""RESULTS.md of a study: corpus, training choices, tables, goals, findings, plots, compute.

:func:`write_results` reads ``study.json`` and the files it names (:mod:`tfblend.study.inputs`),
compares the blended CNN (role ``blend``) with every other model and judges the goals
(:mod:`tfblend.study.goals`), draws the per-voice and k-sweep plots (:mod:`tfblend.study.plots`)
and writes the Markdown. Every number in it comes from those files; every reading comes from an
interval. Roles missing from a partial study are reported as not run.
"""

import os
import shlex

from tfblend.evaluation.report import table_lines
from tfblend.study import goals as study_goals
from tfblend.study import plots as study_plots
from tfblend.study import statistics
from tfblend.study.compute import compute_lines
from tfblend.study.diagnosis import context_lines, learning_curve_lines
from tfblend.study.inputs import StudyData, read_study
from tfblend.study.reference import reference_lines

#: The per-voice tables leave the k sweep out; the plots show only the models of finding 2 (the
#: single models and the blend: a bar group per voice stays readable).
PER_VOICE_ROLES_LEFT_OUT = ("sweep",)
PER_VOICE_PLOT_ROLES = (*study_goals.SINGLE_ROLES, "blend")


def _pct(summary: dict | None, missing: str = "") -> str:
    """``38.12 ± 0.25`` (percent) from a seed summary; one seed shows no spread."""
    if summary is None:
        return missing
    text = f"{summary['mean'] * 100:.2f}"
    return text + (f" ± {summary['std'] * 100:.2f}" if summary["n"] > 1 else "")


def _link(path: str, output_md: str) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(output_md)))


def user_command(argv, cwd: str | None = None) -> str:
    """The study's command as a user types it, for ``study.json`` and RESULTS.md.

    ``python -m tfblend.study`` (whatever launched it: ``-m``, ``scripts/study.py``) and the
    arguments ``argv[1:]``, where every absolute path under ``cwd`` (default: the current
    directory), alone or as the value of ``--flag=PATH``, is made relative to ``cwd``; a path
    outside it stays as given. Arguments are shell-quoted where needed."""
    cwd = os.path.abspath(cwd or os.getcwd())

    def relative(value: str) -> str:
        if not os.path.isabs(value):
            return value
        path = os.path.normpath(value)
        if path != cwd and not path.startswith(cwd.rstrip(os.sep) + os.sep):
            return value
        return os.path.relpath(path, cwd)

    words = []
    for arg in argv[1:]:
        flag, equals, value = arg.partition("=")
        if equals and flag.startswith("-"):
            words.append(f"{flag}={relative(value)}")
        else:
            words.append(relative(arg))
    return " ".join(["python", "-m", "tfblend.study", *map(shlex.quote, words)])


def _corpus_lines(study: dict) -> list:
    corpus = study.get("corpus", {})
    rows = []
    for split in ("train", "dev", "test"):
        facts = corpus.get(split)
        if facts:
            rows.append([
                split, f"{facts['utterances']:,}", f"{facts['frames']:,}",
                f"{facts['hours']:.2f}", facts["voices"],
            ])  # fmt: skip
    seconds = corpus.get("build_seconds")
    built = "not recorded" if seconds is None else f"{seconds:,.0f} s ({seconds / 3600:.2f} h)"
    lines = ["## Corpus", ""]
    lines += table_lines(["split", "utterances", "frames", "hours", "voices"], rows)
    return [*lines, "", f"Build time: {built}.", ""]


def _training_lines(study: dict) -> list:
    epochs = study.get("epochs", {})
    lines = [
        "## What was trained",
        "",
        f"Size `{study.get('size', '?')}`; seeds asked: {_seeds_asked(study)}; epochs: teacher "
        f"{epochs.get('teacher', '?')}, students {epochs.get('student', '?')}; "
        f"{study.get('num_classes', '?')} classes. Command: `{study.get('command', '?')}`.",
        "",
        "Choices made on dev (dev frame accuracy of seed 0, never test):",
        "",
    ]
    for name, choice in study.get("choices", {}).items():
        grid = ", ".join(
            (f"**{setting}** {value * 100:.2f}%" if setting == choice["chosen"] else
             f"{setting} {value * 100:.2f}%")
            for setting, value in choice["grid"].items()
        )  # fmt: skip
        lines.append(f"- {name}: chose **{choice['chosen']}** (dev: {grid})")
    return [*lines, ""]


def _seeds_asked(study: dict) -> str:
    """The seeds asked per role, as the study's flags gave them (a study.json written before
    ``control_seeds`` and ``extra_seeds`` existed gave ``seeds`` to every student)."""
    seeds = study.get("seeds", "?")
    if "control_seeds" not in study:
        return f"{seeds} per student, {study.get('teacher_seeds', '?')} per teacher"
    return (
        f"{study.get('teacher_seeds', '?')} per teacher, {seeds} per CNN baseline and blended "
        f"CNN, {study['control_seeds']} per DNN baseline and smoothing control, "
        f"{study.get('extra_seeds', '?')} per k-sweep, sampled and ensemble-taught blend"
    )


def _model_lines(data: StudyData) -> list:
    rows = []
    for m in data.models:
        seeds = f"{m.scored_seeds}"
        if m.scored_seeds < m.asked_seeds:
            seeds += f" of {m.asked_seeds} asked (fewer seeds)"
        words = "not decoded" if m.words is None else f"{_pct(m.wer)} ({m.wer['n']} seeds)"
        rows.append([m.name, m.role, seeds, _pct(m.accuracy, "not scored"), words])
    lines = [
        "## Models",
        "",
        f"Test split: {len(data.utt_ids):,} utterances scored per frame; "
        f"{len(data.wer_utt_ids):,} decoded. Mean ± standard deviation over seeds.",
        "",
    ]
    return lines + table_lines(["model", "role", "seeds", "frame acc %", "WER %"], rows) + [""]


_LOWER = " (lower is better: a negative difference is the first model's gain)"


def _comparison_lines(data: StudyData, comparisons: dict) -> list:
    focus = data.focus
    lines = ["## The blended CNN against every other model", ""]
    if focus is None:
        return [*lines, "Not run: the study has no model with the role `blend`.", ""]
    lines += [
        f"Paired bootstrap over test utterances pooled over seeds ({statistics.BETTER} / "
        f"{statistics.WORSE}: the 95% interval of {focus.name} − model lies wholly on one side "
        "of 0), in percentage points.",
        "",
    ]
    for metric in study_goals.METRICS:
        found = comparisons.get(metric.label)
        lines.append(f"{metric.label}{'' if metric.higher_is_better else _LOWER}:")
        lines.append("")
        if not found:
            why = "no other model was" if getattr(focus, metric.counts) else f"{focus.name} was not"
            lines += [f"Not run: {why} {'decoded' if metric is study_goals.WER else 'scored'}.", ""]
            continue
        rows = []
        for name, c in found.items():
            rows.append([
                name, f"{c.a * 100:.2f}", f"{c.b * 100:.2f}", f"{c.difference * 100:+.2f}",
                f"[{c.low * 100:+.2f}, {c.high * 100:+.2f}]", c.verdict,
            ])  # fmt: skip
        header = ["model", f"{focus.name} %", "model %", "difference", "95% CI", "verdict"]
        lines += [*table_lines(header, rows), ""]
    return lines


GOAL_TITLES = {
    "G1": "the CNN baseline is at least as accurate as the teacher (finding 1)",
    "G2": "the blended CNN is better than every single model (finding 2)",
    "G3": "k = 1% keeps at least 95% of the largest k's gain over the CNN (finding 3)",
    "G4": "the blended CNN beats the label-smoothing control by at least 1 point",
    "G5": "sampled targets are at least as good as top-k at equal bytes",
    "G6": "a student blended from the teacher + CNN ensemble beats the ensemble",
}


def _goal_lines(data: StudyData, goals: list) -> list:
    lines = [
        "## Goals",
        "",
        "Each verdict comes from a 95% interval; differences are first − second model in "
        "percentage points (WER: lower is better, a negative difference is the first model's "
        "gain). Where a goal is missed, the dev grids above (what was tried for the student, "
        "the smoothing and alpha/T) and the learning curves below (how much of a gap is the "
        "training budget) are the first places to look.",
        "",
    ]
    for goal, title in GOAL_TITLES.items():
        lines.append(f"**{goal}**: {title}.")
        lines.append("")
        for g in (g for g in goals if g.goal == goal):
            lines.append(f"- {g.metric}: **{g.status}** — {g.evidence}.")
        if goal == "G5":
            lines.append(f"- bytes per frame: {_equal_bytes(data)}.")
        lines.append("")
    return lines


def _equal_bytes(data: StudyData) -> str:
    sizes = data.study.get("bytes_per_frame", {})
    blend = data.focus
    k = str(blend.entry.get("k")) if blend else None
    if "sampled" not in sizes or k not in sizes:
        return "not recorded"
    relation = "equal" if sizes["sampled"] == sizes[k] else "NOT equal"
    return f"sampled {_bytes(sizes['sampled'])}, top-{k} {_bytes(sizes[k])} ({relation})"


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _bytes(value) -> str:
    return "not recorded" if value is None else f"{value:,.1f}"


def _per_voice_lines(data: StudyData, output_md: str, figures_dir: str) -> list:
    lines = ["## Per voice", ""]
    models = [m for m in data.models if m.role not in PER_VOICE_ROLES_LEFT_OUT]
    for metric, speakers, file, label in (
        (study_goals.FRAME_ACCURACY, data.speakers, "per_voice_accuracy.png", "frame accuracy"),
        (study_goals.WER, data.wer_speakers, "per_voice_wer.png", "WER"),
    ):
        have = [m for m in models if getattr(m, metric.counts) is not None]
        if not have or not speakers:  # no WER, or no scored utterances to give the voices
            lines += [f"Test {label} per voice: not run (no model has it).", ""]
            continue
        results = {m.name: statistics.per_voice(speakers, *getattr(m, metric.counts)) for m in have}
        path = os.path.join(figures_dir, file)
        plotted = {m.name: results[m.name] for m in have if m.role in PER_VOICE_PLOT_ROLES}
        study_plots.plot_per_voice(
            plotted or results,
            path,
            ylabel=f"test {label}, %",
            title=f"Held-out voices: test {label}",
        )
        voices = sorted(next(iter(results.values())))
        rows = [[name, *(_pct(by_voice[v]) for v in voices)] for name, by_voice in results.items()]
        lines += [f"![test {label} per voice]({_link(path, output_md)})", ""]
        lines += [*table_lines([f"{label} %", *voices], rows), ""]
    return lines


def _sweep_lines(data: StudyData, output_md: str, figures_dir: str) -> list:
    lines = ["## Teacher targets kept (k)", ""]
    points = [
        m for m in data.models
        if m.role in ("sweep", "blend") and "k" in m.entry and m.frames is not None
    ]  # fmt: skip
    classes = data.study.get("num_classes")
    if not points or not classes:
        return [*lines, "Not run: no scored model with a k (or no num_classes).", ""]
    points.sort(key=lambda m: m.entry["k"])
    sizes = data.study.get("bytes_per_frame", {})
    baselines = {
        m.name: m.accuracy
        for m in (data.role("cnn"), data.role("teacher"))
        if m and m.frames is not None
    }
    path = os.path.join(figures_dir, "k_sweep.png")
    study_plots.plot_k_sweep(
        [{"k": m.entry["k"], "accuracy": m.accuracy} for m in points], classes, path, baselines
    )
    rows = [
        [
            m.entry["k"], f"{m.entry['k'] / classes * 100:.2f}",
            _bytes(sizes.get(str(m.entry["k"]))),
            f"{_pct(m.accuracy)} ({_seeds(m.accuracy['n'])})", m.name,
        ]
        for m in points
    ]  # fmt: skip
    lines += [f"![k sweep]({_link(path, output_md)})", ""]
    header = ["k", "% of K", "bytes/frame", "frame acc %", "model"]
    return lines + table_lines(header, rows) + [""]


def focus_comparisons(data: StudyData, *, num_resamples: int, seed: int) -> dict:
    """metric label -> name -> Comparison of the blend with every model that has the metric
    (empty when the blend lacks it)."""
    out = {}
    focus = data.focus
    for metric in study_goals.METRICS:
        if focus is None or getattr(focus, metric.counts) is None:
            continue
        others = [
            m for m in data.models if m is not focus and getattr(m, metric.counts) is not None
        ]
        if others:
            out[metric.label] = study_goals.compare(
                focus, others, metric, num_resamples=num_resamples, seed=seed
            )
    return out


def results_markdown(
    data: StudyData, output_md: str, figures_dir: str, *, num_resamples: int, seed: int
) -> str:
    """The Markdown of RESULTS.md (draws the PNGs into ``figures_dir`` on the way)."""
    comparisons = focus_comparisons(data, num_resamples=num_resamples, seed=seed)
    goals = study_goals.evaluate_goals(data, comparisons, num_resamples=num_resamples, seed=seed)
    lines = [
        "# Results of the study",
        "",
        "Written by the study command (`tfblend.study.results.write_results`) from "
        "`study.json` and the per-utterance scores and word errors it names; rewrite it with "
        "`python -m tfblend.steps.write_results`. Intervals: paired bootstrap over test "
        f"utterances, pooled over seeds, {num_resamples:,} resamples (seed {seed}), 95% "
        "percentile interval.",
        "",
        "## The paper's findings here",
        "",
        *study_goals.finding_lines(goals),
        "",
        *_corpus_lines(data.study),
        *_training_lines(data.study),
        *_model_lines(data),
        *_comparison_lines(data, comparisons),
        *_goal_lines(data, goals),
        *reference_lines(data),
        *_per_voice_lines(data, output_md, figures_dir),
        *_sweep_lines(data, output_md, figures_dir),
        *context_lines(data, num_resamples=num_resamples, seed=seed),
        *learning_curve_lines(data.study),
        *compute_lines(data.study),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_results(
    study_json: str,
    output_md: str,
    figures_dir: str,
    *,
    num_resamples: int = 10_000,
    seed: int = 0,
    study_dir: str | None = None,
) -> str:
    """Writes RESULTS.md and its PNGs from a finished (or partial) study.

    Args:
      study_json: ``<work_dir>/report/study.json`` (:mod:`tfblend.study.inputs`).
      output_md: the Markdown file to write (e.g. ``RESULTS.md``).
      figures_dir: where the PNGs go; the Markdown links them relative to ``output_md``'s
        folder.
      num_resamples, seed: the bootstrap's resamples (shared by every comparison).
      study_dir: what study.json's paths are relative to (default: the folder above its own,
        ``<study_dir>/report/study.json``).

    Returns:
      The Markdown. Raises :class:`tfblend.errors.DataError` naming the file for a missing or
      unreadable input; nothing is written then.
    """
    data = read_study(study_json, study_dir)
    os.makedirs(figures_dir, exist_ok=True)
    markdown = results_markdown(
        data, output_md, figures_dir, num_resamples=num_resamples, seed=seed
    )
    folder = os.path.dirname(os.path.abspath(output_md))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(output_md)}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w") as stream:
            stream.write(markdown)
        os.replace(temporary, output_md)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return markdown
