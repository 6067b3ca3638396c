"""Layers shared by the models: fused batch norm, per-frame normalisation, time-valid conv."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfblend")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed with TensorFlow's fused kernel.

    Keras 3 normalises with separate moment, normalisation and update ops, which on CPU take
    several times as long as TensorFlow's `FusedBatchNormV3` (oneDNN; docs/student.md).
    This layer keeps Keras' variables, configuration,
    moving-average rule and `training`/`trainable` semantics, and runs the fused kernel for
    float32 or bfloat16 inputs (`mixed_bfloat16`: statistics, scale and offset stay float32)
    of rank 2 (`[B, C]`) or 4 (`[B, H, W, C]`) normalised over the last axis.
    With `synchronized=True` it also fuses when the step runs on one replica (where the
    synchronised statistics are the local ones). Anything else (masks, synchronised statistics
    over several replicas, renorm, other axes or dtypes) falls back to the Keras implementation.
    """

    def _can_fuse(self, inputs, mask):
        replicas = tf.distribute.get_replica_context()
        return (
            mask is None
            and not (self.synchronized and (replicas is None or replicas.num_replicas_in_sync > 1))
            and not self.renorm
            and inputs.dtype in (tf.float32, tf.bfloat16)
            and len(inputs.shape) in (2, 4)
            and self.axis in (-1, len(inputs.shape) - 1)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = inputs if len(inputs.shape) == 4 else inputs[:, None, None, :]
        channels = x.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels])
        beta = self.beta if self.center else tf.zeros([channels])
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True
            )
            # The kernel returns the Bessel-corrected variance; Keras averages the biased one.
            count = tf.cast(tf.size(x) // channels, tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                gamma,
                beta,
                mean=self.moving_mean,
                variance=self.moving_variance,
                epsilon=self.epsilon,
                is_training=False,
            )
        return y if len(inputs.shape) == 4 else y[:, 0, 0, :]


@keras.saving.register_keras_serializable(package="tfblend")
class FrameNormalization(keras.layers.Layer):
    """Normalisation of each frame over its own features: position-local, batch-independent.

    For an image `[B, T, F, C]` every (b, t) is normalised over its (F, C) values; for frames
    `[N, U]` every row over its U values (a layer normalisation). A learned per-channel scale
    `gamma [C]` and offset `beta [C]` (last axis) follow, as in batch normalisation.

    Because the statistics of an output position depend only on that position, a model built
    from this layer computes the same numbers on a context window and on a dense chunk, in
    training as in inference mode, on one replica or many, and a masked (padded) frame changes
    no other frame. Batch normalisation has none of these properties in training mode: its
    statistics cover the whole batch, and a batch of windows repeats each frame's activations
    up to 2W+1 times.

    The statistics are computed in float32 for any compute dtype (bfloat16 included), and the
    result is returned in the layer's compute dtype.

    Args:
        axis: the axes normalised over, counted from the end (1: the last axis; 2: the last two).
        epsilon: added to the variance.
    """

    def __init__(self, axis=1, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(
            shape=(channels,), initializer="ones", name="gamma", autocast=False
        )
        self.beta = self.add_weight(
            shape=(channels,), initializer="zeros", name="beta", autocast=False
        )
        self.built = True

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        axes = list(range(len(x.shape) - self.axis, len(x.shape)))
        mean, variance = tf.nn.moments(x, axes, keepdims=True)
        scale = tf.math.rsqrt(variance + self.epsilon) * self.gamma
        return tf.cast((x - mean) * scale + self.beta, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="tfblend")
class TimeConv2D(keras.layers.Layer):
    """3x3 convolution VALID in time (time dilation `dilation`), SAME in frequency, no bias.

    `[B, T, F, C] -> [B, T - 2 * dilation, F, filters]`: frequency is zero-padded by one bin on
    each side; output frame t sees input frames t, t + dilation, t + 2 * dilation. A dilated
    conv is computed as an undilated one over the `dilation` interleaved phases of time (frames
    t = r mod d stacked along the batch axis, then put back in order), so it costs what an
    undilated conv of the same size costs: TensorFlow's CPU kernels have no gradient for dilated
    Conv2D, three 1x3 convs on shifted slices take 2.4x as long (measured on 2 AVX2 cores,
    2026-12-05), and `tf.nn.convolution`'s space-to-batch rewrite also pads frequency and fails on
    empty batches.

    Args:
        filters: output channels.
        dilation: time dilation (>= 1).
    """

    def __init__(self, filters, dilation=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.dilation = int(dilation)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(3, 3, input_shape[-1], self.filters), initializer="glorot_uniform", name="kernel"
        )
        self.built = True

    def call(self, inputs):
        d = self.dilation
        x = tf.pad(inputs, [[0, 0], [0, 0], [1, 1], [0, 0]])
        if d == 1:
            return tf.nn.conv2d(x, self.kernel, 1, "VALID")
        batch, frames = tf.shape(x)[0], tf.shape(x)[1]
        bins, channels = x.shape[2], x.shape[3]
        # Time padded to a multiple of d: phase r holds frames r, r + d, r + 2d, ... as `rows`.
        rows = (frames + d - 1) // d
        x = tf.pad(x, [[0, 0], [0, rows * d - frames], [0, 0], [0, 0]])
        x = tf.reshape(x, [batch, rows, d, bins, channels])
        x = tf.reshape(tf.transpose(x, [0, 2, 1, 3, 4]), [batch * d, rows, bins, channels])
        y = tf.nn.conv2d(x, self.kernel, 1, "VALID")
        y = tf.reshape(y, [batch, d, rows - 2, bins - 2, self.filters])
        y = tf.reshape(tf.transpose(y, [0, 2, 1, 3, 4]), [batch, (rows - 2) * d, bins - 2, -1])
        y = y[:, : frames - 2 * d]
        return tf.ensure_shape(y, self.compute_output_shape(inputs.shape))

    def compute_output_shape(self, input_shape):
        b, t, f, _ = input_shape
        return (b, None if t is None else t - 2 * self.dilation, f, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "dilation": self.dilation}
