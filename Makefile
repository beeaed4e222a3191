# Two commands on a fresh machine; each installs into .venv first when that is missing or
# pyproject.toml changed (a second call skips the install at once).
#
#   make run     the main job: a real classifier sweep that ends with the report table
#   make test    lint, then the whole test suite (what .ci/run runs)
#   make fast    the fast layer only: no Ray, no model trained for more than a moment
#
# ARGS passes more flags, e.g. `make run ARGS="--num-samples 4"`, `make test ARGS="-x"`.

PYTHON ?= python3.11
VENV ?= .venv
STAMP := $(VENV)/.installed
NAME ?= classifier-$(shell date +%Y%m%d-%H%M%S)

.PHONY: run test fast install

run: $(STAMP)
	$(VENV)/bin/visiontune tune search_spaces/classifier.yaml --name $(NAME) $(ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q $(ARGS)

fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not ray and not slow" $(ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) 2>/dev/null || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)
