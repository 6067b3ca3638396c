"""Frame-level evaluation of acoustic models and ensembles (the report is :mod:`.report`).

Metrics, over every frame of a labelled set (normally the held-out-voice ``test`` split):

- ``accuracy``: the senone with the highest posterior is the aligned one;
- ``accuracy_speech``: the same over frames whose aligned phone is not silence or a filler;
- ``top5``: the aligned senone is among the five most probable;
- ``cross_entropy``: mean ``-log p(aligned senone)`` (nats);
- ``phone_accuracy``: the base phone of the predicted senone (through the senone -> phone map of
  the acoustic model's mdef) is the aligned phone (many "errors" are the right phone in the wrong
  context-dependent state);
- ``per_speaker``: accuracy per voice.

Every model is scored by a *scorer* (:mod:`tfblend.evaluation.scorers`): one normalised utterance
-> log-posteriors ``[T, K]``; an ensemble averages the posteriors (not the log-posteriors) of its
members, as in the paper.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from tfblend.errors import DataError
from tfblend.evaluation.scorers import ensemble_log_probs, sequence_scorer, window_scorer
from tfblend.pipeline import eval_utterances

TOP_N = 5


@dataclasses.dataclass
class FrameMetrics:
    """Running sums of the module's metrics for one model."""

    frames: int = 0
    correct: int = 0
    speech_frames: int = 0
    speech_correct: int = 0
    top_n_correct: int = 0
    neg_log_prob: float = 0.0
    phone_correct: int = 0
    speaker_frames: dict = dataclasses.field(default_factory=dict)
    speaker_correct: dict = dataclasses.field(default_factory=dict)

    def update(self, log_probs, labels, speech, phones, senone_to_phone, speaker) -> None:
        """Adds one utterance.

        Args:
          log_probs: float32 ``[T, K]``.
          labels: int ``[T]`` aligned senones.
          speech: bool ``[T]``, frames whose aligned phone is speech.
          phones: int ``[T]`` aligned base phones, or None.
          senone_to_phone: int ``[K]``, or None.
          speaker: the utterance's speaker.
        """
        predicted = np.argmax(log_probs, axis=1)
        hits = predicted == labels
        rows = np.arange(len(labels))
        label_log_probs = log_probs[rows, labels]
        # Rank of the label: how many classes score strictly higher.
        better = (log_probs > label_log_probs[:, None]).sum(axis=1)
        self.frames += len(labels)
        self.correct += int(hits.sum())
        self.speech_frames += int(speech.sum())
        self.speech_correct += int(hits[speech].sum())
        self.top_n_correct += int((better < TOP_N).sum())
        self.neg_log_prob += float(-label_log_probs.astype(np.float64).sum())
        if phones is not None and senone_to_phone is not None:
            self.phone_correct += int((senone_to_phone[predicted] == phones).sum())
        self.speaker_frames[speaker] = self.speaker_frames.get(speaker, 0) + len(labels)
        self.speaker_correct[speaker] = self.speaker_correct.get(speaker, 0) + int(hits.sum())

    def result(self, with_phones: bool) -> dict:
        """The metrics as fractions (and nats for ``cross_entropy``)."""
        frames = max(self.frames, 1)
        out = {
            "frames": self.frames,
            "accuracy": self.correct / frames,
            "accuracy_speech": self.speech_correct / max(self.speech_frames, 1),
            "top5": self.top_n_correct / frames,
            "cross_entropy": self.neg_log_prob / frames,
            "per_speaker": {
                speaker: self.speaker_correct[speaker] / count
                for speaker, count in sorted(self.speaker_frames.items())
            },
        }
        if with_phones:
            out["phone_accuracy"] = self.phone_correct / frames
        return out


def evaluate(
    test_dir: str,
    scorers: dict,
    *,
    cmvn: str,
    cmvn_stats,
    ensembles: dict | None = None,
    senone_to_phone: np.ndarray | None = None,
    silence_phones=(),
) -> dict:
    """Scores every model (and ensemble) on every frame of ``test_dir``.

    Args:
      test_dir: a labelled utterance set.
      scorers: name -> ``fn(features float32 [T, D]) -> log-probs float32 [T, K]``.
      cmvn, cmvn_stats: the normalisation every scorer expects (see :mod:`tfblend.pipeline`).
      ensembles: name -> member names; posteriors are averaged.
      senone_to_phone: int ``[K]`` map for ``phone_accuracy`` (with phone labels in the set).
      silence_phones: phone ids that are not speech (silence, fillers).

    Returns:
      name -> the metrics of :meth:`FrameMetrics.result`.
    """
    ensembles = ensembles or {}
    for name, members in ensembles.items():
        unknown = [m for m in members if m not in scorers]
        if unknown:
            raise DataError(f"ensemble {name} names unknown models {unknown}")
    metrics = {name: FrameMetrics() for name in [*scorers, *ensembles]}
    with_phones = senone_to_phone is not None
    silence = np.asarray(sorted(silence_phones), np.int64)
    for utterance in eval_utterances(test_dir, cmvn=cmvn, cmvn_stats=cmvn_stats):
        if "labels" not in utterance:
            raise DataError(f"{test_dir} has no frame labels to evaluate against")
        labels = utterance["labels"].numpy()
        phones = utterance["phones"].numpy() if "phones" in utterance else None
        with_phones = with_phones and phones is not None
        speech = ~np.isin(phones, silence) if phones is not None else np.ones(len(labels), bool)
        speaker = utterance["speaker"].numpy().decode()
        features = utterance["features"]
        outputs = {name: scorer(features) for name, scorer in scorers.items()}
        for name, members in ensembles.items():
            outputs[name] = ensemble_log_probs([outputs[m] for m in members])
        for name, log_probs in outputs.items():
            metrics[name].update(log_probs, labels, speech, phones, senone_to_phone, speaker)
    return {name: m.result(with_phones) for name, m in metrics.items()}


def summarize_seeds(runs: list[dict]) -> dict:
    """Mean and sample standard deviation of each scalar metric over runs (seeds)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float) and k != "frames"]
    out = {}
    for key in keys:
        values = np.array([run[key] for run in runs], np.float64)
        out[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "values": values.tolist(),
        }
    return out


def _sequence_flops(model, shapes) -> float:
    """Forward FLOPs of an utterance model on one fixed-length input (loops unrolled by count)."""
    from tfblend.models.flops import graph_flops

    frames = shapes["features"][1]
    spec = {
        "features": tf.TensorSpec(shapes["features"], tf.float32),
        "mask": tf.TensorSpec(shapes["mask"], tf.bool),
    }
    function = tf.function(lambda inputs: model(inputs, training=False))
    graph = function.get_concrete_function(spec).graph
    return graph_flops(graph, loop_trips=frames)


def _senone_map(train_manifest: dict):
    """(senone -> phone map or None, silence/filler phone ids) for a corpus.

    The map comes from the acoustic model's mdef (the embedded corpus's pocketsphinx model);
    for other corpora phone accuracy is left out.
    """
    corpus = train_manifest.get("metadata", {}).get("corpus", {})
    names = corpus.get("phone_names") or []
    silence = [i for i, name in enumerate(names) if name == "SIL" or name.startswith("+")]
    if corpus.get("senone_model") != "pocketsphinx en-us":
        return None, silence
    from tfblend.corpus.mdef import default_senone_model

    model = default_senone_model()
    if list(model.phone_names) != list(names):
        raise DataError("the corpus's phone names differ from the pocketsphinx model's mdef")
    return np.asarray(model.senone_to_phone, np.int64), silence


def evaluate_models(
    corpus_dir: str, split: str, models: dict, ensembles: dict, progress=None
) -> dict:
    """Evaluates named model directories (several per name: seeds) and seed-paired ensembles.

    Args:
      corpus_dir: corpus root (``<split>`` is scored, ``train`` gives CMVN and the phone map).
      split: the split to score, normally "test".
      models: name -> list of model directories (one per seed).
      ensembles: name -> member names; member runs are paired by seed index.
      progress: optional ``fn(message)``.

    Returns:
      ``{"split", "frames", "models": {name: {"runs": [metrics...], "summary": {...},
      "info": [model.json...]}}}``.
    """
    from tfblend.models.flops import forward_flops, frame_flops
    from tfblend.records import read_manifest, require_frames
    from tfblend.train.modeldir import load_model_dir

    test_dir = os.path.join(corpus_dir, split)
    require_frames(test_dir, read_manifest(test_dir), "evaluate")
    train_manifest = read_manifest(os.path.join(corpus_dir, "train"))
    senone_to_phone, silence = _senone_map(train_manifest)
    seeds = {len(dirs) for dirs in models.values()}
    runs = max(seeds)
    results = {name: {"runs": [], "info": []} for name in [*models, *ensembles]}
    cmvn_modes = set()
    for run in range(runs):
        scorers = {}
        for name, dirs in models.items():
            if run >= len(dirs):
                continue
            model, info = load_model_dir(dirs[run])
            info["model_dir"] = os.path.abspath(dirs[run])
            cmvn_modes.add(info["cmvn"])
            if info["kind"] == "window":
                scorers[name] = window_scorer(model, info["context"])
                if hasattr(model, "receptive_field"):
                    # Scored (and served) densely: count what one pass computes per frame.
                    flops = frame_flops(model, info["feature_dim"])["dense"]
                else:
                    flops = forward_flops(model, [1, 2 * info["context"] + 1, info["feature_dim"]])
                info["flops_per_frame"] = flops
            else:
                scorers[name] = sequence_scorer(model)
                frames = 100  # FLOPs of an LSTM grow linearly with length: count 1 s, divide
                shape = {"features": [1, frames, info["feature_dim"]], "mask": [1, frames]}
                info["flops_per_frame"] = _sequence_flops(model, shape) / frames
            results[name]["info"].append(info)
        if len(cmvn_modes) > 1:
            raise DataError(
                f"the models use different CMVN modes {sorted(cmvn_modes)}; "
                "evaluate them separately"
            )
        present = {n: m for n, m in ensembles.items() if all(x in scorers for x in m)}
        if progress:
            progress(
                f"scoring {split} with {', '.join([*scorers, *present])} (run {run + 1}/{runs})"
            )
        metrics = evaluate(
            test_dir,
            scorers,
            cmvn=next(iter(cmvn_modes)),
            cmvn_stats=os.path.join(corpus_dir, "train"),
            ensembles=present,
            senone_to_phone=senone_to_phone,
            silence_phones=silence,
        )
        for name, values in metrics.items():
            results[name]["runs"].append(values)
    for entry in results.values():
        entry["summary"] = summarize_seeds(entry["runs"]) if entry["runs"] else {}
    frames = next(iter(results.values()))["runs"][0]["frames"]
    return {"split": split, "frames": frames, "models": results}
