"""The teacher: a (bidirectional) LSTM acoustic model, utterance -> per-frame senone logits."""

import keras
import tensorflow as tf

from tfblend.models.precision import layers_in
from tfblend.models.registry import register_model


@register_model("lstm")
@keras.saving.register_keras_serializable(package="tfblend")
class LSTMTeacher(keras.Model):
    """Stacked (B)LSTM over whole utterances, one senone distribution per frame.

    Layers: `num_layers` x [LSTM(units) (both directions when `bidirectional`, outputs
    concatenated), optional linear projection to `projection` units (an LSTMP-style bottleneck
    that cuts the next layer's input size), dropout], then a per-frame linear classifier.

    Args:
        num_classes: number of output classes (senones).
        num_layers: number of recurrent layers.
        units: LSTM cell size per direction.
        bidirectional: run every layer in both directions (the teacher sees the whole utterance).
        projection: if set, a bias-free linear projection to this many units after each layer.
        dropout: dropout rate between layers (training only).

    Call:
        inputs: float32 `[B, T, D]` CMVN-normalised features, or a dict
            `{"features": float32 [B, T, D], "mask": bool [B, T]}` (mask False on padding;
            padded frames then do not influence the valid ones in either direction).
        Returns float32 logits `[B, T, num_classes]` (values on padded frames are meaningless).
    """

    def __init__(
        self,
        num_classes,
        num_layers=2,
        units=128,
        bidirectional=True,
        projection=None,
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_classes = int(num_classes)
        self.num_layers = int(num_layers)
        self.units = int(units)
        self.bidirectional = bool(bidirectional)
        self.projection = None if projection is None else int(projection)
        self.dropout = float(dropout)
        with layers_in(self.dtype_policy):
            self._build_layers()

    def _build_layers(self):
        self.recurrent = []
        self.projections = []
        for i in range(self.num_layers):
            lstm = keras.layers.LSTM(self.units, return_sequences=True, name=f"lstm_{i}")
            if self.bidirectional:
                lstm = keras.layers.Bidirectional(lstm, name=f"blstm_{i}")
            self.recurrent.append(lstm)
            if self.projection is not None:
                self.projections.append(
                    keras.layers.Dense(self.projection, use_bias=False, name=f"projection_{i}")
                )
        self.drop = keras.layers.Dropout(self.dropout)
        self.classifier = keras.layers.Dense(self.num_classes, name="logits")

    @staticmethod
    def _split(inputs):
        if isinstance(inputs, dict):
            return inputs["features"], inputs.get("mask")
        return inputs, None

    def build(self, input_shape):
        shape = input_shape["features"] if isinstance(input_shape, dict) else input_shape
        shape = tuple(shape)
        for i, lstm in enumerate(self.recurrent):
            lstm.build(shape)
            shape = lstm.compute_output_shape(shape)
            if self.projections:
                self.projections[i].build(shape)
                shape = (*shape[:-1], self.projection)
        self.classifier.build(shape)
        self.built = True

    def call(self, inputs, training=False):
        x, mask = self._split(inputs)
        if mask is not None:
            mask = tf.cast(mask, tf.bool)
        for i, lstm in enumerate(self.recurrent):
            x = lstm(x, mask=mask, training=training)
            if self.projections:
                x = self.projections[i](x)
            x = self.drop(x, training=training)
        return tf.cast(self.classifier(x), tf.float32)

    def compute_output_shape(self, input_shape):
        shape = input_shape["features"] if isinstance(input_shape, dict) else input_shape
        return (*tuple(shape)[:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            num_layers=self.num_layers,
            units=self.units,
            bidirectional=self.bidirectional,
            projection=self.projection,
            dropout=self.dropout,
        )
        return config
