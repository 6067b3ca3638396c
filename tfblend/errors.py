"""The exception tfblend raises for bad input data."""


class DataError(ValueError):
    """Bad input: a file, shard, manifest, utterance, target set or config that cannot be used.

    The message always names the offending file, directory or utterance and says what is wrong,
    so that scripts can print it as one line and exit non-zero.
    """


class NonFiniteError(DataError):
    """A NaN or Inf where none may be: a training loss or gradient, or a model's weights.

    The message names the step or the model directory and the variables concerned.
    """
