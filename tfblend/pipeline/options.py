"""What a training view reads and how: one options object for every view of a set.

:func:`tfblend.pipeline.frame_dataset`, :func:`tfblend.pipeline.chunk_dataset` and
:func:`tfblend.pipeline.utterance_dataset` take the set (``data_dir``), the batch size (whose
unit is the view's own: frames, output frames, utterances), the optional target set to join, and
one :class:`DatasetOptions` for everything else. A training run builds one options object and
derives each epoch's with :meth:`DatasetOptions.replace`.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from tfblend.errors import DataError

#: The CMVN modes of a view (``DatasetOptions.cmvn``).
CMVN_MODES = ("global", "speaker", "utterance", "none")
#: The per-frame label streams a set may hold (``DatasetOptions.label_key``).
LABEL_KEYS = ("labels", "phones")


@dataclasses.dataclass(frozen=True)
class DatasetOptions:
    """How a view of an utterance set is read, normalised, shuffled, windowed and batched.

    The defaults are the shipped configs' (``tfblend/configs/*.yaml``: 41-frame windows,
    chunks of 8 output frames, global CMVN from the set's own manifest). Every field is checked
    when the object is made (:class:`tfblend.errors.DataError` naming the field); the checks
    that need the set (its labels, its speakers) run when a view opens it.

    Attributes:
      context: W >= 0, frames of context on each side of a frame: windows are float32
        ``[2W+1, D]`` (``frame_dataset``), chunks float32 ``[L+2W, D]`` (``chunk_dataset``).
        Not used by ``utterance_dataset``, which reads whole utterances.
      chunk_frames: L >= 1, output frames per chunk (``chunk_dataset`` only).
      shuffle: shuffle shard order, utterances and rows (frames or chunks); False reads the set
        in canonical order (shards in order, frames in order).
      seed: int, the base of every epoch's seed (epoch ``e`` shuffles with ``seed + e``).
      epoch: int >= 0, the first epoch built (to resume a run at epoch ``e``).
      repeat: False builds epoch ``epoch`` alone (every iteration yields the same order, the
        cardinality is known); True builds epochs ``epoch, epoch+1, ...`` forever.
      deterministic: the same (seed, epoch) gives the same order on every run (parallel maps
        and interleaves keep their order; slower).
      cmvn: one of :data:`CMVN_MODES`: "global", "speaker", "utterance" or "none".
      cmvn_stats: where the statistics come from: None (the set's manifest), a dataset
        directory (its manifest, e.g. the training set's when reading dev/test), a
        :class:`tfblend.features.CmvnStats` (global only) or a manifest's ``cmvn`` dict.
      shuffle_buffer: rows shuffled together, >= 1: frames (``frame_dataset``; memory about
        ``shuffle_buffer * (2W+1) * D * 4`` bytes) or output frames (``chunk_dataset``:
        ``shuffle_buffer // L`` chunks). Not used by ``utterance_dataset``, which permutes
        utterances in blocks of 256.
      drop_remainder: drop each epoch's last partial batch (``frame_dataset``,
        ``chunk_dataset``; ``utterance_dataset`` keeps it).
      label_key: one of :data:`LABEL_KEYS`: "labels" (senones) or "phones".
      bucket_boundaries: ``utterance_dataset`` only: None (one bucket), or increasing positive
        frame counts (stored as a tuple): an utterance of T frames goes to bucket i with
        ``boundaries[i-1] <= T < boundaries[i]``.
    """

    context: int = 20
    chunk_frames: int = 8
    shuffle: bool = True
    seed: int = 0
    epoch: int = 0
    repeat: bool = False
    deterministic: bool = False
    cmvn: str = "global"
    cmvn_stats: Any = None
    shuffle_buffer: int = 65536
    drop_remainder: bool = True
    label_key: str = "labels"
    bucket_boundaries: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.context < 0:
            raise DataError(f"DatasetOptions: need context >= 0, got {self.context}")
        if self.chunk_frames < 1:
            raise DataError(f"DatasetOptions: need chunk_frames >= 1, got {self.chunk_frames}")
        if self.shuffle_buffer < 1:
            raise DataError(f"DatasetOptions: need shuffle_buffer >= 1, got {self.shuffle_buffer}")
        if self.epoch < 0:
            raise DataError(f"DatasetOptions: need epoch >= 0, got {self.epoch}")
        if self.cmvn not in CMVN_MODES:
            raise DataError(f"DatasetOptions: cmvn {self.cmvn!r} not in {CMVN_MODES}")
        if self.label_key not in LABEL_KEYS:
            raise DataError(f"DatasetOptions: label_key {self.label_key!r} not in {LABEL_KEYS}")
        if self.bucket_boundaries is not None:
            boundaries = tuple(int(b) for b in self.bucket_boundaries)
            if any(b <= a for a, b in itertools.pairwise(boundaries)) or (
                boundaries and boundaries[0] <= 0
            ):
                raise DataError(
                    "DatasetOptions: bucket_boundaries must be positive and increasing, "
                    f"got {list(boundaries)}"
                )
            object.__setattr__(self, "bucket_boundaries", boundaries)

    def replace(self, **changes) -> DatasetOptions:
        """A copy with ``changes`` applied (checked again); an unknown name is a TypeError."""
        return dataclasses.replace(self, **changes)
