"""Teacher outputs -> stored sparse soft targets (the on-disk format is :mod:`tfblend.records`).

- :mod:`tfblend.targets.dump`: run the teacher once over a split, write target shards in the
  utterance shards' order, and cut smaller k from a dump (``dump_targets``, ``derive_targets``);
- :mod:`tfblend.targets.sparsify`: how a frame's distribution becomes its few ``(id, prob)``
  pairs (top-k, top-p, sampled; ``Sparsifier``, ``resolve_k``);
- :mod:`tfblend.targets.teachers`: the teacher of a dump, one model or a weighted mixture.
"""

from tfblend.targets.dump import derive_targets, dump_targets

__all__ = ["derive_targets", "dump_targets"]
