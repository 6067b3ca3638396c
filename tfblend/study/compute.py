"""The compute a study spent: its stages' wall times by kind, against the converged study's budget.

Stage names are :class:`tfblend.study.plan.StagePlan`'s; their times come from ``study.json``'s
``stages`` (the stage runner's ``stages.json``: a stage resumed over several runs is charged
for every run that worked on it).
"""

import re

from tfblend.evaluation.report import table_lines

#: Stage-name prefixes (the words before ``[`` or a space) -> the kind the compute table sums.
STAGE_KINDS = {
    "corpus": "corpus",
    "teacher": "teachers",
    "cnn": "CNN baselines (and preset candidates)",
    "dnn": "DNN baselines",
    "smooth": "label-smoothing controls",
    "blend": "blended CNNs (grid, seeds, sweep, sampled, ensemble-taught)",
    "targets": "target dumps",
    "dump": "target dumps",
    "score": "scoring",
    "evaluate": "scoring",
    "export": "exports",
    "wer": "decoding (WER)",
    "decode": "decoding (WER)",
}
LONGER_RUNS = "longer runs (learning-curve diagnosis)"
#: The converged medium study's budget of stage time on 2 cores (hours).
MEDIUM_BUDGET_HOURS = 12


def stage_kind(stage: str) -> str:
    """The kind of a stage name, from its first word (up to ``-``, ``_``, ``[`` or a space):
    ``teacher-seed0`` -> teachers, ``blend_small_k51_a0.5_T1-seed2`` -> blended CNNs,
    ``wer cnn-small-seed1`` -> decoding; a word :data:`STAGE_KINDS` does not know is its own
    kind. Training runs longer than the students' budget (``...-e{N}-seed{S}``) are the
    learning-curve diagnosis's."""
    if re.match(r"(cnn|blend)\S*-e\d+-seed\d+$", stage.strip()):
        return LONGER_RUNS
    prefix = re.split(r"[-_\[ ]", stage.strip(), maxsplit=1)[0]
    return STAGE_KINDS.get(prefix, prefix)


def compute_lines(study: dict) -> list:
    """The compute section: stage times summed by kind, the total (against the budget for a
    medium study) and every stage's own time, from study.json's ``stages``."""
    stages = study.get("stages", {})
    lines = ["## Compute", ""]
    if not stages:
        return [*lines, "Not recorded: study.json has no stage times.", ""]
    kinds = {}
    for stage, seconds in stages.items():
        kinds[stage_kind(stage)] = kinds.get(stage_kind(stage), 0.0) + seconds
    total = sum(stages.values())
    lines += table_lines(
        ["kind", "seconds", "hours"],
        [[k, f"{s:,.0f}", f"{s / 3600:.2f}"] for k, s in kinds.items()],
    )
    budget = ""
    if study.get("size") == "medium":
        over = total / 3600 - MEDIUM_BUDGET_HOURS
        budget = f" The budget is {MEDIUM_BUDGET_HOURS} h: " + (
            f"over it by {over:.2f} h." if over > 0 else "within it."
        )
    lines += ["", f"Total: {total:,.0f} s = {total / 3600:.2f} h of wall time.{budget}", ""]
    lines += table_lines(["stage", "seconds"], [[n, f"{s:,.1f}"] for n, s in stages.items()])
    return [*lines, ""]
