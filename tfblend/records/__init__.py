"""The on-disk dataset formats: utterance shards, target shard records, manifests.

A dataset is a directory of TFRecord shards and one ``manifest.json`` (docs/formats.md). The
package has one module per concern, and every public name is re-exported here, so that
``from tfblend import records; records.X`` and ``from tfblend.records import X`` work for all:

- :mod:`tfblend.records.manifests`: manifests, shard names, content digests, shard checks;
- :mod:`tfblend.records.utterances`: the utterance format (SequenceExample shards);
- :mod:`tfblend.records.targets`: the target format (sparse teacher targets per utterance).
"""

from tfblend.records.manifests import (
    CACHE_ENV,
    FORMAT_VERSION,
    MANIFEST_NAME,
    TARGET_FORMAT,
    UTTERANCE_FORMAT,
    check_shard_files,
    content_digest,
    feature_values_digest,
    file_sha256,
    read_manifest,
    require_frames,
    shard_paths,
    target_shard_name,
    utterance_shard_name,
    verification_record_path,
    verify_shards,
    write_file,
    write_json,
    write_manifest,
)
from tfblend.records.targets import (
    check_target_layout,
    serialize_targets,
    target_parser,
    target_set_manifest,
    write_target_set,
)
from tfblend.records.utterances import (
    Utterance,
    iterate_utterances,
    utterance_parser,
    write_utterance_shards,
)

__all__ = [
    "CACHE_ENV",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "TARGET_FORMAT",
    "UTTERANCE_FORMAT",
    "Utterance",
    "check_shard_files",
    "check_target_layout",
    "content_digest",
    "feature_values_digest",
    "file_sha256",
    "iterate_utterances",
    "read_manifest",
    "require_frames",
    "serialize_targets",
    "shard_paths",
    "target_parser",
    "target_set_manifest",
    "target_shard_name",
    "utterance_parser",
    "utterance_shard_name",
    "verification_record_path",
    "verify_shards",
    "write_file",
    "write_json",
    "write_manifest",
    "write_target_set",
    "write_utterance_shards",
]
