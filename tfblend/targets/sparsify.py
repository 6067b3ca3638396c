"""A teacher's distribution over K classes -> a few ``(id, prob)`` pairs per frame.

Methods (per frame, from the teacher's distribution ``p`` over K classes):

- ``topk``: the k most probable classes, sorted by descending probability.
- ``topp``: the smallest set of most probable classes holding mass ``p`` (at most ``cap``
  classes); stored padded to ``cap`` entries with probability 0.
- ``sampled``: ``m`` draws from ``p``; the distinct ids drawn, with importance weights
  ``count / m``. ``E[sum_i w_i f(i)] = sum_c p_c f(c)`` for any f, so a soft cross-entropy on
  these weights is an unbiased estimate of the dense one (Sparse Logit Sampling, Anshumann et al.,
  ACL 2025; Kaldi's expectation-preserving random prune). Padded to ``m`` entries with weight 0.

Temperature: probabilities are stored at T = 1. The student softens them later: over a kept set,
``softmax(z / T) ∝ p ** (1 / T)``, so the renormalised top-k at any T is exact from T = 1
probabilities, and one dump serves every T of a sweep. (Storing logits would cost the same bytes
but could not be quantised as log-probabilities without the normaliser.)

The stored layout and the dump itself: :mod:`tfblend.targets`.
"""

import numpy as np
import tensorflow as tf

from tfblend.errors import DataError

METHODS = ("topk", "topp", "sampled")


def top_k_targets(log_probs: tf.Tensor, k: int):
    """The k most probable classes of every frame.

    Args:
      log_probs: float32 ``[..., K]`` teacher log-probabilities (T = 1).
      k: entries kept per frame.

    Returns:
      ``(ids int32 [..., k], probs float32 [..., k], mass float32 [...])``, sorted by
      descending probability; ``mass`` is the probability kept.
    """
    values, ids = tf.math.top_k(log_probs, k=k, sorted=True)
    probs = tf.exp(values)
    return ids, probs, tf.reduce_sum(probs, axis=-1)


def top_p_targets(log_probs: tf.Tensor, p: float, cap: int):
    """The smallest most-probable set holding mass ``p``, at most ``cap`` classes.

    Returns:
      ``(ids int32 [..., cap], probs float32 [..., cap], mass float32 [...])``: entries past the
      set have probability 0 (their ids are kept but carry no weight).
    """
    ids, probs, _ = top_k_targets(log_probs, cap)
    before = tf.cumsum(probs, axis=-1, exclusive=True)
    probs = tf.where(before < p, probs, 0.0)
    return ids, probs, tf.reduce_sum(probs, axis=-1)


def sampled_targets(log_probs: tf.Tensor, m: int, seed):
    """``m`` draws per frame from the teacher: distinct ids with importance weights count / m.

    Args:
      log_probs: float32 ``[N, K]``.
      m: draws per frame (also the stored width).
      seed: int32 ``[2]`` stateless seed.

    Returns:
      ``(ids int32 [N, m], weights float32 [N, m], mass float32 [N])``: weights sum to 1 per
      frame, sorted by descending weight, padded with weight 0; mass is the teacher probability
      of the distinct ids drawn.
    """
    num_classes = tf.shape(log_probs)[-1]
    draws = tf.random.stateless_categorical(log_probs, m, seed, dtype=tf.int32)
    counts = tf.math.bincount(draws, minlength=num_classes, maxlength=num_classes, axis=-1)
    top_counts, ids = tf.math.top_k(tf.cast(counts, tf.float32), k=m, sorted=True)
    weights = top_counts / float(m)
    drawn = tf.cast(top_counts > 0, tf.float32)
    mass = tf.reduce_sum(tf.exp(tf.gather(log_probs, ids, batch_dims=1)) * drawn, axis=-1)
    return ids, weights, mass


def resolve_k(num_classes: int, k: int = 0, top_fraction: float = 0.0) -> int:
    """k from ``--k`` or ``--top_fraction`` (rounded, at least 1, at most K)."""
    if bool(k) == bool(top_fraction):
        raise DataError("give exactly one of --k and --top_fraction")
    if top_fraction:
        if not 0 < top_fraction <= 1:
            raise DataError(f"--top_fraction must be in (0, 1], not {top_fraction}")
        k = max(1, round(top_fraction * num_classes))
    if not 1 <= k <= num_classes:
        raise DataError(f"k = {k} is outside [1, {num_classes}] for {num_classes} classes")
    return k


def id_dtype(num_classes: int) -> str:
    """The stored ids' dtype: int16 while every class id fits, else int32."""
    return "int16" if num_classes <= np.iinfo(np.int16).max + 1 else "int32"


class Sparsifier:
    """Teacher logits ``[B, T, K]`` -> per-frame sparse targets, by method.

    Args:
      method: one of :data:`METHODS`.
      width: entries stored per frame (k, the top-p cap, or the draws m).
      p: the top-p mass (``topp`` only).
      seed: the sampled draws' seed (``sampled`` only; each batch also mixes in its index).

    Called with ``(logits float [B, T, K], batch_index)``, it returns
    ``(ids int32 [B, T, width], probs float32 [B, T, width], mass float32 [B, T])``.
    """

    def __init__(self, method: str, width: int, p: float, seed: int):
        self.method, self.width, self.p, self.seed = method, width, p, seed

    def __call__(self, logits: tf.Tensor, batch_index: int):
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        if self.method == "topk":
            return top_k_targets(log_probs, self.width)
        if self.method == "topp":
            return top_p_targets(log_probs, self.p, self.width)
        shape = tf.shape(log_probs)
        flat = tf.reshape(log_probs, [-1, shape[-1]])
        seed = tf.stack([tf.constant(self.seed, tf.int32), tf.cast(batch_index, tf.int32)])
        ids, weights, mass = sampled_targets(flat, self.width, seed)
        frames = shape[:-1]
        return (
            tf.reshape(ids, tf.concat([frames, [self.width]], 0)),
            tf.reshape(weights, tf.concat([frames, [self.width]], 0)),
            tf.reshape(mass, frames),
        )
