"""Finished pieces of a corpus build, kept so that a killed build resumes where it stopped.

A build's utterance shards interleave every part of a split (utterance ``j`` goes to shard
``j % num_shards``), so no shard is finished before its split is. What a rerun can reuse instead
are *pieces*: the results of consecutive runs of ``PIECE`` planned utterances, in plan order.
Each finished piece is written under ``<output_dir>/.build-cache/``:

- ``piece-NNNNN/``: its kept utterances, a one-shard utterance set (:mod:`tfblend.records`);
- ``piece-NNNNN.json``, written last (atomically): the digest of the piece's jobs and of the
  front end, and per planned utterance its outcome (kept, or the reason it was skipped; audio
  seconds, whether the alignment needed its retry, the word-timing deviation).

A rerun of the same build reads the pieces whose digest matches and computes only the others,
then writes the shards from the whole stream exactly as an uninterrupted build would: the same
bytes. A piece of another plan (other size, seed or front end) never matches and is recomputed.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil

from tfblend import records
from tfblend.errors import DataError

CACHE_DIR = ".build-cache"
PIECE = 100

_log = logging.getLogger(__name__)


def _digest(jobs, key: dict) -> str:
    text = json.dumps([[dataclasses.asdict(job) for job in jobs], key], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _paths(cache_dir: str, index: int) -> tuple[str, str]:
    base = os.path.join(cache_dir, f"piece-{index:05d}")
    return base, base + ".json"


def _finished(cache_dir: str, index: int, jobs: list, digest: str) -> dict | None:
    """The entry of a finished piece of this plan, else None."""
    _, entry_path = _paths(cache_dir, index)
    if not os.path.exists(entry_path):
        return None
    with open(entry_path) as stream:
        entry = json.load(stream)
    ids = [outcome["utt_id"] for outcome in entry.get("outcomes", [])]
    if entry.get("digest") != digest or ids != [job.utt_id for job in jobs]:
        return None
    return entry


def _load(cache_dir: str, index: int, entry: dict, result_type):
    """Yields a finished piece's results, in plan order."""
    directory, _ = _paths(cache_dir, index)
    kept = records.iterate_utterances(directory) if entry["num_kept"] else iter(())
    for outcome in entry["outcomes"]:
        utterance = next(kept) if outcome["reason"] is None else None
        if utterance is not None and utterance.utt_id != outcome["utt_id"]:
            raise DataError(
                f"{directory}: holds {utterance.utt_id} where {outcome['utt_id']} was written"
            )
        yield result_type(utterance=utterance, **outcome)


def _write(cache_dir, index, results, digest, num_classes, num_phones) -> None:
    directory, entry_path = _paths(cache_dir, index)
    kept = [r.utterance for r in results if r.utterance is not None]
    if kept:
        records.write_utterance_shards(
            directory, kept, num_shards=1, num_classes=num_classes, num_phones=num_phones
        )
    outcomes = [
        {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name != "utterance"}
        for r in results
    ]
    records.write_json(entry_path, {"digest": digest, "num_kept": len(kept), "outcomes": outcomes})


@contextlib.contextmanager
def cached_results(
    output_dir: str, jobs: list, compute, *, result_type, key: dict, num_classes, num_phones
):
    """Yields an iterator over the jobs' results in job order, reusing finished pieces.

    Args:
      output_dir: the build's output directory (the cache is ``output_dir/.build-cache``).
      jobs: the planned utterances (dataclasses), in plan order.
      compute: ``fn(jobs) -> context manager yielding their results in order``; called once, with
        the jobs of the pieces not finished yet.
      result_type: the results' dataclass: an ``utterance`` (a :class:`tfblend.records.Utterance`
        or None for a skipped job) and JSON-serialisable fields, ``utt_id`` and ``reason`` among
        them.
      key: what else determines a result (the front end's config), JSON-serialisable.
      num_classes, num_phones: the label ranges (for the pieces' utterance sets).

    Every piece is written to the cache as soon as it is complete. On an error (an exception)
    the cache is deleted, as the build leaves nothing behind then; a killed process (or
    KeyboardInterrupt) keeps it. Call :func:`remove` once the build is complete.
    """
    cache_dir = os.path.join(output_dir, CACHE_DIR)
    os.makedirs(cache_dir, exist_ok=True)
    pieces = [jobs[i : i + PIECE] for i in range(0, len(jobs), PIECE)]
    digests = [_digest(piece, key) for piece in pieces]
    reused = {}
    for index, (piece, digest) in enumerate(zip(pieces, digests, strict=True)):
        entry = _finished(cache_dir, index, piece, digest)
        if entry is not None:
            reused[index] = entry
    todo = [job for index, piece in enumerate(pieces) if index not in reused for job in piece]
    if reused:
        _log.warning("%s: reusing %d of %d finished pieces", cache_dir, len(reused), len(pieces))

    def stream(fresh):
        for index, piece in enumerate(pieces):
            if index in reused:
                yield from _load(cache_dir, index, reused[index], result_type)
                continue
            results = [next(fresh) for _ in piece]
            _write(cache_dir, index, results, digests[index], num_classes, num_phones)
            yield from results

    try:
        with compute(todo) if todo else contextlib.nullcontext(iter(())) as fresh:
            yield stream(fresh)
    except Exception:
        shutil.rmtree(cache_dir, ignore_errors=True)
        raise


def remove(output_dir: str) -> None:
    """Deletes the build cache of ``output_dir`` (after a complete build)."""
    shutil.rmtree(os.path.join(output_dir, CACHE_DIR), ignore_errors=True)
