"""Per-utterance results: what the paired bootstrap of :mod:`tfblend.study.statistics` resamples.

:func:`tfblend.evaluation.evaluate` sums over the whole test set (and per voice); a bootstrap over
test utterances needs the counts of every utterance, in one order shared by every model and seed.
:func:`score_utterances` scores like ``evaluate`` (same scorers, same ensembles: the mean of the
members' posteriors) and keeps, per utterance, the frames and the correctly classified frames.
"""

import dataclasses
import os

import numpy as np

from tfblend.errors import DataError
from tfblend.evaluation.scorers import ensemble_log_probs, sequence_scorer, window_scorer
from tfblend.pipeline import eval_utterances


@dataclasses.dataclass
class UtteranceCounts:
    """One model's results on a test set, utterance by utterance (in the set's canonical order).

    Attributes:
      utt_ids: ``[U]`` utterance ids.
      speakers: ``[U]`` their speakers (voices).
      correct: int64 ``[U]``, frames whose most probable senone is the aligned one.
      frames: int64 ``[U]``, frames.
    """

    utt_ids: list
    speakers: list
    correct: np.ndarray
    frames: np.ndarray

    def to_dict(self) -> dict:
        """JSON-ready lists (a study stage stores them; :meth:`from_dict` reads them back)."""
        return {
            "utt_ids": list(self.utt_ids),
            "speakers": list(self.speakers),
            "correct": self.correct.tolist(),
            "frames": self.frames.tolist(),
        }

    @classmethod
    def from_dict(cls, value: dict) -> "UtteranceCounts":
        counts = cls(
            list(value["utt_ids"]),
            list(value["speakers"]),
            np.asarray(value["correct"], np.int64),
            np.asarray(value["frames"], np.int64),
        )
        sizes = {len(counts.utt_ids), len(counts.speakers), counts.correct.size, counts.frames.size}
        if len(sizes) != 1 or (counts.correct > counts.frames).any():
            raise DataError("per-utterance counts of different lengths, or more hits than frames")
        return counts

    @property
    def accuracy(self) -> float:
        """Frame accuracy over the whole set: sum of correct frames / sum of frames."""
        return float(self.correct.sum() / max(int(self.frames.sum()), 1))


def score_utterances(
    test_dir: str, scorers: dict, *, cmvn: str, cmvn_stats, ensembles: dict | None = None
) -> dict:
    """Per-utterance frame counts of every model and ensemble on ``test_dir``.

    Args:
      test_dir: a labelled utterance set.
      scorers: name -> ``fn(features float32 [T, D]) -> log-probs float32 [T, K]``
        (:func:`tfblend.evaluation.window_scorer` / ``sequence_scorer``).
      cmvn, cmvn_stats: the normalisation every scorer expects.
      ensembles: name -> member names; the members' posteriors are averaged.

    Returns:
      name -> :class:`UtteranceCounts`, every one in the same utterance order.
    """
    ensembles = ensembles or {}
    for name, members in ensembles.items():
        unknown = [m for m in members if m not in scorers]
        if unknown:
            raise DataError(f"ensemble {name} names unknown models {unknown}")
    names = [*scorers, *ensembles]
    ids, speakers, frames = [], [], []
    correct = {name: [] for name in names}
    for utterance in eval_utterances(test_dir, cmvn=cmvn, cmvn_stats=cmvn_stats):
        if "labels" not in utterance:
            raise DataError(f"{test_dir} has no frame labels to score against")
        labels = utterance["labels"].numpy()
        ids.append(utterance["utt_id"].numpy().decode())
        speakers.append(utterance["speaker"].numpy().decode())
        frames.append(len(labels))
        outputs = {name: scorer(utterance["features"]) for name, scorer in scorers.items()}
        for name, members in ensembles.items():
            outputs[name] = ensemble_log_probs([outputs[m] for m in members])
        for name, log_probs in outputs.items():
            correct[name].append(int((np.argmax(log_probs, axis=1) == labels).sum()))
    frames = np.asarray(frames, np.int64)
    return {
        name: UtteranceCounts(
            list(ids), list(speakers), np.asarray(correct[name], np.int64), frames
        )
        for name in names
    }


def stack_seeds(runs: list) -> tuple[np.ndarray, np.ndarray]:
    """``(correct int64 [S, U], frames int64 [S, U])`` of one model's seeds, checked to be scored
    on the same utterances in the same order (the input of :mod:`tfblend.study.statistics`)."""
    if not runs:
        raise DataError("no runs to stack")
    for run in runs[1:]:
        if run.utt_ids != runs[0].utt_ids:
            raise DataError("the runs were scored on different utterances (or in another order)")
    return np.stack([r.correct for r in runs]), np.stack([r.frames for r in runs])


def score_model_dirs(
    corpus_dir: str,
    split: str,
    models: dict,
    ensembles: dict | None = None,
    sequence_context: int | None = None,
) -> dict:
    """Per-utterance counts of model directories (several per name: seeds) on ``corpus_dir/split``.

    Args:
      corpus_dir: corpus root (``train`` gives the global CMVN statistics).
      split: normally "test".
      models: name -> list of model directories, one per seed.
      ensembles: name -> member names; members are paired by seed index (as in
        :func:`tfblend.evaluation.evaluate_models`).
      sequence_context: None, or W: the sequence models (the BLSTM) score every frame from its
        window of W frames either side only (:func:`tfblend.evaluation.sequence_scorer`); window
        models keep the context they were trained with.

    Returns:
      name -> list of :class:`UtteranceCounts`, one per seed.
    """
    from tfblend.records import read_manifest, require_frames
    from tfblend.train.modeldir import load_model_dir

    split_dir = os.path.join(corpus_dir, split)
    require_frames(split_dir, read_manifest(split_dir), "score")
    ensembles = ensembles or {}
    results = {name: [] for name in [*models, *ensembles]}
    for run in range(max(len(dirs) for dirs in models.values())):
        scorers, modes = {}, set()
        for name, dirs in models.items():
            if run < len(dirs):
                model, info = load_model_dir(dirs[run])
                modes.add(info["cmvn"])
                scorers[name] = (
                    window_scorer(model, info["context"])
                    if info["kind"] == "window"
                    else sequence_scorer(model, sequence_context)
                )
        if len(modes) > 1:
            raise DataError(f"the models use different CMVN modes {sorted(modes)}")
        present = {n: m for n, m in ensembles.items() if all(x in scorers for x in m)}
        counts = score_utterances(
            os.path.join(corpus_dir, split),
            scorers,
            cmvn=modes.pop(),
            cmvn_stats=os.path.join(corpus_dir, "train"),
            ensembles=present,
        )
        for name, value in counts.items():
            results[name].append(value)
    return results
