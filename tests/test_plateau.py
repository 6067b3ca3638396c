"""Training to a dev plateau: learning-rate cuts, rollback to the best epoch, the stop at the
floor, the record in model.json, and exact resume of a killed plateau-scheduled run."""

import json
import subprocess
import sys

import keras
import numpy as np
from test_training import _max_difference, _weights, run_killed_at

from tfblend.train.plateau import STOP_FLOOR, PlateauControl, PlateauSchedule

# A tiny DNN whose dev accuracy never improves by 0.5: every epoch after the first is a plateau,
# so the rate is cut (and the weights rolled back) at epochs 2 and 3, and the run stops at the
# floor (0.003 / 4) after 3 epochs of the 12 allowed.
PLATEAU = (
    "model.dnn.hidden_units=[64],data.shuffle_buffer=4096,train.checkpoint_every_steps=5,"
    "optimizer.schedule=plateau,optimizer.learning_rate=0.003,optimizer.warmup_steps=10,"
    "optimizer.plateau_min_delta=0.5,optimizer.min_learning_rate=0.0008"
)


def _control(**kwargs):
    model = keras.Sequential([keras.Input([3]), keras.layers.Dense(2)])
    schedule = PlateauSchedule(0.01)
    control = PlateauControl(schedule, lambda: model.weights, **kwargs)
    control.set_model(model)
    model.stop_training = False  # what fit sets before the first epoch
    return model, schedule, control


def test_plateau_cuts_rolls_back_and_stops_at_the_floor():
    model, schedule, control = _control(patience=2, factor=0.5, min_learning_rate=0.002)
    kernel = model.weights[0]
    control.on_train_begin()
    kernel.assign(np.full([3, 2], 1.0, np.float32))
    control.on_epoch_end(0, {"val_accuracy": 0.30})  # best so far: epoch 0, kernel 1
    kernel.assign(np.full([3, 2], 2.0, np.float32))
    control.on_epoch_end(1, {"val_accuracy": 0.25})  # 1 epoch without improvement: no cut yet
    assert schedule.current() == 0.01 and np.all(kernel.numpy() == 2.0)
    control.on_epoch_end(2, {"val_accuracy": 0.29})  # patience reached: roll back, cut
    assert np.isclose(schedule.current(), 0.005) and np.all(kernel.numpy() == 1.0)
    kernel.assign(np.full([3, 2], 3.0, np.float32))
    logs = {"val_accuracy": 0.35}
    control.on_epoch_end(3, logs)  # a new best: kept, the count restarts
    assert logs["learning_rate"] == 0.005 and control.best_epoch == 3
    kernel.assign(np.full([3, 2], 4.0, np.float32))
    control.on_epoch_end(4, {"val_accuracy": 0.1})
    control.on_epoch_end(5, {"val_accuracy": 0.1})  # cut to 0.0025
    assert not model.stop_training
    kernel.assign(np.full([3, 2], 5.0, np.float32))
    control.on_epoch_end(6, {"val_accuracy": 0.1})
    control.on_epoch_end(7, {"val_accuracy": 0.1})  # cut to 0.00125 < floor: stop
    assert model.stop_training and control.stopped == STOP_FLOOR
    kernel.assign(np.full([3, 2], 6.0, np.float32))
    record = control.finish()
    assert np.all(kernel.numpy() == 3.0), "the best epoch's weights are the result"
    assert record["best_epoch"] == 4 and record["epochs_run"] == 8
    assert record["learning_rate_cuts"] == 3 and record["stopped"] == STOP_FLOOR


def test_plateau_on_a_loss_prefers_lower_values():
    _, schedule, control = _control(monitor="val_loss", patience=1)
    control.on_epoch_end(0, {"val_loss": 2.0})
    control.on_epoch_end(1, {"val_loss": 1.5})
    assert control.best_epoch == 1 and schedule.current() == 0.01
    control.on_epoch_end(2, {"val_loss": 1.6})
    assert schedule.current() == 0.005


def _dev_columns(model_dir):
    rows = [line.split(",") for line in (model_dir / "history.csv").read_text().splitlines()]
    keep = [
        i for i, name in enumerate(rows[0]) if name.startswith("val_") or name == "learning_rate"
    ]
    return [[row[i] for i in keep] for row in rows]


def _plateau_args(corpus, model_dir):
    return [
        sys.executable,
        "-m",
        "tfblend.steps.train_student",
        f"--corpus_dir={corpus}",
        f"--model_dir={model_dir}",
        "--model=dnn",
        "--epochs=12",
        "--batch_size=64",
        f"--params_override={PLATEAU}",
    ]


def test_killed_plateau_run_resumes_to_the_same_weights_and_decisions(tiny_corpus, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(
        _plateau_args(tiny_corpus, straight), check=True, capture_output=True, timeout=600
    )
    record = json.loads((straight / "model.json").read_text())["training"]
    assert record["stopped"] == STOP_FLOOR and record["epochs_run"] == 3
    assert record["learning_rate_cuts"] == 2 and record["best_epoch"] == 1
    history = (straight / "history.csv").read_text().splitlines()
    assert history[0].split(",").count("learning_rate") == 1 and len(history) == 4

    killed = tmp_path / "killed"
    # Killed mid-epoch in the third epoch (step 5), after the first cut and rollback (at the end
    # of the second) and before the second.
    position = run_killed_at(_plateau_args(tiny_corpus, killed), killed, "2:5")
    assert (position["epoch"], position["step"], position["plateau"]["cuts"]) == (2, 5, 1)
    resumed = subprocess.run(
        _plateau_args(tiny_corpus, killed), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _max_difference(_weights(straight), _weights(killed)) < 1e-6
    # Dev metrics and rates per epoch agree (the training metrics of the resumed epoch cover
    # only the steps taken after the resume).
    assert _dev_columns(killed) == _dev_columns(straight)
    again = json.loads((killed / "model.json").read_text())["training"]
    assert {k: v for k, v in again.items() if k != "train_seconds"} == {
        k: v for k, v in record.items() if k != "train_seconds"
    }
