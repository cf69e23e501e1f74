# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates or updates the local virtual environment (.venv) first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv paper clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required; set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Train botnet_tiny on the built-in shapes data (generated on first use), then evaluate it.
# Running it again continues an unfinished demo run or just re-evaluates a finished one.
demo: $(STAMP)
	$(BIN)/botnet train --config configs/demo.yaml --output runs/demo --resume auto
	$(BIN)/botnet eval --checkpoint runs/demo/last.pt
	@echo "curves: runs/demo/curves.png   metrics: runs/demo/metrics.jsonl"

# Our parameter / multiply-add counts beside the paper's Tables 1, 10 and 14.
paper: $(STAMP)
	$(BIN)/botnet profile --paper

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
