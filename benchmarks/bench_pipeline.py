"""Input-pipeline throughput: frames/s that tfblend.pipeline delivers on one CPU host.

Cases (train split of the corpus, CMVN "global"):
- ``frames``: ``frame_dataset``, windows +-10 frames, batch 256, default shuffle buffer;
- ``frames_deterministic``: the same with ``deterministic=True``;
- ``frames_joined_k{K}``: the same joined with a target set of top-K float16 targets (written
  once, untimed, into a temporary directory);
- ``chunks``: ``chunk_dataset``, chunks of 64 output frames +-10 frames of context, 256 frames
  (4 chunks) per batch, default shuffle buffer (frames counted without the masked tail);
- ``chunks_joined_k{K}``: the same joined with the target set;
- ``utterances``: ``utterance_dataset``, batch 8, padded (frames counted without padding);
- ``eval_read``: ``eval_utterances`` with ``cmvn="none"``: read + parse only, no splicing;
- ``frames_unchecked``, ``frames_joined_k{K}_unchecked``: ``frames`` and the joined case built
  with the read-time checks of ``_Source.parse_record`` left out (features finite, target ids in
  range and probabilities finite in [0, 1], the utt_id/num_frames join assertion): their cost,
  side by side with the checked cases in one run.

Each case iterates a ``repeat=True`` dataset: ``startup_s`` is the time to the first batch
(includes filling the shuffle buffer), ``frames_per_s`` the rate over the following
``--pipeline_seconds`` seconds (epoch boundaries and buffer refills included). The pipeline should
feed at least ``TARGET_RATIO`` times faster than a training step consumes; ``x_step`` compares
with ``REFERENCE_STEP_FPS``, the 8/16-channel CNN student's training rate measured by the
prototype on this kind of machine (shared/NOTES.md section 6); the distiller benchmark reports the
real step rate.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from benchmarks.run import corpus_dir
from tfblend import pipeline
from tfblend.records import (
    FORMAT_VERSION,
    TARGET_FORMAT,
    feature_values_digest,
    file_sha256,
    iterate_utterances,
    read_manifest,
    serialize_targets,
    target_shard_name,
    write_manifest,
)

REFERENCE_STEP_FPS = 3600.0
TARGET_RATIO = 5.0


def add_arguments(group):
    group.add_argument(
        "--pipeline_seconds",
        type=float,
        default=8.0,
        help="seconds of steady-state iteration per case",
    )
    group.add_argument("--pipeline_k", type=int, default=51, help="top-k of the joined targets")
    group.add_argument("--pipeline_split", default="train")


def write_synthetic_targets(data_dir, out_dir, k, seed=0):
    """A valid target set for ``data_dir``: per frame the label and k-1 random ids, float16."""
    manifest = read_manifest(data_dir)
    rng = np.random.default_rng(seed)
    utterances = iterate_utterances(data_dir)
    num_shards = len(manifest["shards"])
    shards = []
    for i, shard in enumerate(manifest["shards"]):
        name = target_shard_name(i, num_shards)
        with tf.io.TFRecordWriter(os.path.join(out_dir, name)) as writer:
            for _ in range(shard["num_utterances"]):
                utt = next(utterances)
                frames = utt.features.shape[0]
                ids = rng.integers(0, manifest["num_classes"], (frames, k))
                ids[:, 0] = utt.labels
                probs = np.sort(rng.dirichlet(np.ones(k), frames), axis=1)[:, ::-1]
                writer.write(serialize_targets(utt.utt_id, ids, probs, id_dtype="int16"))
        shards.append(
            {
                "file": name,
                "num_utterances": shard["num_utterances"],
                "num_frames": shard["num_frames"],
                "sha256": file_sha256(os.path.join(out_dir, name)),
            }
        )
    write_manifest(
        out_dir,
        {
            "format": TARGET_FORMAT,
            "format_version": FORMAT_VERSION,
            "num_utterances": manifest["num_utterances"],
            "num_classes": manifest["num_classes"],
            "k": k,
            "id_dtype": "int16",
            "value_encoding": "float16",
            "log_step": None,
            "has_mass": False,
            "features_digest": feature_values_digest(manifest),
            "shards": shards,
        },
    )


@contextlib.contextmanager
def _without_read_checks():
    """Builds datasets whose records are parsed without the checks of ``_Source.parse_record``."""

    def parse_unchecked(self, shard, utterance_record, target_record=None, target_shard=None):
        utterance = self.parse(utterance_record)
        if target_record is not None:
            target = self.parse_targets(target_record)
            utterance["soft"] = {k: v for k, v in target.items() if k in ("ids", "probs", "mass")}
        return utterance

    checked = pipeline._Source.parse_record
    pipeline._Source.parse_record = parse_unchecked
    try:
        yield
    finally:
        pipeline._Source.parse_record = checked


def measure(dataset, frames_of, seconds):
    """(startup seconds, steady frames/s, frames, elapsed) iterating ``dataset``."""
    iterator = iter(dataset)
    start = time.perf_counter()
    next(iterator)
    startup = time.perf_counter() - start
    frames, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < seconds:
        frames += frames_of(next(iterator))
    elapsed = time.perf_counter() - begin
    return startup, frames / elapsed, frames, elapsed


def run(args):
    data_dir = corpus_dir(args) / args.pipeline_split
    manifest = read_manifest(data_dir)
    with tempfile.TemporaryDirectory(prefix="tfblend-bench-targets-") as targets_dir:
        write_synthetic_targets(data_dir, targets_dir, args.pipeline_k)
        frames = {"context": 10, "batch_size": 256, "repeat": True}
        cases = {
            "frames": (pipeline.frame_dataset(data_dir, **frames), 256),
            "frames_deterministic": (
                pipeline.frame_dataset(data_dir, deterministic=True, **frames),
                256,
            ),
            f"frames_joined_k{args.pipeline_k}": (
                pipeline.frame_dataset(data_dir, targets_dir=targets_dir, **frames),
                256,
            ),
            "chunks": (pipeline.chunk_dataset(data_dir, chunk_frames=64, **frames), "labels"),
            f"chunks_joined_k{args.pipeline_k}": (
                pipeline.chunk_dataset(
                    data_dir, chunk_frames=64, targets_dir=targets_dir, **frames
                ),
                "labels",
            ),
            "utterances": (pipeline.utterance_dataset(data_dir, batch_size=8, repeat=True), "mask"),
        }
        with _without_read_checks():  # tf.data traces the parse function when the map is built
            cases["frames_unchecked"] = (pipeline.frame_dataset(data_dir, **frames), 256)
            cases[f"frames_joined_k{args.pipeline_k}_unchecked"] = (
                pipeline.frame_dataset(data_dir, targets_dir=targets_dir, **frames),
                256,
            )
        cases = {
            **cases,
            "eval_read": (pipeline.eval_utterances(data_dir, cmvn="none").repeat(), "eval"),
        }
        rows = []
        for case, (dataset, unit) in cases.items():
            if unit == "mask":

                def count(batch):
                    return int(tf.reduce_sum(tf.cast(batch[0]["mask"], tf.int32)))
            elif unit == "labels":

                def count(batch):
                    return int(tf.reduce_sum(tf.cast(batch[1] >= 0, tf.int32)))
            elif unit == "eval":

                def count(record):
                    return int(record["num_frames"])
            else:

                def count(batch, size=unit):
                    return size

            startup, rate, total, elapsed = measure(dataset, count, args.pipeline_seconds)
            rows.append(
                {
                    "case": case,
                    "frames_per_s": rate,
                    "startup_s": startup,
                    "frames": total,
                    "seconds": elapsed,
                    "x_step": rate / REFERENCE_STEP_FPS,
                    f"meets_{TARGET_RATIO:g}x": rate >= TARGET_RATIO * REFERENCE_STEP_FPS,
                    "data": f"{args.pipeline_split}: {manifest['num_utterances']} utts, "
                    f"{manifest['num_frames']} frames, D={manifest['feature_dim']}",
                }
            )
    return rows
