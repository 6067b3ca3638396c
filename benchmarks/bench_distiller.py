"""Training-step cost of blending: hard labels vs stored sparse/dense targets vs online teachers.

One run times, side by side, the training step of the same student (``VGGStudent``, preset
``--distiller_preset``, batch ``--distiller_batch`` windows of 2W+1 = 41 frames x 40 features,
5,126 classes) under:

- ``hard_only``: plain Keras ``compile(loss=SparseCategoricalCrossentropy)`` + ``fit`` step;
- ``distiller_hard``: the Distiller with alpha = 1 (its overhead over plain Keras);
- ``stored_sparse``: stored top-k targets, k = ``--distiller_k`` (51 = 1% of 5,126), renormalised,
  validated in the step (the default blend);
- ``stored_dense``: stored dense probabilities ``[B, 5126]`` (``DenseSoftCrossEntropy``);
- ``online_lstm``: the LSTM teacher (by default configs/teacher.yaml's 2 x BLSTM 128, 1.9M weights)
  called in every step on the 41-frame window, centre frame's logits;
- ``online_dnn``: the Distiller with a DNN teacher (3 x 1024) on the same windows, and
  ``keras_distiller_dnn``: ``keras.distillation.Distiller`` with the same teacher
  (``LogitsDistillation``; ``student_loss_weight`` 0.5) for comparison;
- ``keras_distiller_lstm``: not timed: keras.distillation.Distiller cannot take the LSTM teacher
  (its outputs are per frame ``[B, T, classes]``, the student's ``[B, classes]``); the row
  records the error it raises.

Method: each case runs in its own worker process (so each has its own peak memory), all built
and warmed up first; then ``--distiller_rounds`` rounds each time ``--distiller_steps`` steps of
every case in turn, plus ``--distiller_roof_ops`` ops of the matmul roof (fp32 2048 x 2048
matmul) and of a conv roof (3x3 conv 64 -> 64), so that load from other users of the shared
machine hits every case alike. ``--distiller_in_process`` (the ``--smoke`` setting) runs the
same cases and rounds one after another in this process instead, without the workers' start-up
(a fresh TensorFlow each); its memory figures are then the whole process's. Times are
medians over rounds; ratios are medians of the per-round ratios. Steps read one in-memory batch
repeated (the input pipeline has its own benchmark). FLOPs are counted from the traced graphs
(``tfblend.models.flops``): the student's training step (forward + backward) per frame, and the
online teacher's forward pass per window. ``peak_rss_mb`` is the worker's peak resident memory
during the timed steps (TensorFlow runtime, model, optimizer, batch and step temporaries);
``step_mem_mb`` is that peak minus the resident memory just before the timed steps.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

import numpy as np

from benchmarks import machine

CLASSES = 5126
FEATURES = 40
CASES = (
    "hard_only",
    "distiller_hard",
    "stored_sparse",
    "stored_dense",
    "online_lstm",
    "online_dnn",
    "keras_distiller_dnn",
)
GOALS = (
    ("stored_sparse", "hard_only", 1.10, "stored sparse <= 1.10x hard-only"),
    ("stored_sparse", "online_lstm", 0.50, "stored sparse <= 0.5x online LSTM teacher"),
)
ROOF_GOAL = 0.40


#: ``--smoke`` sizes: every case's code path on tiny shapes (benchmarks/run.py).
SMOKE = {
    "distiller_preset": "tiny",
    "distiller_batch": 8,
    "distiller_k": 4,
    "distiller_teacher_layers": 1,
    "distiller_teacher_units": 8,
    "distiller_rounds": 1,
    "distiller_steps": 1,
    "distiller_roof_ops": 1,
    "distiller_in_process": True,
}


def add_arguments(group):
    group.add_argument("--distiller_preset", default="small", help="VGGStudent preset")
    group.add_argument("--distiller_batch", type=int, default=256)
    group.add_argument("--distiller_context", type=int, default=20, help="W: windows of 2W+1")
    group.add_argument("--distiller_k", type=int, default=51, help="stored top-k entries")
    group.add_argument(
        "--distiller_teacher_layers",
        type=int,
        default=2,
        help="online LSTM teacher: BLSTM layers (configs/teacher.yaml: 2)",
    )
    group.add_argument(
        "--distiller_teacher_units",
        type=int,
        default=128,
        help="online LSTM teacher: units per direction (configs/teacher.yaml: 128)",
    )
    group.add_argument("--distiller_rounds", type=int, default=3)
    group.add_argument("--distiller_steps", type=int, default=3, help="steps per timed block")
    group.add_argument("--distiller_roof_ops", type=int, default=8, help="roof ops per block")
    group.add_argument(
        "--distiller_in_process",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run every case in this process, not a worker process each (no memory isolation)",
    )


# ------------------------------------------------------------------------------------------------
# Worker side (a fresh process per case).


def _batch(config):
    rng = np.random.default_rng(0)
    b, width = config["batch"], 2 * config["context"] + 1
    windows = rng.normal(size=(b, width, FEATURES)).astype(np.float32)
    labels = rng.integers(0, CLASSES, b).astype(np.int32)
    teacher_logits = 3.0 * rng.normal(size=(b, CLASSES)).astype(np.float32)
    return windows, labels, teacher_logits


def _stored_targets(teacher_logits, k, dense):
    import tensorflow as tf

    log_probs = tf.nn.log_softmax(teacher_logits)
    if dense:
        return {"probs": tf.exp(log_probs)}
    values, ids = tf.math.top_k(log_probs, k=k)
    return {"ids": ids, "probs": tf.exp(values)}


def _build_case(case, config):
    """(keras model to step, batch tuple, teacher forward FLOPs per window or 0, student)."""
    import keras

    from tfblend.distill.distiller import Distiller
    from tfblend.distill.losses import DenseSoftCrossEntropy, SparseSoftCrossEntropy
    from tfblend.models import DNNBaseline, LSTMTeacher, VGGStudent
    from tfblend.models.flops import forward_flops

    width = 2 * config["context"] + 1
    keras.utils.set_random_seed(0)
    student = VGGStudent(CLASSES, preset=config["preset"])
    student.build((None, width, FEATURES))
    windows, labels, teacher_logits = _batch(config)
    optimizer = keras.optimizers.Adam(1e-3)
    teacher_flops = 0
    if case == "hard_only":
        model, data = student, (windows, labels)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model, data, teacher_flops, student
    if case in ("online_lstm", "online_dnn", "keras_distiller_dnn"):
        if case == "online_lstm":
            teacher = LSTMTeacher(
                CLASSES,
                num_layers=config["teacher_layers"],
                units=config["teacher_units"],
                bidirectional=True,
            )
            loops = width
        else:
            teacher = DNNBaseline(CLASSES, hidden_units=(1024, 1024, 1024))
            loops = None
        teacher.build((None, width, FEATURES))
        teacher_flops = forward_flops(teacher, (1, width, FEATURES), loop_trips=loops)
        data = (windows, labels)
        if case == "keras_distiller_dnn":
            model = keras.distillation.Distiller(
                teacher=teacher,
                student=student,
                distillation_losses=keras.distillation.LogitsDistillation(temperature=2.0),
                student_loss_weight=0.5,
            )
            model.compile(
                optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            )
        else:
            model = Distiller(student, teacher, alpha=0.5, temperature=2.0)
            model.compile(optimizer)
        return model, data, teacher_flops, student
    if case == "distiller_hard":
        model, data = Distiller(student, alpha=1.0), (windows, labels)
    else:
        dense = case == "stored_dense"
        soft = _stored_targets(teacher_logits, config["k"], dense)
        loss = DenseSoftCrossEntropy() if dense else SparseSoftCrossEntropy("renormalize")
        model = Distiller(student, alpha=0.5, temperature=1.0, soft_loss=loss)
        data = (windows, labels, soft)
    model.compile(optimizer)
    return model, data, teacher_flops, student


#: Training-step FLOPs per frame of the student by (preset, window width), counted once per
#: process (a worker counts its own).
_STUDENT_TRAIN_FLOPS = {}


def _step_runner(case, config):
    """(run(n): n training steps, facts dict) for one case."""
    import tensorflow as tf

    from tfblend.models.flops import train_step_flops

    model, data, teacher_flops, student = _build_case(case, config)
    width = 2 * config["context"] + 1
    iterator = iter(tf.data.Dataset.from_tensors(data).repeat())
    model.make_train_function()
    train = model.train_function

    def run(n):
        for _ in range(n):
            logs = train(iterator)
        float(logs["loss"])  # wait for the last step

    key = (config["preset"], width)  # every case's student is the same architecture
    if key not in _STUDENT_TRAIN_FLOPS:
        _STUDENT_TRAIN_FLOPS[key] = train_step_flops(student, (2, width, FEATURES)) / 2
    facts = {
        "student_params": int(student.count_params()),
        "student_train_flops": _STUDENT_TRAIN_FLOPS[key],
        "teacher_fwd_flops": teacher_flops,
    }
    return run, facts


def _prepare(case, config):
    """(run(n), facts) of one case or roof, traced and warmed up, its peak memory reset."""
    if case.startswith("roof_"):
        run, facts = machine.roof_runner(case)
    else:
        run, facts = _step_runner(case, config)
    run(2)  # trace and warm up
    facts["rss_before_mb"] = machine.rss_mb("VmRSS")
    facts["peak_reset"] = machine.reset_peak_rss()
    return run, facts


def _worker(conn, case, config):
    import tfblend  # noqa: F401  (quiet TensorFlow import)

    try:
        run, facts = _prepare(case, config)
        conn.send(("ready", facts))
        while (n := conn.recv()) is not None:
            start = time.perf_counter()
            run(n)
            conn.send(time.perf_counter() - start)
        conn.send({"peak_rss_mb": machine.rss_mb("VmHWM")})
    except Exception as error:  # reported as the case's row
        conn.send(("error", f"{type(error).__name__}: {error}"))


class _WorkerProcess:
    """One case in a worker process of its own (``_worker``), started at once."""

    def __init__(self, context, case, config):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, case, config), daemon=True)
        self.process.start()

    def ready(self):
        """("ready", facts) once built and warmed up, or ("error", message)."""
        return self.conn.recv()

    def time(self, n: int) -> float:
        """Seconds for ``n`` steps."""
        self.conn.send(n)
        return self.conn.recv()

    def finish(self) -> dict:
        self.conn.send(None)
        return self.conn.recv()

    def join(self):
        self.process.join(timeout=60)


class _InProcess:
    """One case in this process (``--distiller_in_process``), built when asked if ready."""

    def __init__(self, case, config):
        self.case, self.config, self.run = case, config, None

    def ready(self):
        try:
            self.run, facts = _prepare(self.case, self.config)
        except Exception as error:  # reported as the case's row
            return "error", f"{type(error).__name__}: {error}"
        return "ready", facts

    def time(self, n: int) -> float:
        start = time.perf_counter()
        self.run(n)
        return time.perf_counter() - start

    def finish(self) -> dict:
        return {"peak_rss_mb": machine.rss_mb("VmHWM")}

    def join(self):
        self.run = None


def _keras_distiller_lstm_error(config):
    """What keras.distillation.Distiller says to an LSTM teacher (one step, tiny models)."""
    import keras

    from tfblend.models import LSTMTeacher, VGGStudent

    width = 2 * config["context"] + 1
    student = VGGStudent(32, preset="tiny")
    teacher = LSTMTeacher(32, num_layers=1, units=8)
    for model in (student, teacher):
        model.build((None, width, FEATURES))
    try:
        distiller = keras.distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=keras.distillation.LogitsDistillation(temperature=2.0),
        )
        distiller.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x = np.zeros((8, width, FEATURES), np.float32)
        distiller.fit(x, np.zeros(8, np.int32), verbose=0)
    except Exception as error:
        lines = str(error).splitlines()
        shapes = [line for line in lines if "shapes" in line or "Dimensions" in line]
        return f"cannot run: {type(error).__name__}: {(shapes or lines)[0].strip()[:200]}"
    return "ran (unexpected)"


# ------------------------------------------------------------------------------------------------
# Parent side.


def run(args):
    config = {
        "preset": args.distiller_preset,
        "batch": args.distiller_batch,
        "context": args.distiller_context,
        "k": args.distiller_k,
        "teacher_layers": args.distiller_teacher_layers,
        "teacher_units": args.distiller_teacher_units,
    }
    facts, errors, times = _time_cases(
        config,
        args.distiller_rounds,
        args.distiller_steps,
        args.distiller_roof_ops,
        args.distiller_in_process,
    )
    roofs = {
        name: [facts[name]["flops_per_op"] / t / 1e9 for t in times[name]]
        for name in ("roof_matmul", "roof_conv")
        if name in times
    }
    rows = [
        {
            "case": name,
            "ms_per_step": 1e3 * statistics.median(times[name]),
            "gflop_s": statistics.median(roofs[name]),
            "peak_rss_mb": facts[name]["peak_rss_mb"],
        }
        for name in ("roof_matmul", "roof_conv")
        if name in roofs
    ]
    for name in CASES:
        if name in errors:
            rows.append({"case": name, "note": errors[name]})
        else:
            rows.append(_case_row(name, times, roofs, facts[name], config))
    rows.append({"case": "keras_distiller_lstm", "note": _keras_distiller_lstm_error(config)})
    rows += _goal_rows(times, roofs, facts, config["batch"])
    return rows


def _time_cases(config, rounds: int, steps: int, roof_ops: int, in_process: bool) -> tuple:
    """Every case (and the roofs) in a worker process of its own (or, ``in_process``, one after
    another in this process), built and warmed up first, then timed in rounds: ``(facts, errors,
    times)`` by case, times in seconds per step."""
    names = ["roof_matmul", "roof_conv", *CASES]
    if in_process:
        workers = {name: _InProcess(name, config) for name in names}
    else:
        context = multiprocessing.get_context("spawn")
        workers = {name: _WorkerProcess(context, name, config) for name in names}
    facts, errors = {}, {}
    for name, worker in workers.items():
        status, value = worker.ready()
        (facts if status == "ready" else errors)[name] = value
    live = [name for name in names if name in facts]
    times = {name: [] for name in live}
    for _ in range(rounds):
        for name in live:
            n = roof_ops if name.startswith("roof_") else steps
            times[name].append(workers[name].time(n) / n)
    for name in live:
        facts[name].update(workers[name].finish())
    for worker in workers.values():
        worker.join()
    return facts, errors, times


def _case_row(name: str, times: dict, roofs: dict, fact: dict, config: dict) -> dict:
    step, batch = times[name], config["batch"]
    student_rate = [fact["student_train_flops"] * batch / t / 1e9 for t in step]
    row = {
        "case": name,
        "ms_per_step": 1e3 * statistics.median(step),
        "frames_per_s": batch / statistics.median(step),
        "x_hard_only": _paired_ratio(step, times.get("hard_only")),
        "student_train_mflop_per_frame": fact["student_train_flops"] / 1e6,
        "teacher_fwd_mflop_per_frame": fact["teacher_fwd_flops"] / 1e6,
        "student_gflop_s": statistics.median(student_rate),
        "pct_matmul_roof": 100 * _paired_ratio(student_rate, roofs.get("roof_matmul")),
        "peak_rss_mb": fact["peak_rss_mb"],
        "step_mem_mb": fact["peak_rss_mb"] - fact["rss_before_mb"] if fact["peak_reset"] else None,
        "note": f"{config['preset']} student, {fact['student_params'] / 1e6:.2f}M weights",
    }
    if name == "online_lstm":
        row["note"] += f"; teacher {config['teacher_layers']} x BLSTM {config['teacher_units']}"
    return row


def _paired_ratio(values, references):
    """Median over rounds of values[i] / references[i] (None without references)."""
    if not references:
        return None
    return statistics.median(v / r for v, r in zip(values, references, strict=True))


def _goal_rows(times, roofs, facts, batch):
    rows = []
    for case, reference, limit, text in GOALS:
        if case in times and reference in times:
            ratio = _paired_ratio(times[case], times[reference])
            rows.append(
                {
                    "case": "GOAL",
                    "note": f"{text}: {ratio:.3f}x, {'met' if ratio <= limit else 'MISSED'}",
                }
            )
    if "roof_matmul" in roofs:
        for case in ("hard_only", "stored_sparse"):
            if case not in times:
                continue
            rates = [facts[case]["student_train_flops"] * batch / t / 1e9 for t in times[case]]
            share = _paired_ratio(rates, roofs["roof_matmul"])
            rows.append(
                {
                    "case": "GOAL",
                    "note": f"{case} student FLOP rate >= "
                    f"{ROOF_GOAL:.0%} of matmul roof: {share:.1%}, "
                    f"{'met' if share >= ROOF_GOAL else 'MISSED'}",
                }
            )
    rows.append(
        {
            "case": "machine",
            "note": f"{os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.2f} at the end (shared machine)",
        }
    )
    return rows
