"""The exception tfblend raises for bad input data."""

import re


class DataError(ValueError):
    """Bad input: a file, shard, manifest, utterance, target set or config that cannot be used.

    The message always names the offending file, directory or utterance and says what is wrong,
    so that scripts can print it as one line and exit non-zero.
    """


class NonFiniteError(DataError):
    """A NaN or Inf where none may be: a training loss or gradient, or a model's weights.

    The message names the step or the model directory and the variables concerned.
    """


def assertion_text(message: str) -> str | None:
    """The text of a failed in-graph assertion (``tf.debugging.Assert``: "assertion failed:
    [a] [b c]" -> "a b c"), or None when ``message`` holds none."""
    if "assertion failed:" not in message:
        return None
    first = message.split("assertion failed:", 1)[1].splitlines()[0]
    return " ".join(re.findall(r"\[([^\[\]]*)\]", first)) or first.strip()
