"""Training runs: from a config and a corpus to a finished model directory.

- :mod:`tfblend.train.experiments`: one run of the teacher, a hard-label student or a blended
  student (``train_teacher``, ``train_window_model``): inputs, model, losses, fit;
- :mod:`tfblend.train.fit`: the exactly resumable ``fit`` and its callbacks;
- :mod:`tfblend.train.strategies`: tf.distribute strategies, input sharding, optimizers;
- :mod:`tfblend.train.rundir`: one run per model directory, no silent resume of another;
- :mod:`tfblend.train.modeldir`: what a run leaves behind for the next stage (``model.json``).
"""
