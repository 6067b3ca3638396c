"""Teacher target dumps: throughput and bytes per frame of each method and precision.

A teacher of the shipped architecture (tfblend/configs/teacher.yaml: 2 x BLSTM-128) is built
with random weights and saved as a model directory: the dump's cost does not depend on what the
weights learned. ``tfblend.targets.dump_targets`` then labels the train split once per case, in a
fresh target directory, and the case reports:

- ``frames_per_s`` and ``x_real_time`` (100 frames are one second of audio), teacher included;
- ``bytes_per_frame`` of the written shards (ids + values + all framing) and ``of_dense``, the
  fraction of dense float32 posteriors (4 bytes x K per frame).

``--targets_params_override`` is applied to the teacher's config (``--smoke``: a one-layer
BLSTM-8 on the dev split).

The storage goal: k = 1% of the classes stored in at most 1% of dense float32.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from benchmarks.run import corpus_dir
from tfblend.config import load_experiment, model_kwargs, shipped_config
from tfblend.models import get_model
from tfblend.records import read_manifest
from tfblend.targets import dump_targets
from tfblend.train.modeldir import save_model_dir

CASES = (
    ("topk k=1% float16", {"method": "topk", "top_fraction": 0.01}),
    (
        "topk k=1% log_uint8",
        {"method": "topk", "top_fraction": 0.01, "value_encoding": "log_uint8"},
    ),
    ("topk k=1% float16 + mass (ghost)", {"method": "topk", "top_fraction": 0.01, "tail": "ghost"}),
    ("topk k=10% float16", {"method": "topk", "top_fraction": 0.1}),
    ("topp p=0.95 cap=1%", {"method": "topp", "top_fraction": 0.01, "p": 0.95}),
    ("sampled m=1%", {"method": "sampled", "top_fraction": 0.01}),
)


#: ``--smoke`` sizes: every case's code path on tiny shapes (benchmarks/run.py).
SMOKE = {
    "targets_split": "dev",
    "targets_params_override": "model.lstm.num_layers=1,model.lstm.units=8",
}


def add_arguments(group):
    group.add_argument("--targets_split", default="train", help="split the teacher labels")
    group.add_argument(
        "--targets_params_override", default="", help="applied to the teacher's config"
    )


def _teacher_dir(root: str, manifest: dict, train_dir: str, params_override: str = "") -> str:
    experiment = load_experiment(shipped_config("teacher"), params_override)
    teacher = get_model(
        "lstm", num_classes=manifest["num_classes"], **model_kwargs(experiment.model)
    )
    probe = np.zeros([1, 8, manifest["feature_dim"]], np.float32)
    teacher({"features": probe, "mask": np.ones([1, 8], bool)})
    model_dir = os.path.join(root, "teacher")
    save_model_dir(
        teacher,
        model_dir,
        {
            "role": "teacher",
            "model": "lstm",
            "kind": "sequence",
            "num_classes": manifest["num_classes"],
            "feature_dim": manifest["feature_dim"],
            "context": None,
            "cmvn": "global",
            "train_dir": os.path.abspath(train_dir),
            "train_digest": read_manifest(train_dir)["content_digest"],
        },
    )
    return model_dir


def run(args):
    root = corpus_dir(args)
    data_dir = str(root / args.targets_split)
    train_dir = str(root / "train")
    manifest = read_manifest(data_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfblend-bench-dump-") as work:
        teacher = _teacher_dir(work, manifest, train_dir, args.targets_params_override)
        for name, options in CASES:
            started = time.perf_counter()
            result = dump_targets(
                data_dir, teacher, os.path.join(work, name.replace(" ", "_")), **options
            )
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "case": name,
                    "k": result["k"],
                    "frames": result["num_frames"],
                    "seconds": round(seconds, 2),
                    "frames_per_s": round(result["num_frames"] / seconds),
                    "x_real_time": round(result["num_frames"] / seconds / 100, 1),
                    "bytes_per_frame": round(result["bytes_per_frame"], 1),
                    "of_dense": f"{result['storage_fraction']:.3%}",
                }
            )
    return rows
