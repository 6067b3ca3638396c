"""Running the pipeline's steps as stages: skip what is complete, time what runs.

The recipe, the study and the k sweep chain the steps of :mod:`tfblend.steps`, each run by the
running interpreter with ``python -m``, from the installed package, in its own process (as a
user would run them, and so that every stage starts with fresh TensorFlow state). A stage whose
outputs are complete is skipped; a partial one is run again and continues by itself (training
resumes from its checkpoint, a target dump from its last complete shard). Wall times are kept in
``<report_dir>/stages.json`` across reruns. A stage killed with the study (a machine's end) or
failed, and continued by a later run, is charged for every run that worked on it, less at most
a minute: its wall time so far is written each minute while it runs, and its label stays in
``stages_unfinished.json`` until it succeeds. A stage run again after it succeeded is charged for
its last run only.

Stages that read what other stages make (the recipe's evaluate, export, score and wer) are
complete make-style (:meth:`StageRunner.current`): when they finished with the same command
(recorded in ``<report_dir>/stage_commands.json``; a run without a record counts when
``stages.json`` says it finished) and what they wrote is newer than what they read. A second
recipe on a finished work dir so runs nothing, and a retrained model or other flags run them
again.
"""

import contextlib
import os
import shutil
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


def newest_change(paths) -> float | None:
    """The latest modification time of ``paths`` (0 for none), or None when one is missing."""
    times = [0.0]
    for path in paths:
        if not os.path.exists(path):
            return None
        times.append(os.path.getmtime(path))
    return max(times)


def export_metadata(export_dir: str) -> str:
    """The path of an export's metadata file, the last file an export writes."""
    from tfblend.export import METADATA_FILE

    return os.path.join(export_dir, "assets.extra", METADATA_FILE)


def export_current(export_dir: str, model_dir: str) -> bool:
    """True when ``export_dir`` is a complete export of ``model_dir`` as it is now: its
    metadata (written last) names that model dir, and it is newer than the model's model.json."""
    metadata = export_metadata(export_dir)
    info = os.path.join(model_dir, INFO_FILE)
    if not os.path.exists(metadata) or not os.path.exists(info):
        return False
    exported = _read_if_there(metadata, "export metadata", {}).get("model_dir")
    if not exported or os.path.realpath(exported) != os.path.realpath(model_dir):
        return False
    return os.path.getmtime(metadata) >= os.path.getmtime(info)


def remove_stale_export(export_dir: str, model_dir: str) -> None:
    """Deletes ``export_dir`` when it exists but is not an export of the finished ``model_dir``
    as it is now (:func:`export_current`: the run was trained again since), said aloud, so
    that it can be exported again under the same version."""
    stale = model_done(model_dir) and not export_current(export_dir, model_dir)
    if stale and os.path.exists(export_dir):
        say(f"{export_dir}: not an export of {model_dir} as it is now; exporting it again")
        shutil.rmtree(export_dir)


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
        self.commands_path = os.path.join(report_dir, "stage_commands.json")
        self.times: dict[str, float] = _read_if_there(self.times_path, "stage times", {})
        self.unfinished: list[str] = _read_if_there(self.unfinished_path, "stage names", [])
        #: label -> {"command": the step and its flags, "finished": time} of its last success
        self.commands: dict[str, dict] = _read_if_there(self.commands_path, "stage commands", {})
        #: when an earlier run last wrote stages.json (its stages had finished by then)
        self._earlier = newest_change([self.times_path]) or 0.0
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

    def in_selected_part(self) -> bool:
        """True when the stages of the current part (if any) are selected to run."""
        return self._part is None or self.runs(self._part)

    def ran(self, label: str) -> bool:
        """True when this run ran stage ``label`` (not skipped as complete)."""
        return label in self._ran

    @staticmethod
    def _command(step: str, flag_values: dict) -> list[str]:
        """``-m tfblend.steps.<step> --flag=value ...``: list values become repeated flags,
        None values none."""
        command = ["-m", f"{STEPS}.{step}"]
        for key, value in flag_values.items():
            for item in value if isinstance(value, list) else [] if value is None else [value]:
                command.append(f"--{key}={item}")
        return command

    def current(self, label: str, step: str, *, inputs=(), outputs=(), **flag_values) -> bool:
        """Whether stage ``label`` is complete make-style: it finished earlier with the same
        command (``step`` and ``flag_values``, as :meth:`stage` would run it; a stage of a run
        that kept no record counts when ``stages.json`` says it finished), every path of
        ``outputs`` exists, and nothing of ``inputs`` (paths; a missing one means not
        complete) changed since it finished and wrote its outputs."""
        record = self.commands.get(label)
        if record is not None:
            if record.get("command") != self._command(step, flag_values):
                return False
            finished = float(record.get("finished", 0.0))
        elif label in self.times and label not in self.unfinished:
            finished = self._earlier
        else:
            return False
        newest_input = newest_change(inputs)
        if newest_input is None or finished < newest_input:
            return False
        written = [os.path.getmtime(p) for p in outputs if os.path.exists(p)]
        return len(written) == len(outputs) and min(written, default=newest_input) >= newest_input

    def stage(self, label: str, complete: bool, step: str, **flag_values) -> None:
        """Runs one stage; list values become repeated flags, None values none (the step's
        default). Raises DataError on failure. ``step`` names a module of :mod:`tfblend.steps`.
        Its command is recorded once it succeeds (for :meth:`current`)."""
        if complete:  # a stage this run made already (asked for again) is not an earlier run's
            say(f"stage {label}: complete, skipped")
            if label not in self._ran:
                self.skipped.append(label)
            return
        if self._part is not None and not self.runs(self._part):
            say(f"stage {label}: not run (part {self._part} is not selected)")
            return
        command = [sys.executable, *self._command(step, flag_values)]
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
        self.commands[label] = {"command": command[1:], "finished": time.time()}
        write_json(self.commands_path, self.commands)
        self._ran.add(label)
        resumed = f" ({earlier:.0f} s of it in earlier runs)" if earlier else ""
        say(f"stage {label}: done in {self.times[label]:.0f} s{resumed}")

    def _charge(self, label: str, seconds: float) -> None:
        """Records ``seconds`` as the stage's wall time so far, in stages.json."""
        self.times[label] = seconds
        write_json(self.times_path, self.times)
