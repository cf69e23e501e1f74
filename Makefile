# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates or updates the local virtual environment (.venv) first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The floor pair (torch 2.4.1 + torchvision 0.19.1, constraints-floor.txt) in a second venv.
FLOOR_VENV  ?= .venv-floor
FLOOR_BIN   := $(FLOOR_VENV)/bin
FLOOR_STAMP := $(FLOOR_VENV)/.installed

.PHONY: demo det-demo test test-floor test-demo fuzz venv venv-floor paper clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required; set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e ".[dev]" -c constraints.txt
	touch $(STAMP)

venv: $(STAMP)

$(FLOOR_STAMP): pyproject.toml constraints-floor.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Python 3.11 is required; set PYTHON=...)"; exit 1; }
	test -x $(FLOOR_BIN)/python || $(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_BIN)/python -m pip install -qq --upgrade pip
	$(FLOOR_BIN)/python -m pip install -qq -e ".[dev]" -c constraints-floor.txt
	touch $(FLOOR_STAMP)

venv-floor: $(FLOOR_STAMP)

# Train botnet_tiny on the built-in shapes data (generated on first use), then evaluate it.
# Running it again continues an unfinished demo run or just re-evaluates a finished one.
demo: $(STAMP)
	$(BIN)/botnet train --config demo --output runs/demo --resume auto
	$(BIN)/botnet eval --checkpoint runs/demo/last.pt
	@echo "curves: runs/demo/curves.png   metrics: runs/demo/metrics.jsonl"

# The paper's detection recipe at demo scale: a backbone pretrained by classification (footnote 6) on
# the built-in shapes, then Mask R-CNN fine-tuned from it on the built-in COCO-format scenes (both
# generated on first use); it prints the COCO table and draws ground truth | prediction panels of 8
# validation scenes. Running it again continues an unfinished step or re-evaluates a finished run.
det-demo: $(STAMP)
	$(BIN)/botnet train --config det_demo_backbone --output runs/det_demo/backbone --resume auto
	$(BIN)/botnet train --config detection/demo --output runs/det_demo --resume auto \
		model.backbone_weights=runs/det_demo/backbone/last.pt
	$(BIN)/botnet eval --checkpoint runs/det_demo/last.pt --output runs/det_demo/eval_final
	$(BIN)/botnet predict --checkpoint runs/det_demo/last.pt --output runs/det_demo/predictions \
		$$($(BIN)/python -c "from botnet.data import builtin_coco_root; import glob; print(' '.join(sorted(glob.glob(str(builtin_coco_root() / 'val' / '*.png')))[:8]))")
	@echo "curves: runs/det_demo/curves.png   ground truth | prediction panels: runs/det_demo/predictions/"

# Our parameter / multiply-add counts beside the paper's Tables 1, 10 and 14.
paper: $(STAMP)
	$(BIN)/botnet profile --paper

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The property tests of the layers with 20x the examples CI runs, drawn at random (CI runs a fixed,
# derandomized set: tests/conftest.py). Run it before you stop whenever you changed layers/ or models/.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider tests/layers/test_fuzz.py

# The whole suite again on the oldest supported pair, torch 2.4.1 + torchvision 0.19.1, in .venv-floor:
# pyproject declares torch>=2.4,<2.15 and this keeps its lower end honest.
test-floor: $(FLOOR_STAMP)
	$(FLOOR_BIN)/python -m pytest -q

# The README demos run in full, checking the numbers the README states (about 27 minutes on 2 cores).
test-demo: $(STAMP)
	$(BIN)/python -m pytest -q -m demo

clean:
	rm -rf $(VENV) $(FLOOR_VENV) build src/*.egg-info .pytest_cache
