"""The classic hybrid baseline: a feed-forward network on a spliced context window."""

import keras
import tensorflow as tf

from tfblend.models.precision import layers_in
from tfblend.models.registry import register_model


@register_model("dnn")
@keras.saving.register_keras_serializable(package="tfblend")
class DNNBaseline(keras.Model):
    """Fully connected acoustic model (the classic DNN-HMM hybrid's network).

    The window is flattened (frames spliced), then [dense -> ReLU -> dropout] per hidden layer,
    then a linear classifier.

    Args:
        num_classes: number of output classes (senones).
        hidden_units: sizes of the hidden layers.
        dropout: dropout rate after each hidden layer (training only).

    Call:
        windows: float32 `[B, 2W+1, D]` CMVN-normalised feature windows.
        Returns float32 logits `[B, num_classes]`.
    """

    def __init__(self, num_classes, hidden_units=(1024, 1024, 1024), dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.dropout = float(dropout)
        with layers_in(self.dtype_policy):
            self.flatten = keras.layers.Flatten()
            self.hidden = [
                keras.layers.Dense(units, activation="relu", name=f"fc{i}")
                for i, units in enumerate(self.hidden_units)
            ]
            self.drop = keras.layers.Dropout(self.dropout)
            self.classifier = keras.layers.Dense(self.num_classes, name="logits")

    def build(self, input_shape):
        shape = self.flatten.compute_output_shape(tuple(input_shape))
        for layer in [*self.hidden, self.classifier]:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, windows, training=False):
        x = self.flatten(windows)
        for layer in self.hidden:
            x = self.drop(layer(x), training=training)
        return tf.cast(self.classifier(x), tf.float32)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            hidden_units=list(self.hidden_units),
            dropout=self.dropout,
        )
        return config
