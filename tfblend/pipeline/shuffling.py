"""Stateless shuffling and the epoch stream of the pipelines.

Every random order in :mod:`tfblend.pipeline` is a pure function of an epoch seed (an int, or a
tensor inside ``flat_map``), so a resumed run reads the very batches the killed one would have
read: shards are permuted with :func:`stateless_permutation`, records and rows with
:func:`shuffle_blocks`, and :func:`epochs` numbers the epochs that carry those seeds.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


def seed_pair(seed, stream) -> tf.Tensor:
    """int64 [2] seed of a stateless random op from an epoch seed (int or tensor) and a stream."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(stream, tf.int64)])


def stateless_permutation(size, seed) -> tf.Tensor:
    """A random permutation of ``range(size)``, a pure function of ``seed`` (int64 [2])."""
    return tf.argsort(tf.random.stateless_uniform([size], seed=seed))


def shuffle_blocks(dataset: tf.data.Dataset, block: int, seed) -> tf.data.Dataset:
    """Shuffles ``dataset`` by permuting each run of ``block`` consecutive elements.

    The permutations are stateless (a function of ``seed`` and the block's index), so the order
    is recomputable from the seed alone, also when ``seed`` is a tensor (an epoch number inside
    ``flat_map``): ``Dataset.shuffle`` cannot take a tensor seed once ``tf.random.set_seed(0)``
    was called (TensorFlow compares the seed pair to (0, 0) in Python). Memory is one block.
    """

    def permute(index, elements):
        size = tf.shape(tf.nest.flatten(elements)[0])[0]
        order = stateless_permutation(size, seed_pair(seed, index))
        return tf.nest.map_structure(lambda value: tf.gather(value, order), elements)

    return dataset.batch(block).enumerate().map(permute).unbatch()


def epochs(build_epoch: Callable, epoch: int, repeat: bool) -> tf.data.Dataset:
    """Epoch ``epoch`` alone, or epochs ``epoch, epoch+1, ...`` forever, each from a seed tensor."""
    if repeat:
        stream = tf.data.Dataset.counter(start=epoch).flat_map(build_epoch)
        return stream.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    return tf.data.Dataset.range(epoch, epoch + 1).flat_map(build_epoch)
