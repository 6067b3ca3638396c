"""The steps: one absl program per arrow of the data flow, ``python -m tfblend.steps.<name>``.

Each step reads only what the one before it wrote, so any of them can be rerun alone, on
another machine, or sharded; ``--help`` says what it reads, what it writes and gives an example.

- ``make_corpus``, ``import_kaldi``: a corpus (the embedded one, or your Kaldi data);
- ``train_teacher``, ``train_student``: the LSTM teacher; the CNN or DNN on hard labels;
- ``dump_targets``: the teacher's sparse targets of a split; ``blend``: the blended student;
- ``evaluate``: frame metrics and the report; ``score_utterances``: per-utterance counts;
- ``export``: a SavedModel for TF Serving; ``check_export``: one utterance through it;
- ``decode``: word error rates; ``compute_loglikes``: a Kaldi ark of what an export serves;
- ``sweep_k``: the dark-knowledge sweep over k; ``write_results``: a study's RESULTS.md again.

The recipe (``python -m tfblend.recipe``) and the study (``python -m tfblend.study``) run them as
stages (:mod:`tfblend.study.stages`).
"""
