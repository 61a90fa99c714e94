# Set-up, tests, book and benchmarks. Every target installs what it needs into .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup book smoke-book check-book screenshots test bench run clean-venv

setup: $(STAMP)

# torch/torchvision pinned as in pyproject.toml: pip then finds them locally on the
# project's machines instead of downloading a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[book,dev,ray]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# The main job: every figure on the quick profile (CPU, MNIST-1D), then the book.
book: setup
	$(BIN)/sddlib figures --profile quick
	$(BIN)/jupyter-book build book/

# The same in seconds, with meaningless tiny runs: to check the machinery.
smoke-book: setup
	$(BIN)/sddlib figures --profile smoke --runs-dir data/smoke-runs
	$(BIN)/jupyter-book build book/

# The built book as a reader sees it, in headless Chromium (apt-get install chromium):
# fails on raw TeX, an image that did not load or a table wider than the page.
check-book: setup
	$(BIN)/python scripts/check_book.py book/_build/html

# The same, with a PNG of every built page.
screenshots: setup
	$(BIN)/python scripts/check_book.py book/_build/html --screenshots book/_build/screenshots

test: setup
	$(BIN)/python -m pytest -q

# Speed ratios measured within one run (never part of the tests): writes
# benchmarks/results/latest.md.
bench: setup
	$(BIN)/python benchmarks/run_all.py

run: setup
	$(BIN)/sddlib run

clean-venv:
	rm -rf $(VENV)
