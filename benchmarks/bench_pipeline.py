"""Input pipeline vs training step: does tfblend.pipeline feed the shipped configs fast enough?

For each shipped config (``tfblend/configs/{teacher,dnn,student,blend}.yaml``, read with
``--pipeline_params_override`` applied) the training data is built exactly as training builds it
(:func:`tfblend.train.inputs.teacher_inputs` / ``window_inputs``: the config's view, context,
chunking, batch size, CMVN and shuffle buffer, deterministic order), the config's model is
compiled as training compiles it (the teacher with Keras's cross-entropy, the window models in
the Distiller; ``blend`` joined with a stored top-k target set, ``--pipeline_k`` entries per
frame, written untimed with ``tfblend.records.write_target_set``), and three rates are measured
on the train split of the corpus, each for ``--pipeline_seconds`` seconds after a warm-up:

- ``pipeline_frames_s``: the pipeline alone (batches taken, nothing computed on them);
- ``step_frames_s``: the training step alone, on one batch held in memory (repeated);
- ``fed_frames_s``: the training step fed by the pipeline (what ``fit`` does).

Frames are real frames (padding and masked chunk tails are not counted). ``pipeline_x_step`` is
the pipeline's rate over the step's, both measured in this run on this machine; the pipeline
should feed at least ``TARGET_RATIO`` times faster than the step consumes (``meets_goal``), and
``fed_of_step`` (the fed rate over the step's) near 1 says the step does not wait for data. The
step and the pipeline share the CPU cores, so a fed rate can be lower than both alone.
``startup_s`` is the time to the pipeline's first batch (opening the set, checksums, filling
the first shuffle block).
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import tensorflow as tf

from benchmarks.run import corpus_dir

CONFIGS = ("teacher", "dnn", "student", "blend")
TARGET_RATIO = 5.0

#: Tiny models for ``--smoke`` (the same views, batch sizes and contexts as the shipped configs).
SMOKE_OVERRIDE = (
    "{model: {vgg: {preset: tiny}, lstm: {num_layers: 1, units: 8}, dnn: {hidden_units: [16]}}}"
)
SMOKE = {"pipeline_seconds": 0.05, "pipeline_params_override": SMOKE_OVERRIDE}


def add_arguments(group):
    group.add_argument(
        "--pipeline_seconds", type=float, default=3.0, help="seconds timed per rate and config"
    )
    group.add_argument("--pipeline_k", type=int, default=51, help="top-k of the blend's targets")
    group.add_argument(
        "--pipeline_configs", default=",".join(CONFIGS), help="shipped configs to measure"
    )
    group.add_argument(
        "--pipeline_params_override", default="", help="applied to every config (e.g. models)"
    )


def write_synthetic_targets(data_dir, out_dir, k, seed=0) -> dict:
    """A valid top-k target set for ``data_dir`` (``records.write_target_set``): per frame the
    label and k-1 random ids with sorted random probabilities, float16; returns its manifest."""
    from tfblend.records import iterate_utterances, read_manifest, write_target_set

    manifest = read_manifest(data_dir)
    rng = np.random.default_rng(seed)
    utterances = iterate_utterances(data_dir)
    shards = []
    for shard in manifest["shards"]:
        rows = []
        for _ in range(shard["num_utterances"]):
            utt = next(utterances)
            frames = utt.features.shape[0]
            ids = rng.integers(0, manifest["num_classes"], (frames, k))
            ids[:, 0] = utt.labels
            probs = np.sort(rng.dirichlet(np.ones(k), frames), axis=1)[:, ::-1]
            rows.append((utt.utt_id, ids, probs, None))
        shards.append(rows)
    id_dtype = "int16" if manifest["num_classes"] <= 32767 else "int32"
    return write_target_set(
        out_dir, manifest, shards, k=k, id_dtype=id_dtype, method="topk", tail="renormalize"
    )


def real_frames(batch) -> int:
    """Real frames of a batch of any view: the utterance view's mask, the chunk view's
    ``labels >= 0``, every row of a window batch."""
    inputs, labels = batch[0], batch[1]
    if isinstance(inputs, dict):
        return int(tf.reduce_sum(tf.cast(inputs["mask"], tf.int32)))
    return int(tf.reduce_sum(tf.cast(labels >= 0, tf.int32)))


def _model(name: str, experiment, manifest: dict, targets: dict | None, steps: int):
    """The config's model, compiled as training compiles it, and built."""
    import keras

    from tfblend.config import model_kwargs
    from tfblend.distill import Distiller
    from tfblend.distill.losses import SparseSoftCrossEntropy
    from tfblend.models import get_model
    from tfblend.train.strategies import make_optimizer

    keras.utils.set_random_seed(experiment.train.seed)
    model = get_model(
        experiment.model.type, num_classes=manifest["num_classes"], **model_kwargs(experiment.model)
    )
    optimizer = make_optimizer(experiment.optimizer, steps * experiment.train.epochs)
    if name == "teacher":
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=["accuracy"],
        )
        return model
    if targets is None:
        trained = Distiller(model, alpha=1.0)
    else:
        distill = experiment.distill
        trained = Distiller(
            model,
            alpha=distill.alpha,
            temperature=distill.temperature,
            soft_loss=SparseSoftCrossEntropy(distill.tail),
            target_k=targets["k"],
        )
    trained.compile(optimizer=optimizer)
    model(np.zeros([1, 2 * experiment.data.context + 1, manifest["feature_dim"]], np.float32))
    return trained


def _rate(seconds: float, step, frames_of) -> tuple[float, int, int]:
    """(frames/s, frames, calls) calling ``step()`` for ``seconds`` (at least once), counting
    ``frames_of(result)`` frames per call."""
    frames = calls = 0
    begin = time.perf_counter()
    while time.perf_counter() - begin < seconds or not calls:
        frames += frames_of(step())
        calls += 1
    return frames / (time.perf_counter() - begin), frames, calls


def measure(name: str, experiment, inputs, manifest, targets, seconds: float) -> dict:
    """The three rates of one config (module docstring)."""
    dataset = inputs.make_dataset(0, True)
    iterator = iter(dataset)
    start = time.perf_counter()
    first = next(iterator)
    startup = time.perf_counter() - start
    pipeline_fps, frames, batches = _rate(seconds, lambda: next(iterator), real_frames)
    per_batch = frames / batches  # the fed step is credited the pipeline's mean real frames

    model = _model(name, experiment, manifest, targets, inputs.steps)
    model.make_train_function()
    train = model.train_function

    def stepper(batches):
        def step():
            float(train(batches)["loss"])  # waits for the step

        return step

    # The first batch held in memory, with the pipeline's element spec: one traced step
    # (the fed step's) for both rates.
    step_alone = stepper(iter(dataset.take(1).cache().repeat()))
    step_alone()  # trace and warm up
    first_frames = real_frames(first)
    step_fps = _rate(seconds, step_alone, lambda _: first_frames)[0]
    fed = stepper(iter(inputs.make_dataset(1, True)))
    fed()  # warm up
    fed_fps = _rate(seconds, fed, lambda _: per_batch)[0]
    return {
        "config": name,
        "view": (
            "utterances"
            if name == "teacher"
            else f"chunks L={inputs.chunk_frames}"
            if inputs.chunk_frames
            else "windows"
        ),
        "batch": experiment.data.batch_size,
        "context": experiment.data.context if name != "teacher" else None,
        "model": experiment.model.type
        + (f" {experiment.model.vgg.preset}" if experiment.model.type == "vgg" else ""),
        "pipeline_frames_s": pipeline_fps,
        "step_frames_s": step_fps,
        "fed_frames_s": fed_fps,
        "pipeline_x_step": pipeline_fps / step_fps,
        "meets_goal": bool(pipeline_fps >= TARGET_RATIO * step_fps),
        "fed_of_step": fed_fps / step_fps,
        "startup_s": startup,
    }


def run(args):
    from tfblend.config import load_experiment, shipped_config
    from tfblend.train.inputs import teacher_inputs, training_sets, window_inputs

    root = corpus_dir(args)
    train_dir, dev_dir, manifest = training_sets(str(root))
    names = [n for n in args.pipeline_configs.split(",") if n]
    strategy = tf.distribute.get_strategy()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfblend-bench-targets-") as targets_dir:
        targets = None
        if "blend" in names:
            targets = write_synthetic_targets(train_dir, targets_dir, args.pipeline_k)
        for name in names:
            experiment = load_experiment(shipped_config(name), args.pipeline_params_override)
            if name == "teacher":
                inputs = teacher_inputs(train_dir, dev_dir, manifest, experiment, strategy)
            else:
                joined = targets_dir if name == "blend" else None
                inputs = window_inputs(
                    train_dir, dev_dir, manifest, experiment, strategy, targets_dir=joined
                )
            blend = targets if name == "blend" else None
            rows.append(measure(name, experiment, inputs, manifest, blend, args.pipeline_seconds))
    data = (
        f"{train_dir}: {manifest['num_utterances']} utts, {manifest['num_frames']} frames, "
        f"D={manifest['feature_dim']}, K={manifest['num_classes']}"
    )
    rows.append({"config": "data", "view": data, "goal": f"pipeline >= {TARGET_RATIO:g}x step"})
    return rows
