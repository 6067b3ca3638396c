"""Statistics of a study: spreads over seeds and paired bootstrap comparisons over utterances.

A study trains every model with several seeds and scores them all on the same held-out test
utterances. Two sources of noise bear on a comparison: the seed (training noise) and the choice
of test utterances (sampling noise). This module measures both:

- :func:`mean_std`: mean and sample standard deviation (``ddof=1``) of a metric over seeds;
- :func:`bootstrap_ratios` / :func:`paired_bootstrap`: a paired bootstrap over test utterances,
  pooled over seeds. Each resample draws utterance indices with replacement, the *same* indices
  for both models and for every seed, so what the two models share (hard utterances, a voice
  that suits both) cancels in the difference. A metric is a ratio of sums over the resampled
  utterances and all seeds, never a mean of per-utterance ratios: frame accuracy is
  ``sum(correct frames) / sum(frames)``, WER is ``sum(errors) / sum(reference words)``.

Inputs are per-utterance counts: ``numerator`` and ``denominator`` arrays ``[S, U]`` (seeds x
utterances, in one fixed utterance order shared by every model; a 1-D ``[U]`` array is one seed).
Models may have different seed counts (a teacher with 2 seeds against a student with 3): each is
pooled over its own seeds; the utterance resample is shared.

The verdict of a comparison comes from its 95% percentile interval of the difference ``a - b``:
``"better"`` when the whole interval lies on the good side of ``margin`` (above it for accuracy,
below ``-margin`` for WER), ``"worse"`` when it lies wholly on the bad side of zero, and
``"not distinguishable"`` otherwise.
"""

import dataclasses

import numpy as np

BETTER, WORSE, TIE = "better", "worse", "not distinguishable"


def mean_std(values) -> dict:
    """Mean and sample standard deviation over seeds.

    Args:
      values: a metric per seed, float ``[S]``.

    Returns:
      ``{"mean", "std", "values", "n"}``; ``std`` is 0.0 for a single seed (not measured: check
      ``n``).
    """
    array = np.asarray(values, np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError("mean_std needs at least one value")
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
        "values": array.tolist(),
        "n": int(array.size),
    }


def _counts(numerator, denominator, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-utterance sums over seeds, float64 ``[U]`` each, after checking shapes."""
    num = np.asarray(numerator, np.float64)
    den = np.asarray(denominator, np.float64)
    if num.ndim == 1:
        num = num[None]
    if den.ndim == 1:
        den = den[None]
    if num.ndim != 2 or num.shape != den.shape:
        raise ValueError(
            f"{name}: numerator {num.shape} and denominator {den.shape} must both be [seeds, "
            "utterances]"
        )
    if (den < 0).any() or (num < 0).any():
        raise ValueError(f"{name}: counts must be non-negative")
    if den.sum() <= 0:
        raise ValueError(f"{name}: the denominators sum to zero")
    return num.sum(axis=0), den.sum(axis=0)


def resample_weights(num_utterances: int, num_resamples: int, seed: int) -> np.ndarray:
    """How often each utterance is drawn in each resample.

    Returns:
      int32 ``[R, U]``, every row summing to ``U``: row ``r`` is the multiplicity of each
      utterance in resample ``r`` (draws with replacement). A pure function of the arguments.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_utterances, size=(num_resamples, num_utterances))
    flat = draws + (np.arange(num_resamples) * num_utterances)[:, None]
    counts = np.bincount(flat.ravel(), minlength=num_resamples * num_utterances)
    return counts.reshape(num_resamples, num_utterances).astype(np.int32)


def bootstrap_ratios(
    models: dict, *, num_resamples: int = 10_000, seed: int = 0
) -> tuple[dict, dict]:
    """Pooled ratios of several models on the same resamples of the test utterances.

    Args:
      models: name -> ``(numerator [S, U], denominator [S, U])`` (module docstring); every model
        must have the same ``U``, in the same utterance order.
      num_resamples: R.
      seed: the resamples are a pure function of it (and of ``U``, ``R``).

    Returns:
      ``(observed, resampled)``: name -> the ratio on the data as it is (float), and name ->
      float64 ``[R]`` the ratio on each resample.
    """
    pooled = {name: _counts(num, den, name) for name, (num, den) in models.items()}
    sizes = {name: num.shape[0] for name, (num, _) in pooled.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the models are scored on different numbers of utterances: {sizes}")
    weights = resample_weights(next(iter(sizes.values())), num_resamples, seed)
    names = list(pooled)
    numerators = np.stack([pooled[n][0] for n in names], axis=1)  # [U, M]
    denominators = np.stack([pooled[n][1] for n in names], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = (weights @ numerators) / (weights @ denominators)  # [R, M]
    observed = {
        n: float(numerators[:, i].sum() / denominators[:, i].sum()) for i, n in enumerate(names)
    }
    return observed, {n: ratios[:, i] for i, n in enumerate(names)}


def verdict(low: float, high: float, *, higher_is_better: bool = True, margin: float = 0.0) -> str:
    """better / worse / not distinguishable from an interval of ``a - b``.

    ``margin`` (in the metric's units, >= 0) raises the bar for "better": accuracy must gain at
    least ``margin`` (``low > margin``), WER must fall by at least ``margin``.
    """
    if not higher_is_better:
        low, high = -high, -low
    if low > margin:
        return BETTER
    if high < 0:
        return WORSE
    return TIE


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A paired comparison of model ``a`` with model ``b`` (differences are ``a - b``).

    Attributes:
      difference: the observed difference of the pooled ratios (for models scored on the same
        utterances, the mean over seeds of the paired per-seed differences).
      low, high: the percentile interval of the resampled differences.
      confidence: its level (0.95).
      verdict: :func:`verdict` of the interval.
      a, b: the observed pooled ratios.
      num_resamples: R.
    """

    difference: float
    low: float
    high: float
    confidence: float
    verdict: str
    a: float
    b: float
    num_resamples: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central percentile interval of bootstrap samples (NaNs, from empty resamples, left
    out)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap(
    a: tuple,
    b: tuple,
    *,
    num_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    higher_is_better: bool = True,
    margin: float = 0.0,
) -> Comparison:
    """Paired bootstrap of ``a - b`` over test utterances, pooled over seeds.

    Args:
      a, b: ``(numerator [S, U], denominator [S, U])`` per model, e.g. (correct frames, frames)
        or (word errors, reference words); ``S`` may differ, ``U`` (and the order) may not.
      num_resamples, seed: the resamples (deterministic from ``seed``).
      confidence: the interval's level.
      higher_is_better: True for accuracy, False for WER.
      margin: the smallest gain that counts as "better" (see :func:`verdict`).

    Returns:
      A :class:`Comparison`.
    """
    return compare_to_all(
        "a",
        {"a": a, "b": b},
        num_resamples=num_resamples,
        seed=seed,
        confidence=confidence,
        higher_is_better=higher_is_better,
        margins={"b": margin},
    )["b"]


def compare_to_all(
    focus: str,
    models: dict,
    *,
    num_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    higher_is_better: bool = True,
    margins: dict | None = None,
) -> dict:
    """:func:`paired_bootstrap` of ``focus`` against every other model, on one set of resamples.

    Args:
      focus: the model compared (e.g. the blended CNN).
      models: name -> ``(numerator [S, U], denominator [S, U])``, ``focus`` among them.
      margins: name -> the margin its comparison needs (see :func:`verdict`; default 0).
      num_resamples, seed, confidence, higher_is_better: as :func:`paired_bootstrap`.

    Returns:
      name -> :class:`Comparison` of ``focus - name``, for every other model, in order.
    """
    if focus not in models:
        raise ValueError(f"{focus!r} is not one of the models {list(models)}")
    observed, resampled = bootstrap_ratios(models, num_resamples=num_resamples, seed=seed)
    return {
        name: _compare(
            focus,
            name,
            observed,
            resampled,
            confidence=confidence,
            higher_is_better=higher_is_better,
            margin=(margins or {}).get(name, 0.0),
        )
        for name in models
        if name != focus
    }


def _compare(
    a: str,
    b: str,
    observed: dict,
    resampled: dict,
    *,
    confidence: float,
    higher_is_better: bool = True,
    margin: float = 0.0,
) -> Comparison:
    """The :class:`Comparison` of ``a - b`` from :func:`bootstrap_ratios`' two dicts."""
    low, high = interval(resampled[a] - resampled[b], confidence)
    return Comparison(
        difference=observed[a] - observed[b],
        low=low,
        high=high,
        confidence=confidence,
        verdict=verdict(low, high, higher_is_better=higher_is_better, margin=margin),
        a=observed[a],
        b=observed[b],
        num_resamples=len(resampled[a]),
    )


def retained_gain(
    small: tuple,
    large: tuple,
    base: tuple,
    *,
    num_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """How much of the gain of ``large`` over ``base`` ``small`` keeps: ``(s - b) / (l - b)``.

    The paper's finding 3 (k = 1% keeps most of the gain of a larger k). All three models are
    resampled on the same utterances. The share is only defined where ``large`` gains: read
    ``fraction`` and its interval only when ``gain`` is better (its interval above 0; then under
    ``(1 - confidence) / 2`` of the resamples lack a gain and are left out as NaN); where
    ``large`` does not gain at all, ``fraction`` is NaN.

    Returns:
      ``{"fraction", "low", "high", "confidence", "gain"}``: the observed share and its
      percentile interval, and ``gain``, the :class:`Comparison` of ``large - base`` on the same
      resamples.
    """
    observed, resampled = bootstrap_ratios(
        {"small": small, "large": large, "base": base}, num_resamples=num_resamples, seed=seed
    )
    gain = _compare("large", "base", observed, resampled, confidence=confidence)
    resampled_gain = resampled["large"] - resampled["base"]
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(
            resampled_gain > 0, (resampled["small"] - resampled["base"]) / resampled_gain, np.nan
        )
    low, high = interval(fractions, confidence) if np.isfinite(fractions).any() else (np.nan,) * 2
    kept = observed["small"] - observed["base"]
    return {
        "fraction": kept / gain.difference if gain.difference > 0 else float("nan"),
        "low": low,
        "high": high,
        "confidence": confidence,
        "gain": gain,
    }


def per_voice(speakers, numerator, denominator) -> dict:
    """A pooled ratio per voice, summarised over seeds.

    Args:
      speakers: ``[U]`` the voice of each utterance.
      numerator, denominator: ``[S, U]`` (or ``[U]``) counts, e.g. correct frames and frames.

    Returns:
      voice -> :func:`mean_std` of the voice's ratio over the seeds, voices sorted.
    """
    num = np.atleast_2d(np.asarray(numerator, np.float64))
    den = np.atleast_2d(np.asarray(denominator, np.float64))
    speakers = np.asarray(speakers)
    if num.shape != den.shape or num.shape[1] != speakers.shape[0]:
        raise ValueError(
            f"per_voice: {speakers.shape[0]} speakers for counts {num.shape} / {den.shape}"
        )
    out = {}
    for voice in sorted(set(speakers.tolist())):
        mine = speakers == voice
        out[voice] = mean_std(num[:, mine].sum(axis=1) / den[:, mine].sum(axis=1))
    return out
