# `make test` and `make demo` set up .venv on a fresh machine, then run.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check eelbert_export tests

test: lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/eelbert-export inspect uno-eelbert

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
