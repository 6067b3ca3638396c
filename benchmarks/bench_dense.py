"""Dense vs window computation of the time-valid VGG student: training and serving frames/s.

One run, in one process, times side by side (rounds of every case in turn, so that load from
other users of the machine hits every case alike; medians over rounds):

- training steps (a minimal custom step: GradientTape, Adam, sparse softmax cross-entropy on
  per-frame logits), every case on ``--dense_frames`` output frames per batch:
  - ``deep_dense``: the ``deep`` preset (41 frames, batch norm: the defaults) on chunks
    ``[frames / L, L + 2W, D]`` (L = ``--dense_chunk``);
  - ``deep_windows``: the same model object (same weights) on windows ``[frames, 2W+1, D]``;
  - ``small_windows``: the ``small`` preset on windows;
  - ``deep_dense_framenorm``: the ``deep`` preset with per-frame normalisation instead of
    fused batch norm, on the same chunks (what the exact normalisation costs);
  - ``matmul_roof``: an fp32 2048 x 2048 matmul, the roof the dense FLOP rate is read against;
- serving (SavedModels written by ``tfblend.export.export_model`` and loaded back, as a server
  loads them), on one utterance of ``--dense_utterance_frames`` frames: the deep student's
  ``utterance`` signature (one dense pass), its ``serving_default`` on that utterance's windows,
  and the LSTM teacher's export (2 x BLSTM 128, configs/teacher.yaml) on ``[1, T, D]``.

The models are flags, their defaults the ones named above: ``--dense_preset`` (the ``deep_*``
cases' preset), ``--dense_windows_preset`` (``small_windows``), ``--dense_teacher_layers`` and
``--dense_teacher_units`` (the LSTM teacher), ``--dense_roof_n`` (the matmul roof's size);
``--smoke`` sets them tiny (the case names stay).

FLOPs are counted from the traced graphs (``tfblend.models.flops``): the dense rate uses what a
chunk step actually computes, not the window count. Weights are random (speed does not depend
on them); inputs are random normal features.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

CLASSES = 5126
FEATURES = 40
ROOF_N = 2048


#: ``--smoke`` sizes: every case's code path on tiny shapes (benchmarks/run.py).
SMOKE = {
    "dense_frames": 16,
    "dense_chunk": 8,
    "dense_rounds": 1,
    "dense_steps": 1,
    "dense_utterance_frames": 64,
    "dense_preset": "tiny",
    "dense_windows_preset": "tiny",
    "dense_teacher_layers": 1,
    "dense_teacher_units": 8,
    "dense_roof_n": 64,
}


def add_arguments(group):
    group.add_argument("--dense_frames", type=int, default=512, help="output frames per batch")
    group.add_argument("--dense_chunk", type=int, default=64, help="L, output frames per chunk")
    group.add_argument("--dense_rounds", type=int, default=2)
    group.add_argument("--dense_steps", type=int, default=3, help="steps per timed block")
    group.add_argument("--dense_utterance_frames", type=int, default=1000)
    group.add_argument("--dense_preset", default="deep", help="VGG preset of the deep_* cases")
    group.add_argument("--dense_windows_preset", default="small", help="small_windows's preset")
    group.add_argument("--dense_teacher_layers", type=int, default=2, help="LSTM teacher layers")
    group.add_argument("--dense_teacher_units", type=int, default=128, help="units per direction")
    group.add_argument("--dense_roof_n", type=int, default=ROOF_N, help="matmul roof size n")


def _train_step(model):
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step(x, labels):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return step


def _timer(function, args, steps):
    def run():
        start = time.perf_counter()
        for _ in range(steps):
            out = function(*args)
        np.asarray(out)  # wait for the last step
        return (time.perf_counter() - start) / steps

    run()  # trace and warm up
    return run


def _export(model, directory, kind, context):
    from tfblend.export import export_model

    log_priors = np.full(CLASSES, -np.log(CLASSES), np.float32)
    return export_model(
        model, directory, kind=kind, feature_dim=FEATURES, log_priors=log_priors, context=context
    )


def run(args):
    import keras

    load_before = os.getloadavg()[0]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    frames, chunk = args.dense_frames, args.dense_chunk
    if frames % chunk:
        raise ValueError(f"--dense_frames={frames} must be a multiple of --dense_chunk={chunk}")
    models, train_cases, step_flops = _training_cases(rng, args)
    deep = models["deep"]
    utterance = rng.normal(size=(args.dense_utterance_frames, FEATURES)).astype(np.float32)
    teacher = (args.dense_teacher_layers, args.dense_teacher_units)
    with tempfile.TemporaryDirectory(prefix="tfblend-bench-dense-") as tmp:
        serve_cases = _serving_cases(deep, utterance, teacher, tmp)
        cases = {**train_cases, **serve_cases}
        times = {name: [] for name in cases}
        for _ in range(args.dense_rounds):
            for name, timed in cases.items():
                times[name].append(timed())
    seconds = {name: statistics.median(values) for name, values in times.items()}
    rows = _speed_rows(seconds, step_flops, train_cases, serve_cases, frames, len(utterance))
    rows += _goal_rows({row["case"]: row.get("frames_s") for row in rows}, rows[0]["of_roof"])
    flops = _deep_flops(deep, chunk)
    rows.append(
        {
            "case": f"{args.dense_preset} preset",
            "note": (
                f"{deep.count_params():,} weights; forward {flops['window'] / 1e6:.1f} MFLOP/frame"
                f" on windows, {flops['dense'] / 1e6:.1f} dense (chunks of {chunk}); "
                f"{frames} frames/batch; load {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
            ),
        }
    )
    return rows


def _deep_flops(deep, chunk: int) -> dict:
    from tfblend.models.flops import frame_flops

    return {key: frame_flops(deep, FEATURES, chunk=chunk)[key] for key in ("window", "dense")}


def _training_cases(rng, args) -> tuple:
    """The models (``deep``, ``deep_frame``, ``small``: keys, whatever their presets), the timed
    training cases (warmed up, in this order) and their FLOPs per step."""
    import tensorflow as tf

    from tfblend.models import VGGStudent
    from tfblend.models.flops import train_step_flops

    frames, chunk, steps, roof_n = (
        args.dense_frames,
        args.dense_chunk,
        args.dense_steps,
        args.dense_roof_n,
    )
    deep = VGGStudent(CLASSES, preset=args.dense_preset)
    deep_frame = VGGStudent(CLASSES, preset=args.dense_preset, normalization="frame")
    small = VGGStudent(CLASSES, preset=args.dense_windows_preset)
    if small.receptive_field != deep.receptive_field:
        raise ValueError("--dense_windows_preset must see as many frames as --dense_preset")
    width = deep.receptive_field
    for model in (deep, deep_frame, small):
        model.build((None, width, FEATURES))

    windows = tf.constant(rng.normal(size=(frames, width, FEATURES)).astype(np.float32))
    window_labels = tf.constant(rng.integers(0, CLASSES, frames).astype(np.int32))
    chunks = tf.constant(
        rng.normal(size=(frames // chunk, chunk + width - 1, FEATURES)).astype(np.float32)
    )
    chunk_labels = tf.reshape(window_labels, [frames // chunk, chunk])
    deep_step, deep_frame_step = _train_step(deep), _train_step(deep_frame)
    a = tf.constant(rng.normal(size=(roof_n, roof_n)).astype(np.float32))
    matmul = tf.function(lambda a: tf.reduce_sum(tf.matmul(a, a)))
    train_cases = {
        "deep_dense": _timer(deep_step, (chunks, chunk_labels), steps),
        "deep_windows": _timer(_train_step(deep), (windows, window_labels), steps),
        "small_windows": _timer(_train_step(small), (windows, window_labels), steps),
        "deep_dense_framenorm": _timer(deep_frame_step, (chunks, chunk_labels), steps),
        "matmul_roof": _timer(matmul, (a,), steps),
    }
    step_flops = {
        "deep_dense": train_step_flops(deep, tuple(chunks.shape)),
        "deep_windows": train_step_flops(deep, (frames, width, FEATURES)),
        "small_windows": train_step_flops(small, (frames, width, FEATURES)),
        "deep_dense_framenorm": train_step_flops(deep_frame, tuple(chunks.shape)),
        "matmul_roof": 2 * roof_n**3,
    }
    models = {"deep": deep, "deep_frame": deep_frame, "small": small}
    return models, train_cases, step_flops


def _serving_cases(deep, utterance, teacher_size: tuple, tmp: str) -> dict:
    """The timed serving cases of exports written to ``tmp`` (warmed up); ``teacher_size``:
    the LSTM teacher's (layers, units per direction)."""
    import tensorflow as tf

    from tfblend.models import LSTMTeacher
    from tfblend.pipeline import splice

    spliced = splice(tf.constant(utterance), deep.context)
    layers, units = teacher_size
    teacher = LSTMTeacher(CLASSES, num_layers=layers, units=units, bidirectional=True)
    teacher.build((None, None, FEATURES))
    cnn_export = _export(deep, f"{tmp}/cnn/1", "window", deep.context)
    student_sigs = tf.saved_model.load(cnn_export).signatures
    teacher_sig = tf.saved_model.load(
        _export(teacher, f"{tmp}/lstm/1", "sequence", None)
    ).signatures["serving_default"]

    def posteriors(signature, **inputs):
        return lambda: signature(**inputs)["posteriors"]

    lengths = tf.constant([len(utterance)], tf.int32)
    return {
        "serve_utterance_dense": _timer(
            posteriors(student_sigs["utterance"], features=tf.constant(utterance)), (), 1
        ),
        "serve_default_windows": _timer(
            posteriors(student_sigs["serving_default"], features=spliced), (), 1
        ),
        "serve_lstm_teacher": _timer(
            posteriors(teacher_sig, features=tf.constant(utterance[None]), lengths=lengths),
            (),
            1,
        ),
    }


def _speed_rows(seconds, step_flops, train_cases, serve_cases, frames, utterance_frames):
    rows = []
    roof = step_flops["matmul_roof"] / seconds["matmul_roof"]
    for name in train_cases:
        rate = step_flops[name] / seconds[name]
        row = {"case": name, "ms": 1e3 * seconds[name], "gflop_s": rate / 1e9}
        if name != "matmul_roof":
            row |= {
                "frames_s": frames / seconds[name],
                "train_mflop_frame": step_flops[name] / frames / 1e6,
                "of_roof": rate / roof,
            }
        rows.append(row)
    for name in serve_cases:
        rows.append(
            {"case": name, "ms": 1e3 * seconds[name], "frames_s": utterance_frames / seconds[name]}
        )
    return rows


def _goal_rows(fps: dict, dense_of_roof: float) -> list:
    goals = (
        ("dense/windows training (deep)", fps["deep_dense"] / fps["deep_windows"], 3.0),
        ("deep dense / small windows training", fps["deep_dense"] / fps["small_windows"], 1.0),
        ("dense training FLOP rate / matmul roof", dense_of_roof, 0.6),
        (
            "frame norm / batch norm training speed",
            fps["deep_dense_framenorm"] / fps["deep_dense"],
            0,
        ),
        (
            "utterance (dense) / serving_default serving",
            fps["serve_utterance_dense"] / fps["serve_default_windows"],
            3.0,
        ),
        (
            "utterance (dense) / LSTM export serving",
            fps["serve_utterance_dense"] / fps["serve_lstm_teacher"],
            2.0,
        ),
    )
    rows = []
    for name, ratio, goal in goals:
        row = {"case": name, "ratio": ratio}
        if goal:
            row |= {"goal": f">= {goal:g}", "met": bool(ratio >= goal)}
        else:
            row["note"] = "the cost of exact per-frame normalisation"
        rows.append(row)
    return rows
