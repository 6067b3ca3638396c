"""Dense chunks vs context windows: what the student learns per frame seen and per second.

Dense training computes every frame's convolutions once per chunk instead of once per window,
but a chunk batch holds runs of consecutive, correlated frames, so per step it may learn less.
This benchmark trains the same student (``--learning_preset``, batch norm, 41-frame
context) from the same initial weights on the corpus's train split, once per batch composition
(``--learning_settings``: ``windows`` or ``chunks:L``, L output frames per chunk, every batch
``--learning_batch`` output frames; ``@bf16`` after a setting trains it in ``mixed_bfloat16``,
e.g. ``windows,windows@bf16`` for the accuracy of bf16 training) and seed, and reads dev frame
accuracy every ``--learning_eval_frames`` frames seen, up to ``--learning_frames``. Every
setting sees the same number of frames per step, the same learning rate schedule (linear
warm-up, then constant) and the same data in a different composition. Wall time counts
training steps only (dev scoring excluded); settings run one after another in one process, so
load from other users of the machine is reported (load average before and after each run).

Rows: one per (setting, seed, evaluation) with frames seen, training seconds and dev accuracy
(the curves), then one summary row per setting: frames/s, the final dev accuracy of every seed,
its mean, and the ratio of frames/s and the dev difference against ``windows``.

The defaults (one seed, windows against chunks of 8, 10,240 frames) keep ``make bench`` to a
few minutes on 2 cores; curves worth comparing need a real corpus and longer runs, e.g.
``--corpus_dir=<corpus> --learning_seeds=0,1 --learning_frames=115200
--learning_eval_frames=23040 --learning_settings=windows,chunks:8,chunks:4``.

Dev accuracy is scored in inference mode over every dev frame with the dense path (the same
numbers as windows in inference mode, tests/test_dense.py), so scoring costs the same for all.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from benchmarks.run import corpus_dir

#: ``--smoke`` sizes: every case's code path on tiny shapes (benchmarks/run.py).
SMOKE = {
    "learning_preset": "tiny",
    "learning_settings": "windows,chunks:8",
    "learning_seeds": "0",
    "learning_batch": 64,
    "learning_frames": 128,
    "learning_eval_frames": 64,
    "learning_warmup": 1,
}


def add_arguments(group):
    group.add_argument("--learning_preset", default="deep")
    group.add_argument("--learning_settings", default="windows,chunks:8")
    group.add_argument("--learning_seeds", default="0")
    group.add_argument("--learning_batch", type=int, default=512, help="output frames per step")
    group.add_argument("--learning_frames", type=int, default=10_240)
    group.add_argument("--learning_eval_frames", type=int, default=5_120)
    group.add_argument("--learning_rate", type=float, default=1e-3)
    group.add_argument("--learning_warmup", type=int, default=100, help="warm-up steps")


def _settings(text: str) -> list[tuple[str, int, str]]:
    """``"windows,chunks:8@bf16"`` -> ``[("windows", 0, "float32"), ("chunks:8@bf16", 8,
    "mixed_bfloat16")]``: (name, chunk frames (0: windows), precision)."""
    settings = []
    for item in filter(None, text.split(",")):
        batches, _, precision = item.partition("@")
        name, _, frames = batches.partition(":")
        if precision not in ("", "bf16"):
            raise ValueError(f"--learning_settings: {item!r}: the only suffix is '@bf16'")
        policy = "mixed_bfloat16" if precision else "float32"
        if name == "windows" and not frames:
            settings.append((item, 0, policy))
        elif name == "chunks" and frames.isdigit() and int(frames) > 0:
            settings.append((item, int(frames), policy))
        else:
            raise ValueError(f"--learning_settings: {item!r} is not 'windows' or 'chunks:L'")
    return settings


def _dataset(train_dir, chunk: int, batch: int, seed: int, context: int):
    from tfblend.pipeline import DatasetOptions, chunk_dataset, frame_dataset

    options = DatasetOptions(context=context, seed=seed, repeat=True)
    if chunk:
        return chunk_dataset(train_dir, options.replace(chunk_frames=chunk), batch_size=batch)
    return frame_dataset(train_dir, options, batch_size=batch)


def _dev_scorer(dev_dir, train_dir, context: int):
    """``fn(model) -> dev frame accuracy``: every dev frame, dense inference-mode pass over
    each edge-padded utterance."""
    import tensorflow as tf

    from tfblend.pipeline import edge_pad, eval_utterances

    utterances = [
        (edge_pad(u["features"], context)[None], u["labels"])
        for u in eval_utterances(dev_dir, cmvn_stats=train_dir)
    ]

    def accuracy(model):
        right = total = 0
        for padded, labels in utterances:
            predicted = tf.argmax(model(padded, training=False)[0], -1, output_type=tf.int32)
            right += int(tf.reduce_sum(tf.cast(predicted == labels, tf.int32)))
            total += int(labels.shape[0])
        return right / total

    return accuracy


def _train_curve(args, student, chunk, seed, train_dir, score) -> list[dict]:
    """Trains ``student`` (fresh) and returns its dev curve as rows."""
    import keras
    import tensorflow as tf

    from tfblend.distill import Distiller

    warmup = keras.optimizers.schedules.PolynomialDecay(
        0.0, args.learning_warmup, args.learning_rate, power=1.0
    )
    distiller = Distiller(student, alpha=1.0)
    distiller.compile(optimizer=keras.optimizers.Adam(warmup))
    steps_per_eval = max(1, args.learning_eval_frames // args.learning_batch)
    evaluations = max(1, args.learning_frames // (steps_per_eval * args.learning_batch))
    batches = iter(_dataset(train_dir, chunk, args.learning_batch, seed, student.context))
    step = tf.function(distiller.train_step)
    first = next(batches)
    step.get_concrete_function(first)  # traced before the clock starts
    rows, seconds = [], 0.0
    for evaluation in range(1, evaluations + 1):
        data = [first] if evaluation == 1 else []
        data += [next(batches) for _ in range(steps_per_eval - len(data))]
        start = time.perf_counter()
        for batch in data:
            logs = step(batch)
        np.asarray(logs["loss"])
        seconds += time.perf_counter() - start
        rows.append(
            {
                "frames_seen": evaluation * steps_per_eval * args.learning_batch,
                "train_seconds": round(seconds, 1),
                "dev_accuracy": round(100 * score(student), 2),
            }
        )
    return rows


def run(args):
    import keras

    from tfblend.models import VGGStudent
    from tfblend.records import read_manifest

    root = corpus_dir(args)
    train_dir, dev_dir = root / "train", root / "dev"
    classes = read_manifest(train_dir)["num_classes"]
    settings = _settings(args.learning_settings)
    seeds = [int(s) for s in args.learning_seeds.split(",") if s]
    rows, finals, speeds = [], {}, {}
    score = None
    for seed in seeds:
        for name, chunk, precision in settings:
            if chunk and args.learning_batch % chunk:
                raise ValueError(f"--learning_batch must be a multiple of {chunk} ({name})")
            keras.utils.set_random_seed(seed)  # the same initial weights for every setting
            student = VGGStudent(
                classes, preset=args.learning_preset, normalization="batch", dtype=precision
            )
            student(np.zeros([1, student.receptive_field, 40], np.float32))
            score = score or _dev_scorer(dev_dir, train_dir, student.context)
            load = os.getloadavg()[0]
            curve = _train_curve(args, student, chunk, seed, train_dir, score)
            for point in curve:
                rows.append({"setting": name, "seed": seed, **point})
            rows[-1]["note"] = f"load {load:.1f} -> {os.getloadavg()[0]:.1f}"
            finals.setdefault(name, []).append(curve[-1]["dev_accuracy"])
            last = curve[-1]
            speeds.setdefault(name, []).append(last["frames_seen"] / last["train_seconds"])
    return rows + _summary(settings, finals, speeds)


def _summary(settings, finals: dict, speeds: dict) -> list[dict]:
    base = settings[0][0]
    rows = []
    for name, _, _ in settings:
        frames_s = statistics.median(speeds[name])
        mean = statistics.mean(finals[name])
        rows.append(
            {
                "setting": f"{name} (summary)",
                "frames_s": round(frames_s, 1),
                "dev_final_per_seed": " / ".join(f"{v:.2f}" for v in finals[name]),
                "dev_final_mean": round(mean, 2),
                f"speed_vs_{base}": round(frames_s / statistics.median(speeds[base]), 2),
                f"dev_vs_{base}": round(mean - statistics.mean(finals[base]), 2),
            }
        )
    return rows
