"""The inputs of a study's report: ``study.json`` and the per-utterance files it names, checked.

The study (``python -m tfblend.study``) ends by writing ``<work_dir>/report/study.json``::

  {"command", "size", "seeds", "teacher_seeds",
   "corpus": {"train"|"dev"|"test": {"utterances", "frames", "hours", "voices"},
              "build_seconds": float or null},
   "num_classes", "epochs": {"teacher", "student"},
   "choices": {name: {"grid": {setting: dev frame accuracy}, "chosen": setting}},
   "models": [{"name", "role", "seeds"?, "k"?, "draws"?, "scores": [...], "wer": [...]}],
   "bytes_per_frame": {"<k>" or "sampled": bytes}, "stages": {stage: seconds},
   "learning_curves": [...], "longer_epochs": N}   (tfblend.study.diagnosis)

``study.json`` sits in ``<study_dir>/report/``; the paths in it are relative to ``<study_dir>``. A
model's ``scores`` are :meth:`tfblend.evaluation.utterances.UtteranceCounts.to_dict` files, one
per seed; its ``wer`` are the decode step's per-model ``wer.json`` files
(``per_utterance``: utt -> sub/del/ins/ref), one per decoded seed. A model's ``seeds`` is the
number of seeds asked for it; without it, the study's ``teacher_seeds`` for the teacher, the
smaller of both counts for an ensemble (its members pair seed by seed) and ``seeds`` for every
student.

Checks (a :class:`tfblend.errors.DataError` naming the file): every file is readable; every
scores file of every model covers the same test utterances in the same order; every wer file of
every model covers the same utterances, all of them scored test utterances; each role but
``sweep`` names one model at most.
"""

import dataclasses
import json
import os

import numpy as np

from tfblend.errors import DataError
from tfblend.evaluation.utterances import UtteranceCounts, stack_seeds
from tfblend.study import statistics

#: Roles that name at most one model (the goals pick models by role).
UNIQUE_ROLES = (
    "teacher",
    "cnn",
    "dnn",
    "smoothing",
    "blend",
    "sampled",
    "ensemble",
    "ensemble_blend",
    "teacher_window",
)


@dataclasses.dataclass
class ModelResults:
    """One model of the study with its per-utterance counts.

    Attributes:
      name, role: from study.json (the role says what the model is: teacher, cnn, blend, ...).
      entry: its study.json entry (``k``, ``draws``, ...).
      asked_seeds: how many seeds the study asked for it (module docstring).
      frames: ``(correct int64 [S, U], frames int64 [S, U])`` over its S scored seeds, in the
        study's utterance order; None when it has no scores.
      words: ``(errors int64 [S', W], reference words int64 [S', W])`` over its S' decoded
        seeds, in the study's WER utterance order; None when it was not decoded.
    """

    name: str
    role: str
    entry: dict
    asked_seeds: int
    frames: tuple | None
    words: tuple | None

    @property
    def accuracy(self) -> dict | None:
        """:func:`.statistics.mean_std` of the per-seed test frame accuracy (or None)."""
        return None if self.frames is None else _per_seed(*self.frames)

    @property
    def wer(self) -> dict | None:
        """:func:`tfblend.study.statistics.mean_std` of the per-seed test WER (or None)."""
        return None if self.words is None else _per_seed(*self.words)

    @property
    def scored_seeds(self) -> int:
        return 0 if self.frames is None else int(self.frames[0].shape[0])


def _per_seed(numerator, denominator) -> dict:
    return statistics.mean_std(numerator.sum(axis=1) / np.maximum(denominator.sum(axis=1), 1))


@dataclasses.dataclass
class StudyData:
    """A study's facts and models, read and checked.

    Attributes:
      study: the study.json dict.
      path: its path.
      models: :class:`ModelResults` in study.json's order.
      utt_ids, speakers: ``[U]`` the scored test utterances and their voices.
      wer_utt_ids, wer_speakers: ``[W]`` the decoded utterances (sorted) and their voices.
    """

    study: dict
    path: str
    models: list
    utt_ids: list
    speakers: list
    wer_utt_ids: list
    wer_speakers: list

    def role(self, role: str) -> ModelResults | None:
        """The model of a unique role, or None if the study has none."""
        return next((m for m in self.models if m.role == role), None)

    def by_role(self, role: str) -> list:
        return [m for m in self.models if m.role == role]

    @property
    def focus(self) -> ModelResults | None:
        """The model every other is compared with: role "blend"."""
        return self.role("blend")


def read_json(path: str, what: str):
    """JSON from ``path``; DataError naming the file (and ``what`` it should be) otherwise."""
    try:
        with open(path) as stream:
            return json.load(stream)
    except OSError as error:
        raise DataError(f"{path}: cannot read {what}: {error.strerror or error}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: {what} is not valid JSON: {error}") from error


def _asked_seeds(study: dict, entry: dict, path: str) -> int:
    if "seeds" in entry:
        return int(entry["seeds"])
    try:
        if entry["role"] == "teacher":
            return int(study["teacher_seeds"])
        if entry["role"] == "ensemble":
            return min(int(study["teacher_seeds"]), int(study["seeds"]))
        return int(study["seeds"])
    except KeyError as error:
        raise DataError(f"{path}: no {error.args[0]!r} (the seeds asked)") from error


def _read_scores(path: str) -> UtteranceCounts:
    value = read_json(path, "per-utterance scores")
    try:
        return UtteranceCounts.from_dict(value)
    except (KeyError, TypeError, ValueError) as error:  # DataError is a ValueError
        raise DataError(f"{path}: not per-utterance scores ({error})") from error


def _read_wer(path: str) -> dict:
    """utt -> (errors, reference words) of a decode.py wer.json."""
    value = read_json(path, "a wer.json of decode.py")
    try:
        rows = value["per_utterance"]
        out = {
            u: (int(r["sub"]) + int(r["del"]) + int(r["ins"]), int(r["ref"]))
            for u, r in rows.items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise DataError(f"{path}: no per_utterance sub/del/ins/ref rows ({error})") from error
    if not out or any(e < 0 or r < 0 for e, r in out.values()):
        raise DataError(f"{path}: per_utterance is empty or has negative counts")
    return out


def _fail(path: str, what: str):
    raise DataError(f"{path}: {what}")


def check_fields(study, path: str) -> None:
    """DataError naming ``path`` where a field the report reads has the wrong shape (absent
    optional fields are reported as not recorded)."""
    if not isinstance(study, dict) or not isinstance(study.get("models"), list):
        _fail(path, "no 'models' list")
    for field in ("corpus", "choices", "stages", "bytes_per_frame", "epochs"):
        if not isinstance(study.get(field, {}), dict):
            _fail(path, f"{field} must be an object")
    for entry in study["models"]:
        if not isinstance(entry, dict) or not {"name", "role"} <= set(entry):
            _fail(path, f"a model without a name and a role: {entry!r}")
        for key in ("scores", "wer"):
            files = entry.get(key, [])
            if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                _fail(path, f"model {entry['name']}: {key!r} must be a list of paths")
        for key in ("k", "draws", "seeds"):
            if key in entry and not isinstance(entry[key], int):
                _fail(path, f"model {entry['name']}: {key!r} must be an integer")
    corpus = study.get("corpus", {})
    for split in ("train", "dev", "test"):
        facts = corpus.get(split)
        keys = ("utterances", "frames", "hours", "voices")
        if facts is not None and not (
            isinstance(facts, dict) and all(isinstance(facts.get(k), int | float) for k in keys)
        ):
            _fail(path, f"corpus.{split} needs the numbers {', '.join(keys)}")
    if not isinstance(corpus.get("build_seconds") or 0, int | float):
        _fail(path, "corpus.build_seconds must be a number or null")
    for name, choice in study.get("choices", {}).items():
        grid = choice.get("grid") if isinstance(choice, dict) else None
        if not isinstance(grid, dict) or not all(isinstance(v, int | float) for v in grid.values()):
            _fail(path, f"choices.{name} needs a grid of dev accuracies (numbers)")
        if choice.get("chosen") not in choice["grid"]:
            _fail(path, f"choices.{name}: chosen {choice.get('chosen')!r} is not in its grid")
    for field in ("stages", "bytes_per_frame"):
        values = study.get(field, {})
        if not isinstance(values, dict) or not all(
            isinstance(v, int | float) for v in values.values()
        ):
            _fail(path, f"{field} must map names to numbers")
    for curve in study.get("learning_curves", []):
        if not _is_curve(curve):
            _fail(
                path, f"a learning curve needs a name, a role and per-epoch accuracies: {curve!r}"
            )


def _is_curve(curve) -> bool:
    if not isinstance(curve, dict) or not {"name", "role"} <= set(curve):
        return False
    train, dev = curve.get("train_accuracy"), curve.get("dev_accuracy")
    return all(
        isinstance(a, list) and a and all(isinstance(v, int | float) for v in a)
        for a in (train, dev)
    ) and len(train) == len(dev)


class _FirstSeen:
    """The first file read of a kind (``value``, ``path``); :meth:`check` raises DataError
    naming a later file that does not match it (``same(value, first value)`` false; the message
    is ``mismatch(value, self)``)."""

    def __init__(self, same, mismatch):
        self.value = self.path = None
        self._same, self._mismatch = same, mismatch

    def check(self, value, path: str):
        if self.value is None:
            self.value, self.path = value, path
        elif not self._same(value, self.value):
            raise DataError(f"{path}: {self._mismatch(value, self)}")
        return value


def _check_names_and_roles(entries: list, study_json: str) -> None:
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise DataError(f"{study_json}: every model needs a name of its own: {names}")
    for role in UNIQUE_ROLES:
        count = sum(e.get("role") == role for e in entries)
        if count > 1:
            raise DataError(f"{study_json}: {count} models have the role {role!r} (one at most)")


def read_study(study_json: str, study_dir: str | None = None) -> StudyData:
    """Reads and checks ``study.json`` and every file it names (module docstring).

    Args:
      study_json: the file.
      study_dir: what its paths are relative to (default: the folder above study.json's).
    """
    study = read_json(study_json, "the study's summary")
    directory = study_dir or os.path.dirname(os.path.dirname(os.path.abspath(study_json)))
    check_fields(study, study_json)
    entries = study["models"]
    _check_names_and_roles(entries, study_json)
    scored = _FirstSeen(  # every model scored on the same test utterances, in one order
        lambda run, first: run.utt_ids == first.utt_ids,
        lambda run,
        first: f"scored on other test utterances (or in another order) than {first.path}",
    )
    decoded = _FirstSeen(  # and decoded on the same ones
        lambda table, first: set(table) == set(first),
        lambda table, first: f"decoded other utterances than {first.path} (e.g. "
        f"{sorted(set(table) ^ set(first.value))[0]})",
    )
    models = []
    for entry in entries:
        paths = {
            key: [os.path.join(directory, r) for r in entry.get(key, [])]
            for key in ("scores", "wer")
        }
        runs = [scored.check(_read_scores(path), path) for path in paths["scores"]]
        tables = [decoded.check(_read_wer(path), path) for path in paths["wer"]]
        words = None
        if tables:
            order = sorted(decoded.value)
            words = tuple(
                np.array([[t[u][i] for u in order] for t in tables], np.int64) for i in (0, 1)
            )
        models.append(
            ModelResults(
                name=entry["name"],
                role=entry["role"],
                entry=entry,
                asked_seeds=_asked_seeds(study, entry, study_json),
                frames=stack_seeds(runs) if runs else None,
                words=words,
            )
        )
    reference, reference_path = scored.value, scored.path
    wer_reference, wer_reference_path = decoded.value, decoded.path
    utt_ids = reference.utt_ids if reference else []
    speakers = reference.speakers if reference else []
    wer_utt_ids = sorted(wer_reference) if wer_reference else []
    voice_of = dict(zip(utt_ids, speakers, strict=True))
    missing = [u for u in wer_utt_ids if u not in voice_of]
    if missing and reference is not None:
        raise DataError(
            f"{wer_reference_path}: utterance {missing[0]} is not one of the scored test "
            f"utterances of {reference_path}"
        )
    return StudyData(
        study=study,
        path=study_json,
        models=models,
        utt_ids=list(utt_ids),
        speakers=list(speakers),
        wer_utt_ids=wer_utt_ids,
        wer_speakers=[voice_of[u] for u in wer_utt_ids] if reference else [],
    )
