"""The API reference (`make docs`) builds from the docstrings without a warning, and a module
whose docstrings render wrong fails the build with nothing written."""

import sys

import pytest

from tfblend.errors import DataError
from tfblend.tools import api_docs


def test_the_api_reference_builds_without_warnings(tmp_path):
    output = tmp_path / "api"
    written = api_docs.build(str(output))
    pages = {f"{name.replace('.', '/')}.html" for name in api_docs.MODULES}
    assert pages <= set(written)
    # The public classes people subclass or call, each documented (an entry of its own).
    expected = {
        "tfblend/distill.html": ["Distiller", "Distiller.train_step", "SparseSoftCrossEntropy"],
        "tfblend/models.html": ["VGGStudent", "LSTMTeacher", "DNNBaseline", "get_model"],
        "tfblend/pipeline.html": ["frame_dataset", "chunk_dataset", "DatasetOptions"],
        "tfblend/targets.html": ["dump_targets", "derive_targets"],
        "tfblend/records.html": ["write_utterance_shards", "iterate_utterances", "target_parser"],
        "tfblend/export.html": ["export_model"],
    }
    for page, names in expected.items():
        text = (output / page).read_text()
        for name in names:
            assert f'id="{name}"' in text, (page, name)
    distill = (output / "tfblend/distill.html").read_text()
    assert "weight of the hard-label loss" in distill  # an Args entry of Distiller's docstring


def test_a_docstring_that_renders_wrong_fails_the_build(tmp_path, monkeypatch):
    (tmp_path / "badly_documented.py").write_text(
        '"""A module whose docs render wrong."""\n\n\n'
        'def split(x: "NoSuchName") -> None:\n'
        '    """Returns ``{"ids": int32\n'
        '    [B, k]}``, a literal split over two lines."""\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    output = tmp_path / "api"
    with pytest.raises(DataError) as failed:
        api_docs.build(str(output), ("badly_documented",))
    message = str(failed.value)
    assert message.startswith("the API reference has 2 problem(s):")
    assert "Error parsing type annotation NoSuchName" in message
    assert "badly_documented.html: unrendered literal: ..." in message
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".api-")] == []
    sys.modules.pop("badly_documented", None)
