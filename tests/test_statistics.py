"""Seed spreads, the paired bootstrap over utterances, per-utterance scoring and the study plots.

The bootstrap is tested on real labels of the tiny corpus: "models" that predict a frame's senone
from its neighbour (the label ``d`` frames earlier, right wherever the senone has not changed) make
real per-utterance accuracies, and a known difference between them comes from the alignments
themselves.
"""

import json
import os

import numpy as np
import pytest

from tfblend.errors import DataError
from tfblend.evaluation.utterances import UtteranceCounts, score_model_dirs, stack_seeds
from tfblend.records import iterate_utterances
from tfblend.study import statistics
from tfblend.study.plots import plot_k_sweep, plot_per_voice


@pytest.fixture(scope="module")
def utterances(tiny_corpus):
    """Every labelled utterance of the tiny corpus (all splits): (speaker, labels int [T])."""
    return [
        (u.speaker, np.asarray(u.labels))
        for split in ("train", "dev", "test")
        for u in iterate_utterances(tiny_corpus / split)
    ]


def _delayed(utterances, delay, seeds, noise, seed):
    """Per-utterance (correct [S, U], frames [S, U]) of a model predicting label[t - delay],
    with a fraction ``noise`` of its frames replaced by a wrong class, independently per seed."""
    rng = np.random.default_rng(seed)
    correct = np.zeros((seeds, len(utterances)), np.int64)
    frames = np.zeros_like(correct)
    for u, (_, labels) in enumerate(utterances):
        predicted = np.concatenate([labels[:delay], labels[:-delay]]) if delay else labels
        hits = predicted == labels
        for s in range(seeds):
            spoilt = rng.random(len(labels)) < noise
            correct[s, u] = int((hits & ~spoilt).sum())
            frames[s, u] = len(labels)
    return correct, frames


def test_mean_std_is_the_sample_spread():
    summary = statistics.mean_std([0.30, 0.32, 0.34])
    assert summary["mean"] == pytest.approx(0.32)
    assert summary["std"] == pytest.approx(0.02)  # ddof = 1
    assert summary["n"] == 3
    assert statistics.mean_std([0.5])["std"] == 0.0


def test_ratio_of_sums_not_mean_of_ratios():
    correct = np.array([[1, 0]])
    frames = np.array([[1, 99]])
    observed, resampled = statistics.bootstrap_ratios(
        {"m": (correct, frames)}, num_resamples=200, seed=0
    )
    assert observed["m"] == pytest.approx(0.01)  # a mean of ratios would say 0.5
    weights = statistics.resample_weights(7, 50, seed=3)
    assert weights.shape == (50, 7) and (weights.sum(axis=1) == 7).all()
    assert resampled["m"].shape == (200,)


def test_known_difference_is_found(utterances):
    one = _delayed(utterances, 1, seeds=3, noise=0.1, seed=0)
    two = _delayed(utterances, 2, seeds=3, noise=0.1, seed=1)
    truth = one[0].sum() / one[1].sum() - two[0].sum() / two[1].sum()
    assert truth > 0.02  # a senone often lasts one frame more than... one frame
    result = statistics.paired_bootstrap(one, two, num_resamples=10_000, seed=0)
    assert result.difference == pytest.approx(truth)
    assert result.low > 0 and result.low < truth < result.high
    assert result.verdict == "better"
    backwards = statistics.paired_bootstrap(two, one, num_resamples=10_000, seed=0)
    assert backwards.verdict == "worse"
    assert backwards.difference == pytest.approx(-truth)
    # The same counts read as errors (lower is better) flip the verdict.
    errors = [(f - c, f) for c, f in (one, two)]
    as_wer = statistics.paired_bootstrap(*errors, higher_is_better=False, seed=0)
    assert as_wer.verdict == "better"
    # A margin larger than the gap is not met.
    assert (
        statistics.paired_bootstrap(one, two, seed=0, margin=result.high + 0.01).verdict
        == "not distinguishable"
    )


def test_null_difference_is_not_distinguishable(utterances):
    # Two draws of the same model's noise: at a 95% level about 1 pair in 20 is called different.
    verdicts = [
        statistics.paired_bootstrap(
            _delayed(utterances, 1, seeds=3, noise=0.1, seed=draw),
            _delayed(utterances, 1, seeds=3, noise=0.1, seed=100 + draw),
            seed=draw,
        ).verdict
        for draw in range(20)
    ]
    assert verdicts.count("not distinguishable") >= 17
    a = _delayed(utterances, 1, seeds=3, noise=0.1, seed=0)
    itself = statistics.paired_bootstrap(a, a, seed=0)
    assert itself.difference == 0 and itself.low == itself.high == 0
    assert itself.verdict == "not distinguishable"
    # Different seed counts pool each model over its own seeds.
    b = _delayed(utterances, 1, seeds=3, noise=0.1, seed=100)
    fewer = (b[0][:2], b[1][:2])
    assert statistics.paired_bootstrap(a, fewer, seed=0).verdict == "not distinguishable"


def test_bootstrap_is_deterministic_and_paired(utterances):
    a = _delayed(utterances, 1, seeds=3, noise=0.1, seed=0)
    b = _delayed(utterances, 1, seeds=3, noise=0.15, seed=1)
    first = statistics.paired_bootstrap(a, b, seed=5)
    assert first == statistics.paired_bootstrap(a, b, seed=5)
    assert first != statistics.paired_bootstrap(a, b, seed=6)
    # Pairing: both models share the utterances' difficulty, so the paired interval is much
    # narrower than one from independent resamples of each model.
    _, paired = statistics.bootstrap_ratios({"a": a, "b": b}, num_resamples=4000, seed=0)
    _, only_a = statistics.bootstrap_ratios({"a": a}, num_resamples=4000, seed=1)
    _, only_b = statistics.bootstrap_ratios({"b": b}, num_resamples=4000, seed=2)
    paired_width = np.subtract(*statistics.interval(paired["a"] - paired["b"])[::-1])
    unpaired_width = np.subtract(*statistics.interval(only_a["a"] - only_b["b"])[::-1])
    assert paired_width < 0.6 * unpaired_width


def test_interval_coverage_is_sane(utterances):
    """Test sets of 60 utterances drawn from a population built on the corpus's real lengths:
    the 95% interval of the difference covers the population's difference about 95% of the time."""
    rng = np.random.default_rng(0)
    lengths = np.array([len(labels) for _, labels in utterances])
    population = 5000
    frames = rng.choice(lengths, population)
    skill = rng.beta(4, 6, population)  # per-utterance difficulty shared by both models
    a_correct = rng.binomial(frames, np.clip(skill + 0.03, 0, 1))
    b_correct = rng.binomial(frames, skill)
    truth = (a_correct.sum() - b_correct.sum()) / frames.sum()
    covered, trials = 0, 200
    for trial in range(trials):
        pick = rng.integers(0, population, 60)
        result = statistics.paired_bootstrap(
            (a_correct[pick], frames[pick]),
            (b_correct[pick], frames[pick]),
            num_resamples=1000,
            seed=trial,
        )
        covered += result.low <= truth <= result.high
    assert 0.88 <= covered / trials <= 0.99


def test_retained_gain(utterances):
    base = _delayed(utterances, 2, seeds=2, noise=0.1, seed=0)
    large = _delayed(utterances, 1, seeds=2, noise=0.1, seed=1)
    # "small" keeps 96% of every utterance's gain.
    small = (base[0] + np.round(0.96 * (large[0] - base[0])).astype(np.int64), base[1])
    result = statistics.retained_gain(small, large, base, num_resamples=2000, seed=0)
    assert result["fraction"] == pytest.approx(0.96, abs=0.01)
    assert result["low"] <= result["fraction"] <= result["high"]
    assert result["high"] - result["low"] < 0.05
    assert result["gain"].verdict == "better"


def test_retained_gain_without_a_gain_has_no_share(utterances):
    # "large" is "base" again with other noise: its gain over base straddles 0 on the resamples,
    # where a share of it would be a ratio of noise (once reported as -1.14 with an interval of
    # [0.18, 47.0] from the resamples that happened to gain).
    base = _delayed(utterances, 2, seeds=2, noise=0.1, seed=0)
    large = _delayed(utterances, 2, seeds=2, noise=0.1, seed=7)
    small = _delayed(utterances, 1, seeds=2, noise=0.1, seed=1)
    result = statistics.retained_gain(small, large, base, num_resamples=2000, seed=0)
    gain = result["gain"]
    assert gain.low < 0 < gain.high and gain.verdict == "not distinguishable"
    assert gain.low <= gain.difference <= gain.high
    # A loss on every resample (the label three frames back against two): no share at all.
    worse = _delayed(utterances, 3, seeds=2, noise=0.1, seed=7)
    result = statistics.retained_gain(small, worse, base, num_resamples=2000, seed=0)
    assert result["gain"].verdict == "worse"
    assert np.isnan(result["fraction"]) and np.isnan(result["low"]) and np.isnan(result["high"])


def test_compare_to_all_shares_the_resamples(utterances):
    one = _delayed(utterances, 1, seeds=3, noise=0.1, seed=0)
    two = _delayed(utterances, 2, seeds=3, noise=0.1, seed=1)
    same = _delayed(utterances, 1, seeds=2, noise=0.1, seed=2)
    models = {"blend": one, "cnn": two, "twin": same}
    result = statistics.compare_to_all("blend", models, num_resamples=3000, seed=4)
    assert list(result) == ["cnn", "twin"]
    alone = statistics.paired_bootstrap(one, two, num_resamples=3000, seed=4)
    assert result["cnn"].difference == pytest.approx(alone.difference)
    assert result["cnn"].verdict == "better"
    huge = statistics.compare_to_all("blend", models, num_resamples=3000, margins={"cnn": 0.5})
    assert huge["cnn"].verdict == "not distinguishable"
    with pytest.raises(ValueError, match="not one of"):
        statistics.compare_to_all("teacher", models)


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="must both be"):
        statistics.paired_bootstrap((np.ones((2, 3)), np.ones((2, 4))), (np.ones(3), np.ones(3)))
    with pytest.raises(ValueError, match="different numbers of utterances"):
        statistics.paired_bootstrap((np.ones(3), np.ones(3)), (np.ones(4), np.ones(4)))


def test_per_voice_and_plots(tmp_path, utterances):
    speakers = [speaker for speaker, _ in utterances]
    one = _delayed(utterances, 1, seeds=3, noise=0.1, seed=0)
    two = _delayed(utterances, 2, seeds=3, noise=0.1, seed=1)
    voices = statistics.per_voice(speakers, *one)
    assert sorted(voices) == sorted(set(speakers))
    mine = np.array(speakers) == speakers[0]
    expected = one[0][:, mine].sum(axis=1) / one[1][:, mine].sum(axis=1)
    assert voices[speakers[0]]["mean"] == pytest.approx(expected.mean())
    path = str(tmp_path / "voices.png")
    plot_per_voice({"delay 1": voices, "delay 2": statistics.per_voice(speakers, *two)}, path)
    sweep = str(tmp_path / "sweep.png")
    plot_k_sweep(
        [{"k": 1, "accuracy": statistics.mean_std([0.30, 0.31])}, {"k": 51, "accuracy": 0.35}],
        5126,
        sweep,
        baselines={"CNN": statistics.mean_std([0.3, 0.32])},
    )
    for written in (path, sweep):
        with open(written, "rb") as stream:
            assert stream.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]
    with pytest.raises(ValueError, match="voices"):
        plot_per_voice({"a": voices, "b": {"x": 0.1}}, path)


def test_per_utterance_counts_add_up_to_evaluate(tiny_corpus, tiny_student):
    from tfblend.evaluation import evaluate, window_scorer
    from tfblend.train.modeldir import load_model_dir

    counts = score_model_dirs(
        str(tiny_corpus), "test", {"cnn": [tiny_student, tiny_student]}, {"ens": ["cnn", "cnn"]}
    )
    assert len(counts["cnn"]) == 2 and len(counts["ens"]) == 2
    correct, frames = stack_seeds(counts["cnn"])
    assert correct.shape == frames.shape == (2, len(counts["cnn"][0].utt_ids))
    model, info = load_model_dir(tiny_student)
    reference = evaluate(
        str(tiny_corpus / "test"),
        {"cnn": window_scorer(model, info["context"])},
        cmvn=info["cmvn"],
        cmvn_stats=str(tiny_corpus / "train"),
    )["cnn"]
    run = counts["cnn"][0]
    assert int(run.frames.sum()) == reference["frames"]
    assert run.accuracy == pytest.approx(reference["accuracy"])
    by_voice = statistics.per_voice(run.speakers, run.correct, run.frames)
    for voice, accuracy in reference["per_speaker"].items():
        assert by_voice[voice]["mean"] == pytest.approx(accuracy)
    assert (counts["ens"][0].correct == run.correct).all()  # an ensemble of a model with itself
    again = UtteranceCounts.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again.utt_ids == run.utt_ids and (again.correct == run.correct).all()
    with pytest.raises(DataError, match="different lengths"):
        UtteranceCounts.from_dict({**run.to_dict(), "frames": run.frames.tolist()[1:]})
