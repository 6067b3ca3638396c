"""The student: a VGG-style CNN over a context window of frames, window -> senone logits."""

import keras
import tensorflow as tf

from tfblend.models.layers import FusedBatchNormalization
from tfblend.models.registry import register_model

#: Architecture presets: conv blocks (filters of each 3x3 conv in the block), the max-pooling
#: (time, frequency) after each block, and the fully connected layers before the classifier.
PRESETS = {
    # For tests: ~60k weights below the classifier (21 x 40 windows).
    "tiny": {"conv_blocks": ((8,), (16,)), "pool_sizes": ((1, 2), (2, 2)), "dense_units": (32,)},
    # The demo model, sized for ~300k training frames on 2 CPU cores (see the class docstring).
    "small": {
        "conv_blocks": ((8, 8), (16, 16)),
        "pool_sizes": ((1, 2), (2, 2)),
        "dense_units": (256, 256),
    },
    # Our reading of the paper's model at GPU scale (see the class docstring).
    "paper": {
        "conv_blocks": ((64, 64), (128, 128), (256, 256, 256)),
        "pool_sizes": ((1, 2), (2, 2), (2, 2)),
        "dense_units": (2048, 2048, 2048),
    },
}


@register_model("vgg")
@keras.saving.register_keras_serializable(package="tfblend")
class VGGStudent(keras.Model):
    """VGG-style CNN acoustic model on a context window, treated as a time x frequency image.

    Each conv block is a stack of [3x3 conv (same padding, no bias) -> batch norm -> ReLU] followed
    by a max pooling; the first pooling is over frequency only (1, 2), so time resolution is kept
    while the early layers are cheap, later ones pool (2, 2) (Sercu et al., 2015). The feature map
    is flattened and passed through fully connected [dense -> batch norm -> ReLU -> dropout]
    layers and a linear classifier. Channels-last throughout (the fast layout for oneDNN on CPU).

    Presets (`PRESETS`; explicit `conv_blocks`, `pool_sizes`, `dense_units` override them):
    - `tiny`: conv 8 | pool(1,2) | conv 16 | pool(2,2) | fc 32. For tests.
    - `small`: conv 8, 8 | pool(1,2) | conv 16, 16 | pool(2,2) | fc 256, 256. The demo: with
      21 x 40 windows and 5,126 classes it has ~1.8M weights (mostly the classifier) and ~8 MFLOP
      per frame forward; it trains an epoch of the small corpus (~270k frames) in about 80 s on
      2 CPU cores, so that the demo's five models fit in 30 minutes. It is the size of the
      prototype in shared/NOTES.md section 6, which showed the blending effect on this corpus.
    - `paper`: conv 64, 64 | pool(1,2) | conv 128, 128 | pool(2,2) | conv 256, 256, 256 |
      pool(2,2) | fc 2048 x 3 (11 weight layers with the classifier; 36M weights, 0.64 GFLOP
      per frame forward at 21 x 40 and 5,126 classes). The paper (Geras et al.,
      2016) says only that the student is "inspired by the models recently introduced in image
      recognition"; its exact architecture is not known here. This preset is our reading of
      that phrase at GPU scale: VGG-style 3x3 stacks as in Sercu et al. (2015), who used up to
      14 weight layers.

    Args:
        num_classes: number of output classes (senones).
        preset: one of `PRESETS` ("tiny", "small", "paper").
        conv_blocks: sequence of blocks, each a sequence of conv filter counts.
        pool_sizes: one (time, frequency) max-pool size per block (padding "same").
        dense_units: sizes of the fully connected hidden layers.
        channels: how many feature streams are stacked along the feature axis (e.g. 3 for
            40 log-mel + deltas + delta-deltas laid out as [static | delta | delta2]); they become
            image channels, so the image is `[2W+1, D / channels, channels]`.
        dropout: dropout rate after each fully connected layer (training only).
        synchronized_bn: compute batch-norm statistics over the global batch under a
            `tf.distribute` strategy (then an N-replica step equals the 1-replica step on the
            same global batch); off by default: it needs Keras' unfused batch norm, which on
            CPU is about 4x slower than the fused kernel used otherwise (`FusedBatchNormalization`).

    Call:
        windows: float32 `[B, 2W+1, D]` CMVN-normalised feature windows (D divisible by
            `channels`). Returns float32 logits `[B, num_classes]`.
    """

    def __init__(
        self,
        num_classes,
        preset="small",
        conv_blocks=None,
        pool_sizes=None,
        dense_units=None,
        channels=1,
        dropout=0.0,
        synchronized_bn=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        spec = PRESETS[preset]
        conv_blocks = spec["conv_blocks"] if conv_blocks is None else conv_blocks
        pool_sizes = spec["pool_sizes"] if pool_sizes is None else pool_sizes
        dense_units = spec["dense_units"] if dense_units is None else dense_units
        if len(pool_sizes) != len(conv_blocks):
            raise ValueError(
                f"need one pool size per conv block: {len(conv_blocks)} blocks, "
                f"{len(pool_sizes)} pool sizes"
            )
        self.num_classes = int(num_classes)
        self.preset = preset
        self.conv_blocks = tuple(tuple(int(f) for f in block) for block in conv_blocks)
        self.pool_sizes = tuple(tuple(int(p) for p in pool) for pool in pool_sizes)
        self.dense_units = tuple(int(u) for u in dense_units)
        self.channels = int(channels)
        self.dropout = float(dropout)
        self.synchronized_bn = bool(synchronized_bn)

        def norm(name):
            return FusedBatchNormalization(synchronized=self.synchronized_bn, name=name)

        self.body = []
        for b, (block, pool) in enumerate(zip(self.conv_blocks, self.pool_sizes, strict=True)):
            for c, filters in enumerate(block):
                self.body += [
                    keras.layers.Conv2D(
                        filters, 3, padding="same", use_bias=False, name=f"conv{b}_{c}"
                    ),
                    norm(f"conv{b}_{c}_bn"),
                    keras.layers.ReLU(),
                ]
            self.body.append(keras.layers.MaxPooling2D(pool, padding="same", name=f"pool{b}"))
        self.body.append(keras.layers.Flatten())
        self.head = []
        for i, units in enumerate(self.dense_units):
            self.head += [
                keras.layers.Dense(units, use_bias=False, name=f"fc{i}"),
                norm(f"fc{i}_bn"),
                keras.layers.ReLU(),
                keras.layers.Dropout(self.dropout),
            ]
        self.classifier = keras.layers.Dense(self.num_classes, name="logits")

    def _image(self, windows):
        """[B, T, D] -> [B, T, D / channels, channels] (stream c of frame t is D-slice c)."""
        if self.channels == 1:
            return windows[..., None]
        t, d = windows.shape[1], windows.shape[2]
        x = tf.reshape(windows, [-1, t, self.channels, d // self.channels])
        return tf.transpose(x, [0, 1, 3, 2])

    def build(self, input_shape):
        _, t, d = input_shape
        if d % self.channels:
            raise ValueError(f"feature dim {d} is not divisible by channels={self.channels}")
        shape = (None, t, d // self.channels, self.channels)
        for layer in [*self.body, *self.head, self.classifier]:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, windows, training=False):
        x = self._image(windows)
        for layer in [*self.body, *self.head]:
            x = layer(x, training=training)
        return self.classifier(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            preset=self.preset,
            conv_blocks=[list(b) for b in self.conv_blocks],
            pool_sizes=[list(p) for p in self.pool_sizes],
            dense_units=list(self.dense_units),
            channels=self.channels,
            dropout=self.dropout,
            synchronized_bn=self.synchronized_bn,
        )
        return config
