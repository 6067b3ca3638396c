"""The check that a model's receptive field matches the data's context window."""


def check_receptive_field(model, context: int) -> None:
    """Raises ValueError unless `model` can be trained on context windows of 2W+1 frames.

    A model with a `receptive_field` property (the time-valid `VGGStudent`) must have
    `receptive_field == 2 * context + 1`: its windows are exactly that wide, and its dense
    chunks carry exactly W frames of context on each side. Models without one pass: the DNN
    takes whatever window it is first built on (its first layer's size follows the data) and
    the LSTM reads whole utterances.

    Args:
      model: a `keras.Model` (built or not).
      context: W, the data's context (`data.context`).
    """
    field = getattr(model, "receptive_field", None)
    width = 2 * int(context) + 1
    if field is None or field == width:
        return
    raise ValueError(
        f"model receptive field {field} frames != data context window 2W+1 = {width} "
        f"(W = {context}); set data.context={(field - 1) // 2} or choose a model whose "
        f"receptive field is {width} frames (VGGStudent: 1 + 2 x the sum of its time dilations)"
    )
