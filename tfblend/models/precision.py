"""Training precision: float32, or Keras's ``mixed_bfloat16`` (bf16 compute, fp32 variables).

A model is built in a precision by passing ``dtype`` (a Keras dtype policy name) to its
constructor: every tfblend model builds its layers inside :func:`layers_in` with its own policy,
so convolutions and matmuls run in bfloat16 while the variables, the normalisation statistics
and the returned logits stay float32 (the losses and the optimizer see float32 only).

Saved models record the policy in their config. :func:`as_float32` rebuilds a loaded model in
float32 with the same weights: scoring, target dumps and exports compute in float32 whatever the
training precision, so an export's inputs, outputs and arithmetic are float32 on any server
(bf16 is only fast where the CPU or GPU has it in hardware).
"""

import contextlib

import keras

#: The supported ``train.precision`` values.
PRECISIONS = ("float32", "mixed_bfloat16")


@contextlib.contextmanager
def layers_in(policy):
    """Layers created inside take ``policy`` (a name or a ``keras.DTypePolicy``) by default;
    the global policy is restored on exit."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def as_float32(model: keras.Model) -> keras.Model:
    """``model`` if it computes in float32, else a float32 copy with the same weights (built
    on the same input shape)."""
    if model.dtype_policy.name == "float32":
        return model
    copy = model.__class__.from_config({**model.get_config(), "dtype": "float32"})
    copy.build_from_config(model.get_build_config())
    copy.set_weights(model.get_weights())
    return copy
