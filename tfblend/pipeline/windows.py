"""A function run window by window over context windows, a bounded number at a time.

Scoring a window model (``[N, 2W+1, D] -> [N, K]``) on every frame of an utterance, or of a
padded batch of them, runs it on :data:`WINDOW_CHUNK` windows at a time, which bounds the
activations' memory whatever the utterances' length: :func:`map_windows`. The windows are
:func:`tfblend.pipeline.splice`'s (edge frames repeated within each utterance).
"""

import tensorflow as tf

#: Windows per call of a window model when it scores whole utterances (target dumps, scoring).
WINDOW_CHUNK = 2048


def map_windows(fn, windows: tf.Tensor) -> tf.Tensor:
    """``fn`` on ``windows`` ``[N, 2W+1, D]``, :data:`WINDOW_CHUNK` windows per call, the
    results concatenated: float32 ``[N, ...]``. Runs eagerly (``fn`` a ``tf.function``, called
    once per chunk) and traced inside a ``tf.function`` (a ``tf.while_loop``) alike."""
    count = tf.shape(windows)[0]
    chunks = (count + WINDOW_CHUNK - 1) // WINDOW_CHUNK

    def body(i, parts):
        chunk = windows[i * WINDOW_CHUNK : (i + 1) * WINDOW_CHUNK]
        return i + 1, parts.write(i, tf.cast(fn(chunk), tf.float32))

    parts = tf.TensorArray(tf.float32, size=chunks, infer_shape=False)
    _, parts = tf.while_loop(lambda i, _: i < chunks, body, (0, parts))
    return parts.concat()
