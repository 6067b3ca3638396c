"""Building the embedded default corpus: espeak-ng speech labelled by pocketsphinx alignment.

Real frame-aligned corpora are not to be had as packages, so the default corpus is generated
offline from pip packages only:

- prompts (``tfblend.corpus.prompts``): 5-10-word sentences sampled from pocketsphinx's own
  language model restricted to its V most probable dictionary words (the default), or 5-10 words
  drawn uniformly from the whole dictionary; every word is legal for the aligner, and no
  sentence is in two splits;
- speech: espeak-ng (``tfblend.corpus.espeak``) in English accents x voice variants, with speaking
  rate and pitch drawn per utterance; resampled from 22050 Hz to 16 kHz with tensorflow-io, with
  leading and trailing pauses and white noise at a random signal-to-noise ratio added;
- labels: pocketsphinx forced alignment (``tfblend.corpus.align``), one senone id per 10 ms frame,
  checked against espeak's own word timings and required to start and end in silence (the
  pauses around every prompt); the base phone of each senone (from the model's
  mdef) is the second label. An utterance the aligner rejects is skipped and counted by reason.
- features: ``tfblend.features.log_mel`` with exactly as many frames as the alignment.

Voices are split into train, dev and test: no dev or test voice is ever in train (held-out voices).
Every held-out voice is a new accent x variant combination whose accent and variant both occur
in training, the usual speaker-independent setting. All espeak voices share one set of phoneme
rules, so voice variety is narrower than real speakers'.

Everything is a function of the seed and the size: ``build_corpus`` with the same arguments writes
the same bytes, whatever the number of worker processes (each utterance's random draws come from
its own seed; results are reassembled in plan order). Timing, which is not reproducible, goes to
``OUTPUT_DIR/build.json`` instead of the manifests.
"""

import contextlib
import dataclasses
import functools
import json
import logging
import multiprocessing
import os
import re
import shutil
import time
from collections import Counter

import numpy as np
import tensorflow as tf

from tfblend import features as features_lib
from tfblend import records
from tfblend.corpus import align, buildcache, design, mdef, prompts
from tfblend.corpus.prompts import WORDS_PER_UTTERANCE, prompt_words
from tfblend.errors import DataError

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Result:
    utt_id: str
    utterance: records.Utterance | None
    reason: str | None
    audio_seconds: float
    retried: bool
    word_deviation: float


class _Worker:
    """Per-process state: the aligner (its decoders load the model once) and the front end."""

    def __init__(self, feature_config: features_lib.FeatureConfig):
        self.aligner = align.ForcedAligner()
        self.model = mdef.default_senone_model()
        self.feature_config = feature_config

    def __call__(self, job: design.UtteranceJob) -> _Result:
        pcm, word_starts = design.render(job)
        seconds = pcm.shape[0] / design.SAMPLE_RATE
        try:
            alignment = self.aligner.align(pcm, job.words, job.utt_id)
            deviation = align.check_word_timing(alignment.word_starts, word_starts, job.utt_id)
        except align.AlignmentError as e:
            return _Result(job.utt_id, None, e.reason, seconds, False, float("nan"))
        senones = alignment.senones
        edges = self.model.senone_to_phone[senones[[0, -1]]]
        if (edges != self.model.silence_phone).any():  # a word stretched over a pause
            return _Result(job.utt_id, None, "edge_silence", seconds, False, float("nan"))
        feats = features_lib.log_mel(
            pcm.astype(np.float32) / 32768.0, self.feature_config, num_frames=senones.shape[0]
        ).numpy()
        utterance = records.Utterance(
            utt_id=job.utt_id,
            speaker=job.voice,
            features=feats,
            labels=senones,
            phones=self.model.phones_of(senones),
        )
        return _Result(job.utt_id, utterance, None, seconds, alignment.retried, deviation)


_WORKER = None


def _init_worker(feature_config):
    global _WORKER
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    _WORKER = _Worker(feature_config)


def _run(job):
    return _WORKER(job)


def build_corpus(
    output_dir,
    size: str = "tiny",
    seed: int = 0,
    num_workers: int | None = None,
    *,
    feature_config: features_lib.FeatureConfig | None = None,
    overwrite: bool = False,
    prompt_kind: str = "lm",
    vocabulary_size: int = prompts.DEFAULT_VOCABULARY,
) -> dict:
    """Builds the synthetic corpus into ``output_dir/{train,dev,test}/`` (utterance shards).

    Args:
      output_dir: created if missing. Existing split directories are an error unless
        ``overwrite``, in which case they are replaced once the new corpus is complete.
      size: ``tiny`` (tests: 36 utterances, seconds), ``small`` (about 1 hour of audio),
        ``medium`` (about 3.5 hours), ``large`` (over 10 hours); see
        ``tfblend.corpus.design.SIZES``.
      seed: every random draw derives from it; same seed and size, same bytes.
      num_workers: processes synthesising and aligning (None: one per CPU, but at most one per
        100 utterances, so 1 for tiny). The output does not depend on it.
      feature_config: the front end (default ``FeatureConfig()``: 40 log-mel, 25/10 ms).
      prompt_kind, vocabulary_size: the prompts (``tfblend.corpus.design.plan_corpus``).

    Returns:
      ``{split: manifest}``. Each manifest's ``metadata`` has ``features`` (the config) and
      ``corpus``: size, seed, voices of every split, the ranges drawn from, utterances planned,
      skipped by reason (and which), alignments that needed the retry, audio seconds, senones
      seen, phone names. ``output_dir/build.json`` records timings; each split's ``text``
      holds its transcripts (``utt-id words...``).

    Raises:
      DataError when a split directory exists (without ``overwrite``) or nothing is left of a
      split. On any error nothing is left in ``output_dir`` but what was there before; a killed
      (or interrupted) build leaves its finished pieces in ``output_dir/.build-cache``, and a
      rerun with the same arguments reuses them (:mod:`tfblend.corpus.buildcache`).
    """
    output_dir = os.fspath(output_dir)
    spec = design.corpus_size(size)
    feature_config = feature_config or features_lib.FeatureConfig()
    _check_output(output_dir, feature_config, overwrite)
    start = time.time()
    jobs = design.plan_corpus(size, seed, prompt_kind, vocabulary_size)
    if num_workers is None:  # a worker costs a TensorFlow start-up: one per 100 utterances at most
        num_workers = max(1, min(os.cpu_count() or 1, len(jobs) // 100))
    model = mdef.default_senone_model()
    staging = _staging_dir(output_dir)
    design_facts = {"size": size, "seed": seed, "prompt_kind": prompt_kind,
                    "vocabulary_size": vocabulary_size}  # fmt: skip
    try:
        manifests, timings = _build_splits(
            output_dir, staging, jobs, spec, model, feature_config, num_workers, design_facts
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    buildcache.remove(output_dir)
    audio = {s: manifests[s]["metadata"]["corpus"]["audio_seconds"] for s in design.SPLITS}
    _write_build_record(output_dir, {
        "size": size,
        "seed": seed,
        "num_workers": num_workers,
        "build_seconds": round(time.time() - start, 2),
        "split_seconds": timings,
        "audio_seconds": audio,
    })  # fmt: skip
    return manifests


def _check_output(output_dir: str, feature_config, overwrite: bool) -> None:
    """DataError for a front end at another rate than the corpus's, or for split directories
    that exist already (unless ``overwrite``)."""
    if feature_config.sample_rate != design.SAMPLE_RATE:
        raise DataError(
            f"the synthetic corpus is 16 kHz; feature_config has "
            f"sample_rate={feature_config.sample_rate}"
        )
    existing = [s for s in design.SPLITS if os.path.exists(os.path.join(output_dir, s))]
    if existing and not overwrite:
        raise DataError(
            f"{output_dir}: {', '.join(existing)} already exist (overwrite replaces them)"
        )


def _staging_dir(output_dir: str) -> str:
    """This build's staging directory in ``output_dir`` (what killed builds left half-staged
    is removed first)."""
    os.makedirs(output_dir, exist_ok=True)
    for name in os.listdir(output_dir):
        if re.fullmatch(r"\.build-\d+", name):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    return os.path.join(output_dir, f".build-{os.getpid()}")


def _build_splits(output_dir, staging, jobs, spec, model, feature_config, num_workers, facts):
    """Renders and aligns the jobs (or takes them from the build cache), writes every split in
    ``staging`` and moves the complete splits into ``output_dir``: ``(manifests, timings)``."""
    compute = functools.partial(_results, feature_config=feature_config, num_workers=num_workers)
    with buildcache.cached_results(
        output_dir,
        jobs,
        compute,
        result_type=_Result,
        key=feature_config.to_dict(),
        num_classes=model.num_senones,
        num_phones=model.num_phones,
    ) as results:
        manifests, timings = _write_splits(
            staging, jobs, results, spec, model, feature_config, facts
        )
    for split in design.SPLITS:  # the new splits replace the old ones only when complete
        target = os.path.join(output_dir, split)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(os.path.join(staging, split), target)
    return manifests, timings


def _write_splits(staging, jobs, results, spec, model, feature_config, design_facts):
    """Every split's utterance shards, manifest and transcripts in ``staging/<split>``:
    ``({split: manifest}, {split: seconds})``."""
    manifests, timings = {}, {}
    for split in design.SPLITS:
        split_start = time.time()
        split_jobs = [job for job in jobs if job.split == split]
        corpus = _corpus_facts(
            split=split, num_planned=len(split_jobs), model=model, **design_facts
        )
        metadata = {"features": feature_config.to_dict(), "corpus": corpus}
        manifests[split] = records.write_utterance_shards(
            os.path.join(staging, split),
            _collect(results, len(split_jobs), split, metadata["corpus"]),
            num_shards=spec.num_shards[split],
            num_classes=model.num_senones,
            num_phones=model.num_phones,
            metadata=metadata,
        )
        _write_text(os.path.join(staging, split), split_jobs, metadata["corpus"])
        timings[split] = round(time.time() - split_start, 2)
    return manifests, timings


def _corpus_facts(*, size, seed, split, num_planned, prompt_kind, vocabulary_size, model) -> dict:
    """A split manifest's ``metadata["corpus"]`` before its utterances are collected: the
    design it was drawn from (:func:`_collect` adds what the build found)."""
    return {
        "name": "tfblend.synthetic",
        "size": size,
        "seed": seed,
        "split": split,
        "voices": design.voices(size),
        "words_per_utterance": list(WORDS_PER_UTTERANCE),
        "rate_wpm": list(design.RATE_WPM),
        "pitch": list(design.PITCH),
        "pause_seconds": list(design.PAUSE_SECONDS),
        "snr_db": list(design.SNR_DB),
        "prompts": prompt_kind,
        "prompt_vocabulary": vocabulary_size if prompt_kind == "lm" else len(prompt_words()),
        "word_timing_max_ms": [
            1000 * align.MAX_MEAN_WORD_DEVIATION,
            1000 * align.MAX_WORD_DEVIATION,
        ],
        "senone_model": "pocketsphinx en-us",
        "phone_names": list(model.phone_names),
        "num_planned": num_planned,
    }


def _write_build_record(output_dir: str, build: dict) -> None:
    """``output_dir/build.json`` (timings of the build), written atomically."""
    build_path = os.path.join(output_dir, "build.json")
    with open(build_path + ".tmp", "w") as f:
        json.dump(build, f, indent=1)
    os.replace(build_path + ".tmp", build_path)


def _write_text(split_dir, split_jobs, info):
    """``split_dir/text``: the transcript of every kept utterance, Kaldi-style
    (``utt-id word word ...``), for scoring word error rates."""
    lines = [f"{job.utt_id} {' '.join(job.words)}\n" for job in split_jobs
             if job.utt_id not in info["skipped"]]  # fmt: skip
    with open(os.path.join(split_dir, "text"), "w") as f:
        f.writelines(sorted(lines))


@contextlib.contextmanager
def _results(jobs, feature_config, num_workers):
    """Yields an iterator over the jobs' ``_Result``s in job order."""
    if num_workers <= 1:
        worker = _Worker(feature_config)
        yield map(worker, jobs)
        return
    context = multiprocessing.get_context("spawn")  # never fork a process that runs TensorFlow
    with context.Pool(num_workers, initializer=_init_worker, initargs=(feature_config,)) as pool:
        yield pool.imap(_run, jobs, chunksize=4)


def _collect(results, count, split, info):
    """Yields the next ``count`` results' utterances; fills ``info`` with the split's counts (read
    by ``write_utterance_shards`` after the stream ends)."""
    skipped, reasons, seen = {}, Counter(), set()
    audio = kept_audio = deviation = 0.0
    retried = 0
    for n in range(count):
        result = next(results)
        audio += result.audio_seconds
        if result.utterance is None:
            skipped[result.utt_id] = result.reason
            reasons[result.reason] += 1
            continue
        kept_audio += result.audio_seconds
        retried += result.retried
        deviation += result.word_deviation
        seen.update(np.unique(result.utterance.labels).tolist())
        if (n + 1) % 200 == 0:
            _log.info("%s: %d/%d utterances", split, n + 1, count)
        yield result.utterance
    kept = count - len(skipped)
    if kept == 0:
        raise DataError(f"{split}: the aligner rejected all {count} utterances")
    info.update({
        "num_skipped": len(skipped),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "skipped": skipped,
        "num_retried": retried,
        "audio_seconds": round(kept_audio, 3),
        "audio_seconds_synthesised": round(audio, 3),
        "mean_word_deviation_ms": round(1000 * deviation / kept, 2),
        "senones_seen": len(seen),
    })  # fmt: skip
