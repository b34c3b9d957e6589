# lightning-cv: `make train TASK=seg` and `make test` work on a fresh clone.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
TASK ?= cls
ARGS ?=
FOLDS ?= 5
DATA := data/$(TASK)
# pip prints one warning per package for the local mirrors it cannot list; keep the output readable.
QUIET_PIP := { grep -v "^WARNING: Location" || true; }

.PHONY: help install demo train cv report test test-slow lint bench docs clean

help:
	@echo "make train TASK=<task> [ARGS='--trainer.max_epochs 5 ...']   (tasks: lightning-cv demo --help)"
	@echo "make cv TASK=<task> [FOLDS=5] [ARGS='--tta flip --trainer.max_epochs 5 ...']"
	@echo "make report RUN=runs/<task>/<run>   (one HTML page of a fit or CV run: RUN/report.html)"
	@echo "make test | make test-slow | make lint | make bench | make docs | make demo TASK=... | make install | make clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is several GB: install only when pyproject.toml is newer than the last install. pip would
# byte-compile every file it installs, one at a time (torch alone: over a minute on 2 cores); instead the
# modules the project imports are compiled by importing them, and recipes may write bytecode for the rest.
unexport PYTHONDONTWRITEBYTECODE
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --no-compile -e '.[dev]' 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import lightning_cv.cli.lightning_cli, lightning_cv.tasks, lightning_cv.cli.commands.export, lightning_cv.report.page, matplotlib.figure, jinja2, wandb, onnxruntime, pydicom, sklearn.metrics, pytest, xdist"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lightning-cv demo --task $(TASK) --out $(DATA)

$(DATA): | $(STAMP)
	$(BIN)/lightning-cv demo --task $(TASK) --out $(DATA)

train: $(STAMP) | $(DATA)
	$(BIN)/lightning-cv fit --config configs/$(TASK).yaml $(ARGS)

# K-fold CV: runs/$(TASK)/cv-<timestamp>/ with folds.csv, fold<k>/ runs, oof.npz/oof.csv, cv_results.json.
cv: $(STAMP) | $(DATA)
	$(BIN)/lightning-cv cv --config configs/$(TASK).yaml --folds $(FOLDS) $(ARGS)

# One static HTML page of a fit or CV run (cv writes it at its end too): $(RUN)/report.html.
report: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make report RUN=runs/<task>/<run>"; exit 2; }
	$(BIN)/lightning-cv report $(RUN) $(ARGS)

# One test process per core, idle ones stealing queued tests. `make test` is the quick suite (under 4 min
# on 2 cores from a fresh clone, install included); `make test-slow` runs the multi-process, kill/resume
# and end-to-end tests; CI (.ci/run) runs both.
TEST_WORKERS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow" $(ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m slow $(ARGS)

# Side-by-side speed ratios (cache, loaders, precision, TTA, framework cost) -> bench/results.md.
bench: $(STAMP)
	$(BIN)/python bench/run.py

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or a page missing from the nav
# fails. The docs extra is installed into .venv the first time, and again only when pyproject.toml changes.
$(DOCS_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install -q --no-compile -e '.[docs]' 2>&1 | $(QUIET_PIP)
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check lightning_cv tests bench
	$(BIN)/hadolint Dockerfile

clean:
	rm -rf runs site .pytest_cache .ruff_cache
