"""An exactly resumable ``fit`` and its callbacks.

Exact resume: :class:`ResumeCheckpoint` writes the student's and optimizer's variables (random
seed states included) and the position ``(epoch, step)`` every N steps, atomically. The input
pipeline's order is a pure function of ``(seed, epoch)`` (:mod:`tfblend.pipeline`), so
:func:`fit_resumable` restarts the killed epoch's dataset and skips the steps already taken:
a killed and resumed run takes the same batches in the same order as an uninterrupted one.

Callbacks: :class:`ResumeCheckpoint`, :class:`StopOnNonFinite` (first, so that no checkpoint
follows a non-finite loss), TensorBoard and CSV logs (:func:`standard_callbacks`,
:class:`HistoryLogger`). Every file is written whole and atomically: a full disk ends in one
line naming the file, with nothing partial left.

Crash drill: with the environment variable ``TFBLEND_KILL_AT_CHECKPOINT=EPOCH:STEP``
(:data:`KILL_AT_ENV`), the process kills itself with SIGKILL, as a lost machine would end it,
right after it has written the resume checkpoint at that position (``STEP`` 0: the end of epoch
``EPOCH - 1``; otherwise a multiple of ``train.checkpoint_every_steps`` inside the epoch). Run
the same command again without it to resume, e.g. to check that a run resumes to the same weights
on a given machine. A position that names no checkpoint of the run is refused before training.
"""

import io
import json
import os
import shutil
import signal

import keras
import numpy as np

from tfblend.errors import DataError, NonFiniteError
from tfblend.records import write_file, write_json

#: ``EPOCH:STEP``: kill the process right after the resume checkpoint at that position (module
#: docstring).
KILL_AT_ENV = "TFBLEND_KILL_AT_CHECKPOINT"


def kill_point(every_steps: int, steps_per_epoch: int, epochs: int | None = None):
    """The position ``(epoch, step)`` of ``$TFBLEND_KILL_AT_CHECKPOINT`` (None when unset).

    Raises:
      DataError: the value is not ``EPOCH:STEP`` or names no checkpoint of a run that saves
        every ``every_steps`` steps of ``steps_per_epoch`` for ``epochs`` epochs.
    """
    value = os.environ.get(KILL_AT_ENV, "").strip()
    if not value:
        return None
    epoch, _, step = value.partition(":")
    if not (epoch.isdigit() and step.isdigit()):
        raise DataError(f"{KILL_AT_ENV}={value!r}: expected EPOCH:STEP, e.g. 1:5")
    epoch, step = int(epoch), int(step)
    if step and (step % every_steps or step >= steps_per_epoch):
        raise DataError(
            f"{KILL_AT_ENV}={value}: no checkpoint is written at step {step} (every "
            f"{every_steps} steps of {steps_per_epoch} per epoch, and 0 for an epoch's end)"
        )
    if (epoch, step) == (0, 0):
        raise DataError(f"{KILL_AT_ENV}={value}: no checkpoint is written before the first step")
    if epochs is not None and (epoch, step) > (epochs, 0):
        raise DataError(f"{KILL_AT_ENV}={value}: the run trains {epochs} epochs")
    return epoch, step


class ResumeCheckpoint(keras.callbacks.Callback):
    """Saves ``(variables, epoch, step)`` every ``every_steps`` steps and at each epoch end.

    The saved variables are ``variables_fn()`` (normally the student's variables, random seed
    states included, and the optimizer's). Files: ``<directory>/state.json`` and
    ``<directory>/variables.npz``, replaced atomically together (the json names the npz it
    belongs to). With ``$TFBLEND_KILL_AT_CHECKPOINT`` set, the process kills itself right after
    the checkpoint at that position (module docstring).

    Args:
      directory: where the state lives (a worker's own temporary dir off the chief).
      variables_fn: returns the list of variables to save and restore.
      every_steps: save period in optimizer steps.
      steps_per_epoch: steps in one epoch.
      offset: ``(epoch, step)`` at which the current ``fit`` call started.
      plateau: the run's :class:`~tfblend.train.plateau.PlateauControl`, whose counters and best
        weights are saved with the variables (None: a fixed schedule).
    """

    def __init__(
        self, directory, variables_fn, every_steps, steps_per_epoch, offset=(0, 0), plateau=None
    ):
        super().__init__()
        self.directory = directory
        self.variables_fn = variables_fn
        self.every_steps = max(int(every_steps), 1)
        self.steps_per_epoch = steps_per_epoch
        self.epoch, self.step = offset
        self.plateau = plateau
        self.kill_at = kill_point(self.every_steps, steps_per_epoch)
        os.makedirs(directory, exist_ok=True)

    def _save(self):
        save_state(self.directory, self.variables_fn(), self.epoch, self.step, self.plateau)
        if (self.epoch, self.step) == self.kill_at:  # the crash drill (module docstring)
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every_steps == 0 and self.step < self.steps_per_epoch:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch, self.step = epoch + 1, 0
        self._save()


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops ``fit`` with a :class:`~tfblend.errors.NonFiniteError` on a NaN/Inf batch loss.

    For models trained by Keras's own ``train_step`` (the teacher); put it first among the
    callbacks, so that no checkpoint is written after the loss went non-finite.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            step = int(self.model.optimizer.iterations.numpy())
            raise NonFiniteError(
                f"training diverged: non-finite loss {float(loss)} at optimizer step {step} "
                f"(batch {batch} of the epoch); lower the learning rate or set a clipnorm"
            )


def save_state(directory: str, variables, epoch: int, step: int, plateau=None) -> None:
    """Writes the resume state atomically: the npz first, then the json that points at it.

    With a :class:`~tfblend.train.plateau.PlateauControl`, its counters go into the json and its
    best weights into the npz (``best_0, best_1, ...`` after the variables ``arr_0, ...``).
    The npz is built in memory and written whole (:func:`tfblend.records.write_file`), so a
    failed write (a full disk) ends in one DataError "cannot write <file>: <cause>", leaves no
    partial or temporary file and no half-closed zip behind (``np.savez`` streaming into a file
    that failed left a ZipFile whose garbage collection printed "Exception ignored"); the
    previous state stays as it was.
    """
    name = f"variables-{epoch:04d}-{step:07d}.npz"
    best = plateau.best_weights if plateau is not None and plateau.best_weights else []
    buffer = io.BytesIO()
    np.savez(
        buffer,
        *[np.asarray(keras.ops.convert_to_numpy(v)) for v in variables],
        **{f"best_{i}": value for i, value in enumerate(best)},
    )
    path = os.path.join(directory, name)
    write_file(path, buffer.getbuffer())
    state = {"epoch": epoch, "step": step, "variables": name}
    if plateau is not None:
        state["plateau"] = plateau.state()
    try:
        write_json(os.path.join(directory, "state.json"), state)
    except BaseException:
        os.remove(path)  # the state.json in place still names the previous npz
        raise
    for stale in os.listdir(directory):
        if stale.startswith("variables-") and stale != name:
            os.remove(os.path.join(directory, stale))


def restore_state(directory: str, variables, plateau=None) -> tuple[int, int]:
    """Loads the resume state into ``variables`` (and ``plateau``, the run's
    :class:`~tfblend.train.plateau.PlateauControl`); returns ``(epoch, step)``, (0, 0) if none."""
    path = os.path.join(directory, "state.json")
    if not os.path.exists(path):
        return 0, 0
    with open(path) as stream:
        state = json.load(stream)
    if (plateau is None) != ("plateau" not in state):
        raise DataError(
            f"{directory}: the resume state was written by a run "
            f"{'with' if 'plateau' in state else 'without'} the plateau schedule; this run "
            f"{'uses' if plateau is not None else 'does not use'} it (delete the directory to "
            "start over)"
        )
    with np.load(os.path.join(directory, state["variables"])) as arrays:
        values = [arrays[f"arr_{i}"] for i in range(len(variables)) if f"arr_{i}" in arrays]
        best = [arrays[f"best_{i}"] for i in range(len(arrays.files)) if f"best_{i}" in arrays]
        extra = len(arrays.files) - len(values) - len(best)
    if extra or len(values) != len(variables):
        raise DataError(
            f"{directory}: the resume state holds {len(values) + extra} variables, the model has "
            f"{len(variables)}; it belongs to another model (delete the directory to start over)"
        )
    if plateau is not None:
        plateau.restore(state["plateau"], best or None)
    if len(values) != len(variables):
        raise DataError(
            f"{directory}: the resume state holds {len(values)} variables, the model has "
            f"{len(variables)}; it belongs to another model (delete the directory to start over)"
        )
    for variable, value in zip(variables, values, strict=True):
        if tuple(variable.shape) != value.shape:
            raise DataError(
                f"{directory}: variable {variable.path} has shape {tuple(variable.shape)}, "
                f"the resume state {value.shape}; delete the directory to start over"
            )
        variable.assign(value)
    return state["epoch"], state["step"]


def fit_resumable(
    model: keras.Model,
    make_dataset,
    *,
    epochs: int,
    steps_per_epoch: int,
    resume_dir: str,
    restore_dir: str | None = None,
    variables_fn,
    every_steps: int,
    callbacks=(),
    validation_data=None,
    verbose="auto",
    plateau=None,
) -> dict[str, list[float]]:
    """``model.fit`` that continues exactly where a killed run stopped.

    Args:
      model: a compiled model (built: its variables must exist).
      make_dataset: ``fn(epoch, repeat) -> tf.data.Dataset`` of the epochs starting at
        ``epoch`` (all later ones too when ``repeat``), deterministic in ``(seed, epoch)``.
      epochs: total epochs of the run.
      steps_per_epoch: optimizer steps per epoch.
      resume_dir: where :class:`ResumeCheckpoint` writes its state (a worker's own directory).
      restore_dir: where the state is read back (default ``resume_dir``). Every worker of a
        multi-worker run restores the chief's state, so the model directory must be on a
        filesystem all workers see, as with ``keras.callbacks.BackupAndRestore``.
      variables_fn: the variables to save and restore (see :class:`ResumeCheckpoint`).
      every_steps: checkpoint period in steps.
      callbacks: further Keras callbacks (TensorBoard, CSV logger, ...).
      validation_data: evaluated at each epoch end.
      verbose: Keras's verbosity.
      plateau: a :class:`~tfblend.train.plateau.PlateauControl` (its schedule is the optimizer's):
        training may then stop before ``epochs``; its state resumes with the variables. Call
        its ``finish`` afterwards to restore the best epoch's weights.

    Returns:
      The merged ``History.history`` of the epochs run by this call.
    """
    if steps_per_epoch < 1:  # Keras would wait forever for the first batch of such an epoch
        raise DataError(
            f"an epoch of {steps_per_epoch} steps cannot be trained; the train split holds "
            "less than one batch (tfblend.train.guards.epoch_steps checks this before a run)"
        )
    kill_point(max(int(every_steps), 1), steps_per_epoch, epochs)  # refused before any step
    epoch, step = restore_state(restore_dir or resume_dir, variables_fn(), plateau)
    history: dict[str, list[float]] = {}
    control = [] if plateau is None else [plateau]

    def run(dataset, first_epoch, last_epoch, steps, offset):
        checkpoint = ResumeCheckpoint(
            resume_dir, variables_fn, every_steps, steps_per_epoch, offset, plateau
        )
        result = model.fit(
            dataset,
            initial_epoch=first_epoch,
            epochs=last_epoch,
            steps_per_epoch=steps,
            callbacks=[StopOnNonFinite(), *control, checkpoint, *callbacks],
            validation_data=validation_data,
            shuffle=False,  # the datasets shuffle themselves, recomputably per epoch
            verbose=verbose,
        )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)

    def stopped():
        return plateau is not None and plateau.stopped is not None

    if step and epoch < epochs:
        partial = make_dataset(epoch, False).skip(step)
        run(partial, epoch, epoch + 1, steps_per_epoch - step, (epoch, step))
        epoch += 1
    if epoch < epochs and not stopped():
        run(make_dataset(epoch, True), epoch, epochs, steps_per_epoch, (epoch, 0))
    return history


class HistoryLogger(keras.callbacks.CSVLogger):
    """Keras's ``CSVLogger`` (the same columns and values, appended to on resume) that adds
    each epoch's row by rewriting ``history.csv`` whole (:func:`tfblend.records.write_file`):
    a failed write ends in one DataError naming the file and leaves the previous history as it
    was, with no open file behind."""

    def __init__(self, filename: str):
        super().__init__(filename, append=True)
        self._previous = ""

    def on_train_begin(self, logs=None):
        self._previous = ""
        if os.path.exists(self.filename):
            try:
                with open(self.filename, newline="") as stream:  # rows end in \r\n (csv)
                    self._previous = stream.read()
            except OSError as error:
                raise DataError(f"cannot read {self.filename}: {error.strerror}") from error
        self.append_header = not self._previous.split("\n", 1)[0]
        self.csv_file, self.writer, self.keys = io.StringIO(), None, None

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)  # the row, into memory
        write_file(self.filename, self._previous + self.csv_file.getvalue())

    def on_train_end(self, logs=None):
        self.csv_file, self.writer = None, None


def standard_callbacks(model_dir: str) -> list[keras.callbacks.Callback]:
    """TensorBoard logs under ``<model_dir>/logs`` and the per-epoch metrics as CSV."""
    return [
        keras.callbacks.TensorBoard(os.path.join(model_dir, "logs"), update_freq="epoch"),
        HistoryLogger(os.path.join(model_dir, "history.csv")),
    ]


def clear_resume_state(resume_dir: str) -> None:
    """Removes the resume state once a run has finished and its model is saved."""
    shutil.rmtree(resume_dir, ignore_errors=True)
