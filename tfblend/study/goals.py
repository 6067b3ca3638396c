"""The study's comparisons, its goals G1-G6 and the paper's three findings, from 95% intervals.

Every interval is a paired bootstrap over the test utterances pooled over seeds
(:func:`tfblend.study.statistics.compare_to_all`), all on the same resamples (one ``seed`` and
``num_resamples``: the resamples depend on nothing else). Two metrics: frame accuracy (correct
frames / frames, higher is better) and WER (word errors / reference words per decoded utterance,
lower is better). A goal's status is one of :data:`HOLDS`, :data:`FAILS`, :data:`UNCLEAR` or
:data:`NOT_RUN` (a role it needs is missing from the study, or was not decoded):

- G1 the CNN baseline is at least as accurate as the teacher: holds unless cnn - teacher lies
  wholly on the bad side of 0 (the paper's finding 1);
- G2 the blended CNN beats every single model (teacher, cnn, dnn, smoothing): holds only when it
  is better than all four, fails when it is worse than one (finding 2);
- G3 k = 1% (the blend) keeps at least 95% of the largest swept k's gain over the CNN baseline
  (:func:`tfblend.study.statistics.retained_gain`; frame accuracy): holds if the interval's low
  end is >= 0.95, fails if its high end is < 0.95 (finding 3); not distinguishable when the
  largest k's own gain over the CNN is not distinguishable from 0 (the share is then undefined);
- G4 the blend beats the label-smoothing control by at least 1 point: holds if the gain's
  interval lies above 0.01, fails if below;
- G5 sampled targets are at least as good as top-k at equal bytes (sampled - blend, as G1);
- G6 the student blended from the ensemble beats the ensemble (as G4 with no margin).
"""

import dataclasses

from tfblend.study import statistics

HOLDS, FAILS, UNCLEAR, NOT_RUN = "holds", "does not hold", "not distinguishable here", "not run"
SINGLE_ROLES = ("teacher", "cnn", "dnn", "smoothing")
G3_THRESHOLD = 0.95
G4_MARGIN = 0.01


@dataclasses.dataclass(frozen=True)
class Metric:
    """A metric: its label, the :class:`tfblend.study.inputs.ModelResults` attribute holding its
    ``(numerator [S, U], denominator [S, U])`` counts, and its direction."""

    label: str
    counts: str
    higher_is_better: bool


FRAME_ACCURACY = Metric("frame accuracy", "frames", True)
WER = Metric("WER", "words", False)
METRICS = (FRAME_ACCURACY, WER)


@dataclasses.dataclass(frozen=True)
class GoalResult:
    """One goal on one metric: ``status`` (module docstring) and ``evidence`` (Markdown: the
    intervals and verdicts the status comes from, or why it was not run)."""

    goal: str
    metric: str
    status: str
    evidence: str


def compare(focus, others, metric: Metric, *, num_resamples: int, seed: int) -> dict:
    """``focus`` against each of ``others`` (ModelResults with counts of ``metric``): name ->
    :class:`tfblend.study.statistics.Comparison` of ``focus - other``."""
    models = {focus.name: getattr(focus, metric.counts)}
    models.update({m.name: getattr(m, metric.counts) for m in others})
    return statistics.compare_to_all(
        focus.name,
        models,
        num_resamples=num_resamples,
        seed=seed,
        higher_is_better=metric.higher_is_better,
    )


def points(value: float) -> str:
    """A difference of fractions in signed percentage points: 0.0123 -> ``+1.23``."""
    return f"{value * 100:+.2f}"


def interval_text(c: statistics.Comparison) -> str:
    """``+1.23 points, 95% CI [+0.40, +2.05]`` (differences in percentage points)."""
    return (
        f"{points(c.difference)} points, {c.confidence:.0%} CI "
        f"[{points(c.low)}, {points(c.high)}]"
    )


def _gain(c: statistics.Comparison, metric: Metric) -> tuple[float, float]:
    """The interval of the first model's gain (positive = better, whatever the metric)."""
    return (c.low, c.high) if metric.higher_is_better else (-c.high, -c.low)


def _at_least(c, metric: Metric) -> str:
    return FAILS if _gain(c, metric)[1] < 0 else HOLDS


def _beats(c, metric: Metric, margin: float = 0.0) -> str:
    low, high = _gain(c, metric)
    if low > margin:
        return HOLDS
    if high < margin:
        return FAILS
    return UNCLEAR


def _missing(data, roles, metric: Metric) -> list:
    """The roles among ``roles`` with no model, or no counts of ``metric``."""
    out = []
    for role in roles:
        model = data.role(role)
        if model is None:
            out.append(f"no {role} model")
        elif getattr(model, metric.counts) is None:
            out.append(f"{model.name} " + ("not decoded" if metric is WER else "not scored"))
    return out


def _pair_goal(data, goal, first, second, metric, judge, options):
    """A goal on ``first - second`` (roles) judged by ``judge(comparison, metric)``."""
    missing = _missing(data, (first, second), metric)
    if missing:
        return GoalResult(goal, metric.label, NOT_RUN, "; ".join(missing))
    a, b = data.role(first), data.role(second)
    c = compare(a, [b], metric, **options)[b.name]
    status = judge(c, metric)
    text = f"{a.name} − {b.name}: {interval_text(c)}: {c.verdict}"
    return GoalResult(goal, metric.label, status, text)


def goal_g2(data, comparisons: dict, metric: Metric) -> GoalResult:
    """G2 from the focus comparisons (name -> Comparison of blend - name)."""
    missing = _missing(data, ("blend",), metric)
    if missing:
        return GoalResult("G2", metric.label, NOT_RUN, "; ".join(missing))
    parts, statuses = [], []
    for role in SINGLE_ROLES:
        gap = _missing(data, (role,), metric)
        if gap:
            parts.append(f"vs {role}: not run ({gap[0]})")
            statuses.append(NOT_RUN)
            continue
        c = comparisons[data.role(role).name]
        statuses.append(_beats(c, metric))
        parts.append(f"vs {data.role(role).name}: {interval_text(c)}: {c.verdict}")
    if FAILS in statuses:
        status = FAILS
    elif NOT_RUN in statuses:
        status = NOT_RUN
    elif all(s == HOLDS for s in statuses):
        status = HOLDS
    else:
        status = UNCLEAR
    return GoalResult("G2", metric.label, status, "; ".join(parts))


def goal_g3(data, *, num_resamples: int, seed: int) -> GoalResult:
    """G3 on frame accuracy: the blend's share of the largest swept k's gain over the CNN."""
    metric = FRAME_ACCURACY
    blend, cnn = data.role("blend"), data.role("cnn")
    sweep = [m for m in data.by_role("sweep") if m.frames is not None and "k" in m.entry]
    missing = _missing(data, ("blend", "cnn"), metric)
    if not missing and "k" not in blend.entry:
        missing.append(f"{blend.name} has no k in study.json")
    if not missing and not [m for m in sweep if m.entry["k"] > blend.entry["k"]]:
        missing.append(f"no scored sweep model with k above {blend.entry['k']}")
    if missing:
        return GoalResult("G3", metric.label, NOT_RUN, "; ".join(missing))
    large = max(sweep, key=lambda m: m.entry["k"])
    kept = statistics.retained_gain(
        blend.frames, large.frames, cnn.frames, num_resamples=num_resamples, seed=seed
    )
    if kept["gain"].verdict != statistics.BETTER:
        return GoalResult(
            "G3",
            metric.label,
            UNCLEAR,
            f"{large.name} (k = {large.entry['k']}) − {cnn.name}: {interval_text(kept['gain'])}: "
            "the largest k gains nothing distinguishable from 0 over the baseline, so the share "
            f"k = {blend.entry['k']} keeps of it is undefined here",
        )
    head = (
        f"{blend.name} (k = {blend.entry['k']}) keeps a fraction {kept['fraction']:.3f} of the "
        f"gain of {large.name} (k = {large.entry['k']}) over {cnn.name}"
    )
    text = f"{head}, {kept['confidence']:.0%} CI [{kept['low']:.3f}, {kept['high']:.3f}]"
    if kept["low"] >= G3_THRESHOLD:
        status = HOLDS
    elif kept["high"] < G3_THRESHOLD:
        status = FAILS
    else:
        status = UNCLEAR
    return GoalResult("G3", metric.label, status, f"{text} (needs ≥ {G3_THRESHOLD})")


def goal_g4(data, comparisons: dict, metric: Metric) -> GoalResult:
    missing = _missing(data, ("blend", "smoothing"), metric)
    if missing:
        return GoalResult("G4", metric.label, NOT_RUN, "; ".join(missing))
    name = data.role("smoothing").name
    c = comparisons[name]
    return GoalResult(
        "G4",
        metric.label,
        _beats(c, metric, G4_MARGIN),
        f"{data.focus.name} − {name}: {interval_text(c)} (needs a gain above "
        f"{G4_MARGIN * 100:g} point{'' if G4_MARGIN == 0.01 else 's'})",
    )


def evaluate_goals(data, focus_comparisons: dict, *, num_resamples: int, seed: int) -> list:
    """Every goal on every metric it applies to (G3: frame accuracy only, the sweep is scored
    per frame), as :class:`GoalResult` in order G1, G2, ... G6.

    Args:
      data: :class:`tfblend.study.inputs.StudyData`.
      focus_comparisons: metric label -> name -> Comparison of the blend against every model
        with counts of that metric (:func:`compare`, same ``num_resamples``/``seed``).
    """
    options = {"num_resamples": num_resamples, "seed": seed}
    results = []
    for metric in METRICS:
        results.append(_pair_goal(data, "G1", "cnn", "teacher", metric, _at_least, options))
    for metric in METRICS:
        results.append(goal_g2(data, focus_comparisons.get(metric.label, {}), metric))
    results.append(goal_g3(data, **options))
    for metric in METRICS:
        results.append(goal_g4(data, focus_comparisons.get(metric.label, {}), metric))
    for metric in METRICS:
        results.append(_pair_goal(data, "G5", "sampled", "blend", metric, _at_least, options))
    for metric in METRICS:
        results.append(
            _pair_goal(data, "G6", "ensemble_blend", "ensemble", metric, _beats, options)
        )
    return results


def combine(statuses: list) -> str:
    """One status from several metrics' statuses: not run if none ran; does not hold if one
    fails; holds if every metric that ran holds; else not distinguishable here."""
    ran = [s for s in statuses if s != NOT_RUN]
    if not ran:
        return NOT_RUN
    if FAILS in ran:
        return FAILS
    if all(s == HOLDS for s in ran):
        return HOLDS
    return UNCLEAR


#: The paper's findings and the goal each is read from.
FINDINGS = (
    ("1", "a CNN can be as accurate as the LSTM it learns from", "G1"),
    ("2", "blending the LSTM into the CNN gives a CNN better than every single model", "G2"),
    ("3", "k = 1% of the teacher's outputs keeps at least 95% of the gain of a larger k", "G3"),
)


def finding_lines(goals: list) -> list:
    """One Markdown line per paper finding: its status (from its goal's statuses) and what the
    status rests on."""
    lines = []
    for number, claim, goal in FINDINGS:
        mine = [g for g in goals if g.goal == goal]
        parts = ", ".join(f"{g.metric} {g.status}" for g in mine)
        status = combine([g.status for g in mine])
        lines.append(f"- Finding {number} ({claim}): **{status}** ({goal}: {parts}).")
    return lines
