"""What the exports' finite-input check costs: frames/s of both signatures with and without it.

One run, in one process: the same student (random weights, the ``--serving_preset`` VGG preset,
by default the demo's ``small``) is exported twice by ``tfblend.export.export_model``, with the
check (what every export now has) and with ``check_finite=False``, and both are loaded back as a
server loads them. Each round times, in turn, every case of both exports (so that load from other
users of the machine hits both alike); the table gives the median over rounds (and the best
round) of:

- ``utterance``: one whole utterance of ``--serving_frames`` frames (one dense pass);
- ``serving_default``: the same utterance's windows in one request, and a small request of
  ``--serving_small_batch`` windows (where a per-request cost shows most).

``check cost`` is the frames/s lost to the check (median with the check against median without;
negative: within noise), and ``check alone`` times what the check computes (``is_finite`` and
``reduce_all`` over the same input, in a ``tf.function``), a bound that load hardly blurs.
Inputs are random normal features, finite (the check passes).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

CLASSES = 5126
FEATURES = 40


#: ``--smoke`` sizes: every case's code path on tiny shapes (benchmarks/run.py).
SMOKE = {
    "serving_preset": "tiny",
    "serving_frames": 64,
    "serving_small_batch": 2,
    "serving_rounds": 1,
    "serving_calls": 1,
}


def add_arguments(group):
    group.add_argument("--serving_preset", default="small", help="VGG preset of the student")
    group.add_argument("--serving_frames", type=int, default=1000, help="frames per utterance")
    group.add_argument("--serving_small_batch", type=int, default=8, help="windows per request")
    group.add_argument("--serving_rounds", type=int, default=5)
    group.add_argument("--serving_calls", type=int, default=5, help="calls per timed block")


def _export(model, directory: str, check_finite: bool):
    import tensorflow as tf

    from tfblend.export import export_model

    log_priors = np.full(CLASSES, -np.log(CLASSES), np.float32)
    export_model(
        model, directory, kind="window", feature_dim=FEATURES, log_priors=log_priors,
        context=model.context, check_finite=check_finite,
    )  # fmt: skip
    return tf.saved_model.load(directory).signatures


def _block(signature, features, calls: int):
    """A timer: seconds per call of ``signature(features=features)`` over ``calls`` calls."""

    def run():
        start = time.perf_counter()
        for _ in range(calls):
            out = signature(features=features)["posteriors"]
        np.asarray(out)
        return (time.perf_counter() - start) / calls

    run()  # trace and warm up
    return run


def _block_fn(function, features, calls: int):
    """A timer: seconds per call of ``function(features)`` over ``calls`` calls."""

    def run():
        start = time.perf_counter()
        for _ in range(calls):
            out = function(features)
        np.asarray(out)
        return (time.perf_counter() - start) / calls

    run()
    return run


def _cases(model, utterance, small_batch: int, calls: int, tmp: str) -> dict:
    """``{(case, checked): (timer, frames per call)}`` for both exports (checked True or
    False) and for the check alone (checked "check alone")."""
    import tensorflow as tf

    from tfblend.pipeline import splice

    windows = splice(tf.constant(utterance), model.context)
    inputs = {
        "utterance": ("utterance", tf.constant(utterance)),
        "serving_default": ("serving_default", windows),
        f"serving_default, {small_batch} windows": ("serving_default", windows[:small_batch]),
    }
    check = tf.function(lambda x: tf.reduce_all(tf.math.is_finite(x)))
    cases = {}
    for case, (_, features) in inputs.items():  # what the check computes, alone
        cases[case, "check alone"] = (_block_fn(check, features, calls), int(features.shape[0]))
    for checked in (True, False):
        signatures = _export(model, os.path.join(tmp, f"checked{int(checked)}", "1"), checked)
        for case, (name, features) in inputs.items():
            timer = _block(signatures[name], features, calls)
            cases[case, checked] = (timer, int(features.shape[0]))
    return cases


def run(args):
    import keras

    from tfblend.models import VGGStudent

    load_before = os.getloadavg()[0]
    keras.utils.set_random_seed(0)
    model = VGGStudent(CLASSES, preset=args.serving_preset)
    model.build((None, model.receptive_field, FEATURES))
    rng = np.random.default_rng(0)
    utterance = rng.normal(size=(args.serving_frames, FEATURES)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="tfblend-bench-serving-") as tmp:
        cases = _cases(model, utterance, args.serving_small_batch, args.serving_calls, tmp)
        times = {key: [] for key in cases}
        for _ in range(args.serving_rounds):
            for key, (timer, _) in cases.items():
                times[key].append(timer())
    load_after = os.getloadavg()[0]
    rows = []
    for case in dict.fromkeys(case for case, _ in cases):
        frames = cases[case, True][1]
        checked, unchecked = (
            statistics.median(times[case, True]),
            statistics.median(times[case, False]),
        )
        rows.append(
            {
                "case": case,
                "frames": frames,
                "frames_s unchecked": frames / unchecked,
                "frames_s checked": frames / checked,
                "best frames_s unchecked": frames / min(times[case, False]),
                "best frames_s checked": frames / min(times[case, True]),
                "check cost %": 100.0 * (checked - unchecked) / unchecked,
                "check alone ms": 1000 * statistics.median(times[case, "check alone"]),
                "check alone % of call": 100
                * statistics.median(times[case, "check alone"])
                / unchecked,
            }
        )
    rows.append(
        {
            "case": "setup",
            "note": (
                f"{args.serving_preset} preset, {model.count_params():,} weights; median of "
                f"{args.serving_rounds} rounds of {args.serving_calls} calls; load average "
                f"{load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs"
            ),
        }
    )
    return rows
