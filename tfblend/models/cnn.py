"""The student: a time-valid VGG-style CNN, context windows -> logits, or chunks -> frame logits."""

import keras
import tensorflow as tf

from tfblend.models.layers import FrameNormalization, FusedBatchNormalization, TimeConv2D
from tfblend.models.precision import layers_in
from tfblend.models.registry import register_model

#: Architecture presets: conv blocks (filters of each 3x3 conv), the time dilation of each conv
#: (same nesting), the frequency max-pooling factor after each block, and the fully connected
#: layers before the classifier. The named presets see 41 frames (W = 20, the default
#: `data.context`), the paper's context; `small21` and `deep21` are the same models undilated
#: enough to see 21 frames (W = 10), for the context comparison.
PRESETS = {
    # For tests: ~7k weights below the classifier.
    "tiny": {
        "conv_blocks": ((8, 8), (16,)),
        "dilations": ((2, 6), (12,)),
        "pool_sizes": (2, 2),
        "dense_units": (32,),
    },
    # 4 convs of 8 and 16 channels, time-dilated to span 41 frames (the demo's earlier student).
    "small": {
        "conv_blocks": ((8, 8), (16, 16)),
        "dilations": ((2, 4), (6, 8)),
        "pool_sizes": (2, 2),
        "dense_units": (256, 256),
    },
    "small21": {
        "conv_blocks": ((8, 8), (16, 16)),
        "dilations": ((1, 2), (3, 4)),
        "pool_sizes": (2, 2),
        "dense_units": (256, 256),
    },
    # 10 convs + 2 fully connected + classifier (13 weight layers), sized for dense training on
    # 2 CPU cores (see the class docstring); the dilations are the GPU replication's
    # (docs/reference-facts.md section 5).
    "deep": {
        "conv_blocks": ((16, 16), (32, 32), (64, 64, 64), (128, 128, 128)),
        "dilations": ((1, 1), (1, 1), (2, 2, 2), (4, 4, 2)),
        "pool_sizes": (2, 2, 2, 1),
        "dense_units": (512, 512),
    },
    "deep21": {
        "conv_blocks": ((16, 16), (32, 32), (64, 64, 64), (128, 128, 128)),
        "dilations": ((1, 1), (1, 1), (1, 1, 1), (1, 1, 1)),
        "pool_sizes": (2, 2, 2, 1),
        "dense_units": (512, 512),
    },
    # Our reading of the paper's model at GPU scale (see the class docstring).
    "paper": {
        "conv_blocks": ((64, 64), (128, 128), (256, 256, 256)),
        "dilations": ((1, 1), (2, 4), (2, 4, 6)),
        "pool_sizes": (2, 2, 2),
        "dense_units": (2048, 2048, 2048),
    },
}

NORMALIZATIONS = ("frame", "batch")


def _ints(values, what):
    try:
        return tuple(int(v) for v in values)
    except TypeError:
        raise ValueError(f"{what} must be a sequence of integers, got {values!r}") from None


def _conv_stack(spec: dict, conv_blocks, dilations, pool_sizes) -> tuple:
    """``(conv_blocks, dilations, pool_sizes)`` as int tuples: the arguments given, else the
    preset ``spec``'s; ValueError unless every conv has a dilation, every block a frequency pool
    size, and all of them are >= 1."""
    if conv_blocks is None:
        conv_blocks = spec["conv_blocks"]
        dilations = spec["dilations"] if dilations is None else dilations
    conv_blocks = tuple(_ints(block, "each conv block") for block in conv_blocks)
    if dilations is None:
        dilations = tuple((1,) * len(block) for block in conv_blocks)
    dilations = tuple(_ints(block, "each block's dilations") for block in dilations)
    pool_sizes = _ints(
        spec["pool_sizes"] if pool_sizes is None else pool_sizes,
        "pool_sizes (one frequency pooling factor per block; time is never pooled: "
        "dilate the convolutions in time instead)",
    )
    if [len(b) for b in dilations] != [len(b) for b in conv_blocks]:
        raise ValueError(
            f"dilations {dilations} must have one entry per conv of conv_blocks {conv_blocks}"
        )
    if len(pool_sizes) != len(conv_blocks):
        raise ValueError(
            f"need one frequency pool size per conv block: {len(conv_blocks)} blocks, "
            f"{len(pool_sizes)} pool sizes (pooling is over frequency only)"
        )
    if min((d for b in dilations for d in b), default=1) < 1 or min(pool_sizes) < 1:
        raise ValueError(f"dilations {dilations} and pool sizes {pool_sizes} must be >= 1")
    return conv_blocks, dilations, pool_sizes


@register_model("vgg")
@keras.saving.register_keras_serializable(package="tfblend")
class VGGStudent(keras.Model):
    """VGG-style CNN acoustic model, time-valid so that it can be computed densely.

    The input `[B, T, D]` is read as a time x frequency image `[B, T, D / channels, channels]`.
    Each conv block is a stack of [3x3 conv, VALID in time (optionally dilated in time) and SAME
    in frequency (zero padding of one bin on each side), no bias -> normalisation -> ReLU]
    followed by a max pooling over frequency only. Every 3x3 conv of dilation d consumes d
    frames on each side, so the output has `T - receptive_field + 1` frames, where
    `receptive_field = 1 + 2 * sum(dilations)`. Each remaining frame's feature map `[F', C]` is
    flattened and goes through fully connected [dense -> normalisation -> ReLU -> dropout] layers
    and a linear classifier, applied per frame. Channels-last throughout (oneDNN's fast layout).

    Two ways to compute the same function (Sercu & Goel, 2016):
    - windows `[B, 2W+1, D]` with 2W+1 = receptive_field -> logits `[B, K]`: one output frame
      per window (what `serving_default`, `frame_dataset` and the tools use); each window
      recomputes the convolutions of all its context frames;
    - chunks `[B, L+2W, D]` -> logits `[B, L, K]` (dense): one pass computes every frame's
      convolutions once. The conv stack costs about 1/5 (small) to 1/10 (deep) of the window
      path per output frame; the per-frame fully connected layers cost the same in both.
    Pooling never touches time, so in inference mode both paths give the same numbers
    (tests/test_dense.py: max |diff| <= 1e-4, same argmax) with either normalisation.

    Normalisation (`normalization`), chosen by dev accuracy (docs/student.md):
    - "batch" (default): batch normalisation (TensorFlow's fused kernel,
      `FusedBatchNormalization`; `synchronized_bn` for statistics over the global batch under a
      `tf.distribute` strategy, so that N replicas make the 1-replica update). Its
      training-mode statistics cover all positions of the batch, so a window batch and a chunk
      batch over the same frames get different statistics (a window repeats each frame up to
      2W+1 times), and padded frames enter them: the two paths agree in inference mode only,
      which is where users need it (the export's `serving_default` and `utterance`).
    - "frame": `FrameNormalization`, each frame normalised over its own (frequency, channel)
      values in the conv stack and over its units in the fully connected layers. Exact in both
      paths in training mode too, independent of the batch composition and the replica count,
      but it learned slower: 31.9 against 32.1 dev frame accuracy for `small` after 3 epochs
      on the demo corpus, 11.8 against 20.5 for `deep` after 400 steps, -1.1 points after 7
      passes in the GPU replication (docs/reference-facts.md section 5).

    Presets (`PRESETS`; explicit `conv_blocks`, `dilations`, `pool_sizes`, `dense_units`
    override them). The named presets see 41 frames (W = 20, the paper's context and the default
    `data.context`); `small21` and `deep21` are the same layers with smaller time dilations,
    seeing 21 frames (W = 10), for the context comparison. Counts for D = 40 and 5,126 classes;
    MFLOP = forward multiply-adds x 2 per output frame (`tfblend.models.flops`), on windows and
    dense (chunks of 64):
    - `tiny`: conv 8, 8 (dilations 2, 6) | pool 2 | conv 16 (dilation 12) | pool 2 | fc 32.
      For tests. 2.5 / 0.5 MFLOP.
    - `small`: conv 8, 8 | pool 2 | conv 16, 16 | pool 2 | fc 256, 256; time dilations 2, 4, 6, 8
      (`small21`: 1, 2, 3, 4). 1.43M weights (mostly the classifier), 6.1 / 3.1 MFLOP (its convs
      are cheap; the classifier dominates).
    - `deep`: conv 16, 16 | pool 2 | conv 32, 32 | pool 2 | conv 64 x 3 | pool 2 | conv 128 x 3
      | fc 512, 512 (13 weight layers); time dilations 1, 1 | 1, 1 | 2, 2, 2 | 4, 4, 2, those of
      the GPU replication (docs/reference-facts.md section 5; `deep21`: no dilation). Our reading
      of the paper's deep VGG student at CPU scale: as deep as the 10-conv VGG measured for dense
      computation (docs/reference-facts.md section 4), with 512-unit rather than 1024-unit
      fully connected layers, since those and the classifier are what dense computation cannot
      shrink. 3.70M weights (1.07M below the classifier), 105.3 / 14.0
      MFLOP (`deep21`: 42.8 / 13.2). The demo's student, trained densely on chunks of 8.
    - `paper`: conv 64, 64 | pool 2 | conv 128, 128 | pool 2 | conv 256 x 3 | pool 2 |
      fc 2048 x 3 (11 weight layers with the classifier; time dilations 1, 1, 2, 4, 2, 4, 6;
      23.3M weights, 808.6 / 94.1 MFLOP).
      The paper (Geras et al., 2016) says only that the student is "inspired by the models
      recently introduced in image recognition"; its exact architecture is not known here.
      This preset is our reading of that phrase at GPU scale: VGG-style 3x3 stacks as in
      Sercu et al. (2015), who used up to 14 weight layers.

    Args:
        num_classes: number of output classes (senones).
        preset: one of `PRESETS` ("tiny", "small", "small21", "deep", "deep21", "paper").
        conv_blocks: sequence of blocks, each a sequence of conv filter counts.
        dilations: the time dilation of every conv, nested like `conv_blocks` (default: 1).
        pool_sizes: one frequency max-pool factor per block (1: no pooling; padding "same").
        dense_units: sizes of the fully connected hidden layers.
        channels: how many feature streams are stacked along the feature axis (e.g. 3 for
            40 log-mel + deltas + delta-deltas laid out as [static | delta | delta2]); they become
            image channels, so the image is `[T, D / channels, channels]`.
        dropout: dropout rate after each fully connected layer (training only).
        normalization: "batch" or "frame" (above).
        synchronized_bn: with "batch": batch-norm statistics over the global batch under a
            `tf.distribute` strategy (then an N-replica step equals the 1-replica step); on
            several replicas it needs Keras' unfused batch norm (slower on CPU), on one the
            fused kernel runs. With "frame" the statistics are per frame, the same on any number
            of replicas, and the flag changes nothing.

    Call:
        x: float32 `[B, T, D]` CMVN-normalised features (D divisible by `channels`), T >=
            `receptive_field` (ValueError otherwise). Returns float32 logits `[B, K]` when T ==
            `receptive_field` is known statically (windows), else `[B, T - receptive_field + 1,
            K]` (dense; also when T is unknown when traced).
    """

    def __init__(
        self,
        num_classes,
        preset="small",
        conv_blocks=None,
        dilations=None,
        pool_sizes=None,
        dense_units=None,
        channels=1,
        dropout=0.0,
        normalization="batch",
        synchronized_bn=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, not {normalization!r}"
            )
        self.num_classes = int(num_classes)
        self.preset = preset
        self.conv_blocks, self.dilations, self.pool_sizes = _conv_stack(
            PRESETS[preset], conv_blocks, dilations, pool_sizes
        )
        dense_units = PRESETS[preset]["dense_units"] if dense_units is None else dense_units
        self.dense_units = _ints(dense_units, "dense_units")
        self.channels = int(channels)
        self.dropout = float(dropout)
        self.normalization = normalization
        self.synchronized_bn = bool(synchronized_bn)
        with layers_in(self.dtype_policy):
            self._build_layers()

    def _norm(self, name, axis):
        if self.normalization == "frame":
            return FrameNormalization(axis=axis, name=name)
        return FusedBatchNormalization(synchronized=self.synchronized_bn, name=name)

    def _build_layers(self):
        """The conv stack (``body``), the fully connected layers (``head``), the classifier."""
        self.body = []
        for b, (block, rates, pool) in enumerate(
            zip(self.conv_blocks, self.dilations, self.pool_sizes, strict=True)
        ):
            for c, (filters, rate) in enumerate(zip(block, rates, strict=True)):
                self.body += [
                    TimeConv2D(filters, rate, name=f"conv{b}_{c}"),
                    self._norm(f"conv{b}_{c}_norm", axis=2),
                    keras.layers.ReLU(),
                ]
            if pool > 1:
                self.body.append(
                    keras.layers.MaxPooling2D((1, pool), padding="same", name=f"pool{b}")
                )
        self.head = []
        for i, units in enumerate(self.dense_units):
            self.head += [
                keras.layers.Dense(units, use_bias=False, name=f"fc{i}"),
                self._norm(f"fc{i}_norm", axis=1),
                keras.layers.ReLU(),
                keras.layers.Dropout(self.dropout),
            ]
        self.classifier = keras.layers.Dense(self.num_classes, name="logits")

    @property
    def receptive_field(self):
        """Frames of input one output frame depends on: 1 + 2 x the sum of the time dilations."""
        return 1 + 2 * sum(sum(block) for block in self.dilations)

    @property
    def context(self):
        """W, the context on each side of a frame: (receptive_field - 1) // 2."""
        return (self.receptive_field - 1) // 2

    def _image(self, x):
        """[B, T, D] -> [B, T, D / channels, channels] (stream c of frame t is D-slice c)."""
        if self.channels == 1:
            return x[..., None]
        d = x.shape[2]
        x = tf.reshape(x, [tf.shape(x)[0], tf.shape(x)[1], self.channels, d // self.channels])
        return tf.transpose(x, [0, 1, 3, 2])

    def _check_frames(self, frames):
        if frames is not None and frames < self.receptive_field:
            raise ValueError(
                f"VGGStudent: input has {frames} frames, fewer than its receptive field of "
                f"{self.receptive_field} (windows need 2W+1 = {self.receptive_field} frames)"
            )

    def build(self, input_shape):
        _, t, d = input_shape
        if d % self.channels:
            raise ValueError(f"feature dim {d} is not divisible by channels={self.channels}")
        self._check_frames(t)
        shape = (None, t, d // self.channels, self.channels)
        for layer in self.body:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self._frame_units = shape[2] * shape[3]
        shape = (None, self._frame_units)
        for layer in [*self.head, self.classifier]:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, x, training=False):
        frames = x.shape[1]
        self._check_frames(frames)
        if frames is None:
            tf.debugging.assert_greater_equal(
                tf.shape(x)[1],
                self.receptive_field,
                message=f"VGGStudent: input has fewer frames than its receptive field "
                f"{self.receptive_field}",
            )
        y = self._image(x)
        for layer in self.body:
            y = layer(y, training=training)
        # Per-frame fully connected layers on [B * T', F' * C] (plain MatMuls).
        outer = tf.shape(y)[:2]
        y = tf.reshape(y, [-1, self._frame_units])
        for layer in self.head:
            y = layer(y, training=training)
        logits = tf.cast(self.classifier(y), tf.float32)
        if frames == self.receptive_field:
            return logits
        logits = tf.reshape(logits, tf.concat([outer, [self.num_classes]], 0))
        out = None if frames is None else frames - self.receptive_field + 1
        return tf.ensure_shape(logits, [x.shape[0], out, self.num_classes])

    def compute_output_shape(self, input_shape):
        frames = input_shape[1]
        if frames == self.receptive_field:
            return (input_shape[0], self.num_classes)
        out = None if frames is None else frames - self.receptive_field + 1
        return (input_shape[0], out, self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            preset=self.preset,
            conv_blocks=[list(b) for b in self.conv_blocks],
            dilations=[list(b) for b in self.dilations],
            pool_sizes=list(self.pool_sizes),
            dense_units=list(self.dense_units),
            channels=self.channels,
            dropout=self.dropout,
            normalization=self.normalization,
            synchronized_bn=self.synchronized_bn,
        )
        return config
