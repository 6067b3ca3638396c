"""Manifests and digests: what a dataset directory records about itself, and the checks on it.

A dataset is a directory of TFRecord shards and one ``manifest.json`` (docs/formats.md). This
module reads and writes manifests atomically, names shard files, computes content digests and
checks shard files against what their manifest records (existence, size, sha256). The record
formats themselves are in :mod:`tfblend.records.utterances` and :mod:`tfblend.records.targets`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable

from tfblend.errors import DataError

UTTERANCE_FORMAT = "tfblend.utterances"
TARGET_FORMAT = "tfblend.targets"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

_UTTERANCE_KEYS = (
    "num_utterances",
    "num_frames",
    "feature_dim",
    "num_classes",
    "num_phones",
    "has_labels",
    "has_phones",
    "shards",
    "content_digest",
    "cmvn",
    "speakers",
    "metadata",
)
_TARGET_KEYS = (
    "num_utterances",
    "num_classes",
    "k",
    "id_dtype",
    "value_encoding",
    "log_step",
    "has_mass",
    "features_digest",
    "shards",
)
_REQUIRED_KEYS = {UTTERANCE_FORMAT: _UTTERANCE_KEYS, TARGET_FORMAT: _TARGET_KEYS}


def utterance_shard_name(index: int, num_shards: int) -> str:
    """``utts-{index:05d}-of-{num_shards:05d}.tfrecord``."""
    return f"utts-{index:05d}-of-{num_shards:05d}.tfrecord"


def target_shard_name(index: int, num_shards: int) -> str:
    """``targets-{index:05d}-of-{num_shards:05d}.tfrecord``."""
    return f"targets-{index:05d}-of-{num_shards:05d}.tfrecord"


def content_digest(pairs: Iterable[tuple[str, int]]) -> str:
    """sha256 hex digest of the lines ``f"{utt_id}\\t{num_frames}\\n"`` in the given order."""
    digest = hashlib.sha256()
    for utt_id, num_frames in pairs:
        digest.update(f"{utt_id}\t{int(num_frames)}\n".encode())
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes (shard checksums, model digests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path, value, *, sort_keys: bool = False) -> None:
    """Write ``value`` as JSON to ``path`` atomically (:func:`write_file`): readers see the old
    file or the complete new one, never a half-written one."""
    write_file(path, json.dumps(value, indent=1, sort_keys=sort_keys) + "\n")


def write_file(path, data: bytes | str) -> None:
    """Writes ``data`` to ``path`` atomically: a temporary sibling (``.<name>.tmp-<pid>``),
    fsynced, renamed into place. A failure (a full disk, a read-only or missing directory)
    leaves no partial or temporary file and raises DataError "cannot write <path>: <cause>".

    The one way tfblend writes a file whole: JSON records, the resume state, the model, the
    training history."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    tmp_path = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
    if isinstance(data, str):
        data = data.encode()
    try:
        with open(tmp_path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except OSError as error:
        raise DataError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp_path)


def write_manifest(directory, manifest: dict) -> None:
    """Write ``manifest.json`` in ``directory`` atomically (keys sorted)."""
    write_json(os.path.join(directory, MANIFEST_NAME), manifest, sort_keys=True)


def read_manifest(directory, expected_format: str = UTTERANCE_FORMAT) -> dict:
    """Load and check ``directory/manifest.json``.

    Raises:
      DataError naming the path when the manifest is missing, unreadable, of another format or
      version, or lacks a required key.
    """
    path = os.path.join(directory, MANIFEST_NAME)
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except FileNotFoundError as err:
        raise DataError(f"{path}: no manifest (not a tfblend dataset directory?)") from err
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable manifest ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != expected_format:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{path}: format {found!r}, expected {expected_format!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {manifest.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    missing = [key for key in _REQUIRED_KEYS.get(expected_format, ()) if key not in manifest]
    if missing:
        raise DataError(f"{path}: manifest lacks {missing}")
    return manifest


def shard_paths(directory, manifest: dict) -> list[str]:
    """Paths of the manifest's shards in canonical order (DataError on a non-basename entry)."""
    paths = []
    for shard in manifest["shards"]:
        name = shard["file"]
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise DataError(f"{directory}: manifest shard entry {name!r} is not a file name")
        paths.append(os.path.join(directory, name))
    return paths


def check_shard_files(directory, manifest: dict) -> list[str]:
    """Cheap pre-read check: every shard exists and has the recorded size. Returns the paths.

    Catches missing and truncated shards before a pipeline starts; ``verify_shards`` also checks
    the content.
    """
    paths = shard_paths(directory, manifest)
    for path, shard in zip(paths, manifest["shards"], strict=True):
        try:
            size = os.path.getsize(path)
        except OSError as err:
            raise DataError(f"{path}: shard missing or unreadable ({err.strerror})") from err
        if "bytes" in shard and size != shard["bytes"]:
            raise DataError(
                f"{path}: shard has {size} bytes, manifest says {shard['bytes']} (truncated?)"
            )
    return paths


def require_frames(directory, manifest: dict, purpose: str) -> None:
    """DataError unless the utterance set holds at least one utterance and one frame.

    The tools never write an empty set (:func:`tfblend.records.write_utterance_shards` refuses
    one), but a set made by other means may hold no utterances (or none with frames); every
    step that reads a split checks it first, so that the step ends in one line instead of
    waiting for a batch that never comes or dividing by zero.

    Args:
      directory: the set (one split).
      manifest: its manifest (:func:`read_manifest`).
      purpose: what the step would do with it, e.g. "train on", "dump targets of".
    """
    utterances, frames = manifest.get("num_utterances", 0), manifest.get("num_frames", 0)
    if utterances < 1 or frames < 1:
        raise DataError(
            f"{directory}: the split has {utterances} utterances and {frames} frames, nothing "
            f"to {purpose}; give a split with utterances in it (make_corpus.py or "
            "import_kaldi.py write one)"
        )


def feature_values_digest(manifest: dict) -> str:
    """sha256 hex digest of an utterance set's feature *values* (and everything else it stores).

    Built from the manifest's ``content_digest`` (the ordered ids and frame counts) and the
    sha256 of every shard in order: two sets agree only if they hold the same records byte for
    byte, so another front end, added deltas or other CMVN-ed values with the same ids and lengths
    give another digest. Target sets record it as ``features_digest``.
    """
    digest = hashlib.sha256(f"{manifest['content_digest']}\n".encode())
    for shard in manifest["shards"]:
        digest.update(f"{shard['file']}\t{shard['sha256']}\n".encode())
    return digest.hexdigest()


CACHE_ENV = "TFBLEND_CACHE_DIR"


def verification_record_path(directory) -> str:
    """Where :func:`verify_shards` records the verified shards of ``directory``:
    ``$TFBLEND_CACHE_DIR`` (default ``~/.cache/tfblend``)
    ``/verified-shards/<digest of the absolute path>.json``, outside the dataset, which stays
    untouched (and may be read-only)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "tfblend")
    key = hashlib.sha256(os.path.abspath(os.fspath(directory)).encode()).hexdigest()[:24]
    return os.path.join(root, "verified-shards", f"{key}.json")


def verify_shards(directory, manifest: dict) -> None:
    """Check each shard's existence, size and sha256 against the manifest.

    A shard whose sha256 was verified before is not hashed again while its size, mtime and inode
    are unchanged: the verifications are kept in :func:`verification_record_path`
    (``{file: {"bytes", "mtime_ns", "inode", "sha256"}}``, written atomically; skipped when the
    cache cannot be written, which then re-hashes on every open).

    Raises:
      DataError naming the first bad shard.
    """
    directory = os.fspath(directory)
    sidecar = verification_record_path(directory)
    try:
        with open(sidecar) as handle:
            verified = json.load(handle)
        if not isinstance(verified, dict):
            verified = {}
    except (OSError, ValueError):
        verified = {}
    updated = {}
    for path, shard in zip(check_shard_files(directory, manifest), manifest["shards"], strict=True):
        if "sha256" not in shard:
            raise DataError(f"{path}: the manifest records no sha256 for this shard")
        status = os.stat(path)
        key = {
            "bytes": status.st_size,
            "mtime_ns": status.st_mtime_ns,
            "inode": status.st_ino,
            "sha256": shard["sha256"],
        }
        if verified.get(shard["file"]) != key and file_sha256(path) != shard["sha256"]:
            raise DataError(f"{path}: sha256 mismatch with the manifest (corrupt shard)")
        updated[shard["file"]] = key
    if updated != verified:
        with contextlib.suppress(OSError, DataError):  # a cache it cannot write
            os.makedirs(os.path.dirname(sidecar), exist_ok=True)
            write_json(sidecar, updated, sort_keys=True)
