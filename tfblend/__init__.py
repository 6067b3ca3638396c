"""tfblend: blend an LSTM acoustic model into a VGG-style CNN with stored sparse teacher targets."""

from tfblend import _quiet  # noqa: F401  (must run before anything imports tensorflow)

__version__ = "0.1.0"
