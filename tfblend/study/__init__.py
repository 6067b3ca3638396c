"""The study: the recipe's stage plan at a larger size with seeds, and its report, RESULTS.md.

- :mod:`tfblend.study.plan`: the one stage plan (sizes, epochs, WER subsets, directory names);
- :mod:`tfblend.study.stages`: running steps as stages (skip what is complete, time what runs);
- :mod:`tfblend.study.statistics`: seed spreads and paired bootstraps over test utterances;
- :mod:`tfblend.study.inputs`, :mod:`tfblend.study.goals`, :mod:`tfblend.study.diagnosis`,
  :mod:`tfblend.study.plots`, :mod:`tfblend.study.results`: RESULTS.md from ``study.json``.
"""
