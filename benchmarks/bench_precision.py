"""float32 against bf16 mixed precision (``train.precision``): training frames/s and the roofs.

One run, in one process, times side by side (rounds of every case in turn, medians over
rounds) the training step of each path in float32 and in Keras's ``mixed_bfloat16`` (the same
weights and inputs; the step of ``benchmarks.bench_dense``: GradientTape, Adam, sparse softmax
cross-entropy):

- ``small_windows``: the ``small`` preset on 41-frame windows, ``--precision_frames`` windows
  per batch;
- ``deep_dense``: the ``deep`` preset (the demo's student) on chunks of ``--precision_chunk``
  output frames, the same output frames per batch;
- ``lstm_teacher``: the BLSTM teacher of ``configs/teacher.yaml`` (2 x 128 per direction) on
  ``--precision_utterances`` utterances of ``--precision_utterance_frames`` frames;
- ``matmul_roof`` and ``conv_roof``: a 2048^3 matmul and a 3x3 conv (64 -> 64 channels on
  [64, 16, 32, 64]) in each precision: the roofs the students' FLOP rates are read against.

The models and the roofs are flags, their defaults the ones named above:
``--precision_windows_preset`` (``small_windows``), ``--precision_dense_preset``
(``deep_dense``), ``--precision_teacher_layers`` and ``--precision_teacher_units``
(``lstm_teacher``), ``--precision_roof_n`` (the matmul roof's n; the conv roof's batch is
n / 32); ``--smoke`` sets them tiny (the case names stay).

Rows: per case and precision, ms per step, frames/s, GFLOP/s (FLOPs counted once, from the
float32 model's traced step: the same arithmetic in either precision) and its share of the
same-precision matmul roof; then the bf16 / fp32 ratio of every case, and goal rows (bf16 at
least 1.6x fp32 for the students' steps; a student's bf16 rate at least 40% of the bf16 roof).
The first row says whether the CPU has bf16 arithmetic (``avx512_bf16`` / ``amx_bf16`` flags):
without it TensorFlow emulates bf16 and the ratios fall below 1.

Whether accuracy holds is the learning benchmark's part: ``--learning_settings
windows,windows@bf16`` (``benchmarks/bench_learning.py``) trains the same student from the same
weights on the same data in both precisions and reports dev accuracy.
"""

from __future__ import annotations

import os
import statistics

import numpy as np

from benchmarks.bench_dense import CLASSES, FEATURES, _timer, _train_step
from benchmarks.machine import cpu_bf16_flags

PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}


#: ``--smoke`` sizes: every case's code path on tiny shapes (benchmarks/run.py).
SMOKE = {
    "precision_frames": 16,
    "precision_chunk": 8,
    "precision_utterances": 2,
    "precision_utterance_frames": 32,
    "precision_rounds": 1,
    "precision_steps": 1,
    "precision_windows_preset": "tiny",
    "precision_dense_preset": "tiny",
    "precision_teacher_layers": 1,
    "precision_teacher_units": 8,
    "precision_roof_n": 64,
}


def add_arguments(group):
    group.add_argument("--precision_frames", type=int, default=512, help="output frames/batch")
    group.add_argument("--precision_chunk", type=int, default=8, help="deep_dense chunk length")
    group.add_argument("--precision_utterances", type=int, default=8)
    group.add_argument("--precision_utterance_frames", type=int, default=300)
    group.add_argument("--precision_rounds", type=int, default=2)
    group.add_argument("--precision_steps", type=int, default=3, help="steps per timed block")
    group.add_argument("--precision_windows_preset", default="small", help="small_windows's")
    group.add_argument("--precision_dense_preset", default="deep", help="deep_dense's preset")
    group.add_argument("--precision_teacher_layers", type=int, default=2, help="BLSTM layers")
    group.add_argument("--precision_teacher_units", type=int, default=128, help="per direction")
    group.add_argument("--precision_roof_n", type=int, default=2048, help="matmul roof size n")


def _models(precision: str, args) -> dict:
    """The three models in ``precision``, seeded alike (the same weights in both precisions)."""
    import keras

    from tfblend.models import LSTMTeacher, VGGStudent

    windows, dense = args.precision_windows_preset, args.precision_dense_preset
    layers, units = args.precision_teacher_layers, args.precision_teacher_units
    models = {}
    for name, build in (
        ("small_windows", lambda: VGGStudent(CLASSES, preset=windows, dtype=precision)),
        ("deep_dense", lambda: VGGStudent(CLASSES, preset=dense, dtype=precision)),
        (
            "lstm_teacher",
            lambda: LSTMTeacher(CLASSES, num_layers=layers, units=units, dtype=precision),
        ),
    ):
        keras.utils.set_random_seed(0)
        models[name] = build()
    return models


def _inputs(rng, args, width: int) -> dict:
    import tensorflow as tf

    frames, chunk = args.precision_frames, args.precision_chunk
    if frames % chunk:
        raise ValueError(f"--precision_frames={frames} must be a multiple of --precision_chunk")
    labels = rng.integers(0, CLASSES, frames).astype(np.int32)
    windows = rng.normal(size=(frames, width, FEATURES)).astype(np.float32)
    chunks = rng.normal(size=(frames // chunk, chunk + width - 1, FEATURES)).astype(np.float32)
    shape = (args.precision_utterances, args.precision_utterance_frames)
    utterances = rng.normal(size=(*shape, FEATURES)).astype(np.float32)
    return {
        "small_windows": (tf.constant(windows), tf.constant(labels)),
        "deep_dense": (tf.constant(chunks), tf.constant(labels.reshape(-1, chunk))),
        "lstm_teacher": (
            tf.constant(utterances),
            tf.constant(rng.integers(0, CLASSES, shape).astype(np.int32)),
        ),
    }


def _roofs(rng, steps: int, n: int) -> tuple[dict, dict]:
    """Timed roof cases ``{case@precision: run}`` and their FLOPs per op: an n x n matmul and
    the 3x3 conv on [n / 32, 16, 32, 64] (n = 2048: [64, 16, 32, 64])."""
    import tensorflow as tf

    batch = max(1, n // 32)
    a = rng.normal(size=(n, n)).astype(np.float32)
    x = rng.normal(size=(batch, 16, 32, 64)).astype(np.float32)
    k = rng.normal(size=(3, 3, 64, 64)).astype(np.float32)
    matmul = tf.function(lambda a: tf.reduce_sum(tf.cast(tf.matmul(a, a), tf.float32)))
    conv = tf.function(
        lambda x, k: tf.reduce_sum(tf.cast(tf.nn.conv2d(x, k, 1, "SAME"), tf.float32))
    )
    cases, flops = {}, {}
    for short, dtype in (("fp32", tf.float32), ("bf16", tf.bfloat16)):
        cases[f"matmul_roof@{short}"] = _timer(matmul, (tf.constant(a, dtype),), steps)
        cases[f"conv_roof@{short}"] = _timer(
            conv, (tf.constant(x, dtype), tf.constant(k, dtype)), steps
        )
        flops[f"matmul_roof@{short}"] = 2 * n**3
        flops[f"conv_roof@{short}"] = 2 * batch * 16 * 32 * 9 * 64 * 64
    return cases, flops


def run(args):
    from tfblend.models.flops import train_step_flops

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    built = {short: _models(policy, args) for short, policy in PRECISIONS.items()}
    width = built["fp32"]["small_windows"].receptive_field
    if built["fp32"]["deep_dense"].receptive_field != width:
        raise ValueError("the two --precision_*_preset must see as many frames")
    inputs = _inputs(rng, args, width)
    for models in built.values():
        for name, model in models.items():
            model(inputs[name][0][:1])
    cases, flops = _roofs(rng, args.precision_steps, args.precision_roof_n)
    frames = {}
    for name, (x, labels) in inputs.items():
        trips = x.shape[1] if name == "lstm_teacher" else None
        flops_per_step = train_step_flops(built["fp32"][name], tuple(x.shape), loop_trips=trips)
        for short in PRECISIONS:
            step = _train_step(built[short][name])
            cases[f"{name}@{short}"] = _timer(step, (x, labels), args.precision_steps)
            flops[f"{name}@{short}"] = flops_per_step
            frames[f"{name}@{short}"] = int(np.prod(labels.shape))
    times = {case: [] for case in cases}
    for _ in range(args.precision_rounds):
        for case, timed in cases.items():
            times[case].append(timed())
    seconds = {case: statistics.median(values) for case, values in times.items()}
    rows = [{"case": "cpu", "note": f"bf16 flags: {cpu_bf16_flags()}"}]
    rows += _speed_rows(seconds, flops, frames)
    rows += _ratio_rows(seconds, flops, inputs)
    rows[-1]["note"] = f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    return rows


def _speed_rows(seconds: dict, flops: dict, frames: dict) -> list[dict]:
    rows = []
    for case, time in seconds.items():
        roof = case.split("@")[1]
        rate = flops[case] / time
        row = {"case": case, "ms": 1e3 * time, "gflop_s": rate / 1e9}
        if case in frames:
            row["frames_s"] = frames[case] / time
            row["of_roof"] = rate / (flops[f"matmul_roof@{roof}"] / seconds[f"matmul_roof@{roof}"])
        rows.append(row)
    return rows


def _ratio_rows(seconds: dict, flops: dict, inputs: dict) -> list[dict]:
    rows = []
    for name in ("matmul_roof", "conv_roof", *inputs):
        ratio = seconds[f"{name}@fp32"] / seconds[f"{name}@bf16"]
        row = {"case": f"bf16 / fp32 speed: {name}", "ratio": ratio}
        if name in ("small_windows", "deep_dense"):
            row |= {"goal": ">= 1.6", "met": bool(ratio >= 1.6)}
        rows.append(row)
    bf16_roof = flops["matmul_roof@bf16"] / seconds["matmul_roof@bf16"]
    for name in ("small_windows", "deep_dense"):
        share = flops[f"{name}@bf16"] / seconds[f"{name}@bf16"] / bf16_roof
        rows.append(
            {
                "case": f"{name} bf16 FLOP rate / bf16 matmul roof",
                "ratio": share,
                "goal": ">= 0.4",
                "met": bool(share >= 0.4),
            }
        )
    return rows
