"""The study's verdicts against the GPU replication (tfblend.study.reference), on cases worked
out by hand rather than by re-applying the rule."""

import numpy as np
import pytest

from tfblend.study.inputs import ModelResults, StudyData
from tfblend.study.reference import reference_lines


def _replication_rows(role, correct) -> dict:
    """reference_lines' rows, role -> cells after the setting, for a medium study whose only
    model has the role ``role`` and one seed with ``correct`` of 10,000 test frames right."""
    frames = (np.array([[correct]]), np.array([[10_000]]))
    model = ModelResults(role, role, {}, 1, frames, None)
    study = {"size": "medium", "epochs": {"teacher": 8, "student": 8}}
    data = StudyData(study, "study.json", [model], ["u1"], ["v1"], [], [])
    table = [x for x in reference_lines(data) if x.startswith("| ")][1:]  # after the header
    rows = [[cell.strip() for cell in x.strip("|").split("|")] for x in table]
    return {cells[0]: cells[2:] for cells in rows}


@pytest.mark.parametrize(
    ("role", "correct", "expected"),
    [
        # Replication: teacher 67.14 / 67.21, CNN 69.29 / 68.35, blend 69.47; within 1 point.
        ("teacher", 6821, ["68.21 (1)", "67.14 / 67.21", "+1.00", "within"]),  # 1 point above
        ("teacher", 6822, ["68.22 (1)", "67.14 / 67.21", "+1.01", "above"]),
        ("teacher", 6614, ["66.14 (1)", "67.14 / 67.21", "-1.00", "within"]),  # 1 point below
        ("teacher", 6613, ["66.13 (1)", "67.14 / 67.21", "-1.01", "below"]),
        ("cnn", 6880, ["68.80 (1)", "69.29 / 68.35", "+0.00", "within"]),  # inside the range
        ("cnn", 6835, ["68.35 (1)", "69.29 / 68.35", "+0.00", "within"]),  # its lower end
        ("cnn", 7030, ["70.30 (1)", "69.29 / 68.35", "+1.01", "above"]),
        ("cnn", 6735, ["67.35 (1)", "69.29 / 68.35", "-1.00", "within"]),
        ("blend", 7047, ["70.47 (1)", "69.47", "+1.00", "within"]),
        ("blend", 6846, ["68.46 (1)", "69.47", "-1.01", "below"]),
        ("blend", 6500, ["65.00 (1)", "69.47", "-4.47", "below"]),
    ],
)
def test_replication_verdicts_by_hand(role, correct, expected):
    """Distances and verdicts worked out by hand, at and next to the 1-point boundaries."""
    rows = _replication_rows(role, correct)
    assert rows.pop(role) == expected
    assert sorted(rows) == sorted({"teacher", "cnn", "blend"} - {role})
    for cells in rows.values():  # the roles the study did not score
        assert cells[0] == "not scored" and cells[2:] == ["", "not run"]
