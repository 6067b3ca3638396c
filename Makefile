# The README's two commands are `make demo` and `make test`; both set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Reinstall only when the dependency declaration changes: a second run starts in seconds.
STAMP := $(VENV)/.tfblend-installed
WORK_DIR ?= work/demo
STUDY_DIR ?= work/study

.PHONY: setup demo study study-small test test-all lint bench bazel-query check-readme docs clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip check
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m tfblend.recipe --work_dir=$(WORK_DIR) --size=small

# The converged study (about 10 hours on 2 cores; resumable: run it again after an interruption;
# it writes RESULTS.md and results/ in the current directory).
study: $(STAMP)
	$(PY) -m tfblend.study --work_dir=$(STUDY_DIR) --size=medium

# The small study (the small corpus, every model 8 epochs, all test utterances decoded: about
# 85 minutes on 2 cores); the RESULTS.md in git comes from it.
study-small: $(STAMP)
	$(PY) -m tfblend.study --work_dir=$(STUDY_DIR)-small --size=small --wer_per_voice=50

test: $(STAMP)
	$(PY) -m pytest -n auto --dist loadfile -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -n auto --dist loadfile -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# After `make demo`: the README's marked demo table must be the report's, cell by cell.
check-readme: $(STAMP)
	$(PY) -m tfblend.tools.check_readme --readme=README.md --report=$(WORK_DIR)/report/results.md

# The API reference from the docstrings, in docs/api/ (fails on any pdoc warning).
docs: $(STAMP)
	$(PY) -m tfblend.tools.api_docs --output_dir=docs/api

bench: $(STAMP)
	$(PY) -m benchmarks.run --output benchmarks/results.json

bazel-query:
	bazel query //...

clean:
	rm -rf $(WORK_DIR) .pytest_cache .ruff_cache
