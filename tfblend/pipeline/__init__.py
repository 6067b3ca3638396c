"""tf.data input pipelines over utterance sets: CMVN, the checked join with targets, windows.

Four views of a set written by ``tfblend.records.write_utterance_shards``; the three training
views take the set, a batch size in their own unit, an optional ``targets_dir`` and one
:class:`DatasetOptions` (context, chunking, shuffling, seeds and epochs, CMVN, labels), e.g.
``frame_dataset(train_dir, DatasetOptions(context=20, seed=1), batch_size=256)``:

- ``frame_dataset``: shuffled batches of spliced context windows (the CNN/DNN student's input);
- ``chunk_dataset``: shuffled batches of utterance chunks, L output frames plus 2W frames of
  context with a frame mask (``labels >= 0``), for students computed densely over time;
- ``utterance_dataset``: padded (optionally length-bucketed) batches of whole utterances (the LSTM
  teacher's input);
- ``eval_utterances``: single utterances in canonical order, ids kept (evaluation, target dumps).

**CMVN** (``DatasetOptions.cmvn``): "global" (mean/variance normalisation with one set of
statistics), "speaker" (statistics of the utterance's speaker), "utterance" (the utterance's own
statistics, computed in the map) or "none". The statistics come from ``cmvn_stats``: None (the
manifest of ``data_dir``), a dataset directory (its manifest, e.g. the training set's when
reading dev/test), a ``CmvnStats`` (global only) or a manifest's ``cmvn`` dict
``{"global": ..., "speakers": ...}``.

**Epochs and seeds** (``DatasetOptions`` fields). One call builds one epoch (``repeat=False``;
every iteration of the returned dataset yields the same order), or all epochs from ``epoch`` on
(``repeat=True``; infinite, epochs never share a batch, so pass the one-epoch dataset's
cardinality as ``steps_per_epoch`` to Keras). Epoch ``e`` shuffles shards and frames (chunks)
with seed ``seed + e`` and is recomputable: with ``deterministic=True`` the same (seed, epoch)
gives the same order on every run; to resume training at epoch ``e`` pass ``epoch=e``, and to
resume mid-epoch skip the batches taken (``dataset.skip(step)``, as
:func:`tfblend.train.fit.fit_resumable` does). ``shuffle=False`` reads the set in canonical
order (shards in order, frames in order).

**Opening a set** verifies its shards' sha256 (``records.verify_shards``, cached by size and
mtime) and, while reading, fails a tf assertion naming the utterance and its shard file on
NaN/Inf features or on target ids/probabilities out of range.

**The join with targets** (``targets_dir``): before building, the target manifest must record
the utterance set's ``records.feature_values_digest`` as its ``features_digest`` and agree on the
number of utterances, shards (and per-shard counts where recorded) and classes (DataError naming
both directories); while reading, shard i of the utterances is zipped with shard i of the
targets and each pair must agree on ``utt_id`` and ``num_frames`` (a tf assertion naming the
utterance and both directories fails the iteration otherwise).
"""

from tfblend.pipeline.chunks import PAD_LABEL, chunk_dataset, edge_pad, num_chunks, to_chunks
from tfblend.pipeline.frames import eval_utterances, frame_dataset, utterance_dataset
from tfblend.pipeline.options import CMVN_MODES, LABEL_KEYS, DatasetOptions
from tfblend.pipeline.shuffling import shuffle_blocks, stateless_permutation
from tfblend.pipeline.source import splice
from tfblend.pipeline.windows import WINDOW_CHUNK, map_windows

__all__ = [
    "CMVN_MODES",
    "LABEL_KEYS",
    "DatasetOptions",
    "PAD_LABEL",
    "WINDOW_CHUNK",
    "chunk_dataset",
    "edge_pad",
    "eval_utterances",
    "frame_dataset",
    "map_windows",
    "num_chunks",
    "shuffle_blocks",
    "splice",
    "stateless_permutation",
    "to_chunks",
    "utterance_dataset",
]
