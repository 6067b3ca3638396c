"""Running the pipeline's steps as stages: skip what is complete, time what runs.

The recipe, the study and the k sweep chain the steps of :mod:`tfblend.steps`, each run by the
running interpreter with ``python -m``, from the installed package, in its own process (as a
user would run them, and so that every stage starts with fresh TensorFlow state). A stage whose
outputs are complete is skipped; a partial one is run again and continues by itself (training
resumes from its checkpoint, a target dump from its last complete shard). Wall times are kept in
``<report_dir>/stages.json`` across reruns. A stage killed with the study (a session's end) or
failed, and continued by a later run, is charged for every run that worked on it, less at most
a minute: its wall time so far is written each minute while it runs, and its label stays in
``stages_unfinished.json`` until it succeeds. A stage run again after it succeeded (the recipe's
evaluate, export and wer stages run every time) is charged for its last run only.
"""

import contextlib
import os
import subprocess
import sys
import time

from tfblend.cli import say
from tfblend.errors import DataError
from tfblend.records import write_json
from tfblend.study.inputs import read_json
from tfblend.train.modeldir import INFO_FILE
from tfblend.train.rundir import OWNER_ENV

STEPS = "tfblend.steps"

#: How often (seconds) a running stage's wall time so far is written to stages.json.
HEARTBEAT_SECONDS = 60


def model_done(model_dir: str) -> bool:
    """True when a model directory is complete (its model.json is written last)."""
    return os.path.exists(os.path.join(model_dir, INFO_FILE))


def dev_accuracy(model_dir: str) -> float:
    """The last epoch's dev frame accuracy of a finished run (its history.csv)."""
    from tfblend.evaluation.report import read_history

    history = read_history(model_dir)
    if "val_accuracy" not in history:
        raise DataError(f"{model_dir}/history.csv has no val_accuracy")
    return float(history["val_accuracy"][-1])


def choose_on_dev(label: str, candidates: dict) -> tuple[str, dict]:
    """The candidate (name -> finished model dir) with the best dev accuracy (ties: the first),
    said aloud; ``(best name, {name: dev accuracy})``. Choices are made on dev, never on test."""
    scores = {name: dev_accuracy(directory) for name, directory in candidates.items()}
    best = max(scores, key=scores.get)
    listed = ", ".join(f"{name}: {score:.2%}" for name, score in scores.items())
    say(f"{label}: {best} is best on dev ({listed})")
    return best, scores


def set_done(directory: str) -> bool:
    """True when an utterance or target set is complete (its manifest.json is written last)."""
    return os.path.exists(os.path.join(directory, "manifest.json"))


def _read_if_there(path: str, what: str, default):
    """``path``'s JSON (DataError naming the file if it is not JSON), ``default`` if absent."""
    return read_json(path, what) if os.path.exists(path) else default


class StagesDone(Exception):
    """Raised on entering a part after the last selected one: the selected stages have run."""


class StageRunner:
    """Runs ``python -m tfblend.steps.<step>`` with flags unless the stage is complete; records
    wall times.

    Stages may be grouped in named parts (:meth:`part`), Kaldi style: :meth:`select` runs the
    parts from ``--stage`` to ``--stop_stage`` only: the stages of earlier parts are not run
    (what they make must exist for the selected parts that read it), and entering a part after
    the last selected one raises :class:`StagesDone`.

    Args:
      report_dir: where ``stages.json`` (stage name -> seconds) is kept.
      owner: who owns the runs, e.g. "the study of work/study" (the steps get it in
        ``TFBLEND_OWNER``, so that their messages never advise ``--overwrite`` for a run of it).
    """

    def __init__(self, report_dir: str, owner: str | None = None):
        self.owner = owner
        os.makedirs(report_dir, exist_ok=True)
        self.times_path = os.path.join(report_dir, "stages.json")
        self.unfinished_path = os.path.join(report_dir, "stages_unfinished.json")
        self.times: dict[str, float] = _read_if_there(self.times_path, "stage times", {})
        self.unfinished: list[str] = _read_if_there(self.unfinished_path, "stage names", [])
        self.selected: set | None = None  # every part
        self._after: set = set()  # the parts after the last selected one
        self.skipped: list[str] = []  # the stages found complete from an earlier run
        self._ran: set[str] = set()  # the stages this run ran
        self._part: str | None = None

    def select(self, parts, first: str, last: str) -> None:
        """Runs only the parts from ``first`` to ``last`` of ``parts`` (in order)."""
        parts = list(parts)
        for name in (first, last):
            if name not in parts:
                raise DataError(f"no stage {name!r}: the stages are {', '.join(parts)}")
        if parts.index(first) > parts.index(last):
            raise DataError(f"--stage={first} comes after --stop_stage={last}")
        self.selected = set(parts[parts.index(first) : parts.index(last) + 1])
        self._after = set(parts[parts.index(last) + 1 :])

    def runs(self, part: str) -> bool:
        """True when ``part``'s stages are selected to run."""
        return self.selected is None or part in self.selected

    @contextlib.contextmanager
    def part(self, name: str):
        """The stages run inside the ``with`` block belong to the part ``name`` (StagesDone when
        it comes after the last selected part)."""
        if name in self._after:
            raise StagesDone(name)
        self._part = name
        try:
            yield
        finally:
            self._part = None

    def stage(self, label: str, complete: bool, step: str, **flag_values) -> None:
        """Runs one stage; list values become repeated flags, None values none (the step's
        default). Raises DataError on failure. ``step`` names a module of :mod:`tfblend.steps`."""
        if complete:  # a stage this run made already (asked for again) is not an earlier run's
            say(f"stage {label}: complete, skipped")
            if label not in self._ran:
                self.skipped.append(label)
            return
        if self._part is not None and not self.runs(self._part):
            say(f"stage {label}: not run (part {self._part} is not selected)")
            return
        command = [sys.executable, "-m", f"{STEPS}.{step}"]
        for key, value in flag_values.items():
            for item in value if isinstance(value, list) else [] if value is None else [value]:
                command.append(f"--{key}={item}")
        say(f"stage {label}: {' '.join(command[1:])}")
        earlier = self.times.get(label, 0.0) if label in self.unfinished else 0.0
        if label not in self.unfinished:
            self.unfinished.append(label)
            write_json(self.unfinished_path, self.unfinished)
        started = time.time()
        env = None if self.owner is None else {**os.environ, OWNER_ENV: self.owner}
        with subprocess.Popen(command, env=env) as process:
            while True:
                try:
                    returncode = process.wait(timeout=HEARTBEAT_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    self._charge(label, earlier + time.time() - started)
        self._charge(label, earlier + time.time() - started)
        if returncode != 0:
            raise DataError(
                f"stage {label} failed (exit {returncode}; its error is above); run the "
                "same command again to continue from where it stopped"
            )
        self.unfinished.remove(label)
        write_json(self.unfinished_path, self.unfinished)
        self._ran.add(label)
        resumed = f" ({earlier:.0f} s of it in earlier runs)" if earlier else ""
        say(f"stage {label}: done in {self.times[label]:.0f} s{resumed}")

    def _charge(self, label: str, seconds: float) -> None:
        """Records ``seconds`` as the stage's wall time so far, in stages.json."""
        self.times[label] = seconds
        write_json(self.times_path, self.times)
