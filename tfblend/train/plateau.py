"""Training to a dev plateau: learning-rate cuts, best-dev weights, and budgets.

The paper trained its teacher and its student until the validation frame error stopped
improving: the learning rate is cut when the dev metric has not improved for ``patience``
epochs (optionally rolling the weights back to the best epoch first), training stops when the
rate falls below a floor, and the best epoch's weights are the result. This module holds that
schedule for any model trained by :func:`tfblend.train.fit.fit_resumable`:

- :class:`PlateauSchedule`: the learning rate ``peak x warm-up ramp x scale``; ``scale`` is a
  variable, so the rate can be cut between epochs without rebuilding the optimizer;
- :class:`PlateauControl`: the Keras callback that watches the dev metric at each epoch end,
  keeps the best weights, cuts ``scale``, rolls back, and stops on the floor or a budget. Its
  whole state (the counters and the best weights) is saved with the resume state, so a run
  killed at any point continues to the same weights and the same decisions.
"""

import time

import keras
import numpy as np
import tensorflow as tf

#: Why a plateau-scheduled run stopped (``model.json``'s ``training.stopped``).
STOP_FLOOR = "learning rate below the floor"
STOP_HOURS = "time budget"
STOP_EPOCHS = "epoch budget"


@keras.saving.register_keras_serializable(package="tfblend")
class PlateauSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``learning_rate x min(1, step / warmup_steps) x scale``; ``scale`` starts at 1.

    ``scale`` is a float32 variable (create the schedule under the strategy's scope, as the
    optimizer); :class:`PlateauControl` multiplies it by its factor at each plateau.
    """

    def __init__(self, learning_rate, warmup_steps=0):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.scale = keras.Variable(1.0, dtype="float32", trainable=False, name="lr_scale")

    def __call__(self, step):
        rate = self.learning_rate * self.scale
        if not self.warmup_steps:
            return rate
        ramp = tf.minimum(tf.cast(step, tf.float32) / float(self.warmup_steps), 1.0)
        return rate * ramp

    def current(self) -> float:
        """The post-warm-up learning rate now: ``learning_rate x scale``."""
        return self.learning_rate * float(keras.ops.convert_to_numpy(self.scale))

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}


class PlateauControl(keras.callbacks.Callback):
    """Cuts the learning rate on a dev plateau, keeps the best weights, stops at the floor.

    At each epoch end the dev metric ``monitor`` (e.g. ``val_accuracy``, higher is better, or
    ``val_loss``, lower is better) is compared with the best so far. An improvement of more than
    ``min_delta`` records the epoch and a copy of ``weights_fn()``; otherwise, after
    ``patience`` epochs without one, the weights are rolled back to the best epoch's (when
    ``rollback``), ``schedule.scale`` is multiplied by ``factor`` and the count starts again.
    Training stops when the learning rate falls below ``min_learning_rate`` or when
    ``max_seconds`` of training (summed over resumed runs) are spent. Call :meth:`finish` after
    ``fit``: it puts the best epoch's weights back.

    Put it before the resume checkpoint among the callbacks, so that the state written at an
    epoch end includes this epoch's decision (:meth:`state`, :meth:`restore`).

    Args:
      schedule: the optimizer's :class:`PlateauSchedule`.
      weights_fn: the variables that make up "the model" (a student's or teacher's weights).
      monitor: the logged dev metric to watch.
      patience: epochs without improvement before a cut.
      factor: the cut, in (0, 1).
      min_delta: the smallest change that counts as an improvement (the metric's units).
      min_learning_rate: stop once the learning rate is below this.
      rollback: restore the best weights at each cut (Newbob style, as the paper's teacher).
      max_seconds: training time budget (0: none).
    """

    def __init__(
        self,
        schedule: PlateauSchedule,
        weights_fn,
        *,
        monitor: str = "val_accuracy",
        patience: int = 1,
        factor: float = 0.5,
        min_delta: float = 0.0,
        min_learning_rate: float = 0.0,
        rollback: bool = True,
        max_seconds: float = 0.0,
    ):
        super().__init__()
        self.schedule = schedule
        self.weights_fn = weights_fn
        self.monitor = monitor
        self.higher_is_better = "loss" not in monitor and "ce" not in monitor
        self.patience = int(patience)
        self.factor = float(factor)
        self.min_delta = float(min_delta)
        self.min_learning_rate = float(min_learning_rate)
        self.rollback = bool(rollback)
        self.max_seconds = float(max_seconds)
        self.best = None
        self.best_epoch = None
        self.wait = 0
        self.cuts = 0
        self.stopped = None
        self.seconds = 0.0
        self.epochs_run = 0
        self.best_weights = None
        self._started = None

    def state(self) -> dict:
        """The counters (JSON-able); the best weights are :attr:`best_weights`."""
        return {
            "monitor": self.monitor,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "cuts": self.cuts,
            "stopped": self.stopped,
            "seconds": self.seconds + self._running(),
            "epochs_run": self.epochs_run,
            "scale": float(keras.ops.convert_to_numpy(self.schedule.scale)),
            "learning_rate": self.schedule.current(),
        }

    def restore(self, state: dict, best_weights) -> None:
        """Continues from :meth:`state` and the saved best weights."""
        for key in ("best", "best_epoch", "wait", "cuts", "stopped", "seconds", "epochs_run"):
            setattr(self, key, state[key])
        self.schedule.scale.assign(state["scale"])
        self.best_weights = best_weights

    def _running(self) -> float:
        return 0.0 if self._started is None else time.time() - self._started

    def on_train_begin(self, logs=None):
        self._started = time.time()

    def on_train_end(self, logs=None):
        self.seconds += self._running()
        self._started = None

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.higher_is_better:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.monitor not in logs:
            raise KeyError(
                f"the plateau schedule watches {self.monitor!r}, which this run does not log "
                f"(it logs {sorted(logs)}); validation data is needed"
            )
        value = float(logs[self.monitor])
        logs["learning_rate"] = self.schedule.current()
        self.epochs_run = epoch + 1
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_weights = [np.array(keras.ops.convert_to_numpy(v)) for v in self.weights_fn()]
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.wait = 0
                self.cuts += 1
                if self.rollback:
                    self._assign_best()
                self.schedule.scale.assign(self.schedule.scale * self.factor)
        if self.schedule.current() < self.min_learning_rate:
            self.stopped = STOP_FLOOR
        elif self.max_seconds and self.seconds + self._running() >= self.max_seconds:
            self.stopped = STOP_HOURS
        if self.stopped:
            self.model.stop_training = True

    def _assign_best(self) -> None:
        for variable, value in zip(self.weights_fn(), self.best_weights, strict=True):
            variable.assign(value)

    def finish(self) -> dict:
        """Puts the best epoch's weights back; returns what ``model.json`` records."""
        if self.best_weights is not None:
            self._assign_best()
        return {
            "schedule": "plateau",
            "epochs_run": self.epochs_run,
            "best_epoch": None if self.best_epoch is None else self.best_epoch + 1,
            f"best_{self.monitor}": self.best,
            "learning_rate_cuts": self.cuts,
            "final_learning_rate": self.schedule.current(),
            "stopped": self.stopped or STOP_EPOCHS,
            "train_seconds": round(self.seconds, 1),
        }


def plateau_control(model: keras.Model, weights_fn, experiment) -> PlateauControl | None:
    """The :class:`PlateauControl` of a compiled ``model`` whose optimizer runs the plateau
    schedule of ``experiment`` (a :class:`~tfblend.config.ExperimentConfig`); None otherwise."""
    schedule = model.optimizer._learning_rate
    if not isinstance(schedule, PlateauSchedule):
        return None
    optimizer, train = experiment.optimizer, experiment.train
    return PlateauControl(
        schedule,
        weights_fn,
        monitor=train.monitor,
        patience=optimizer.plateau_patience,
        factor=optimizer.plateau_factor,
        min_delta=optimizer.plateau_min_delta,
        min_learning_rate=optimizer.min_learning_rate,
        max_seconds=train.max_hours * 3600.0,
    )
