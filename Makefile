# The README's commands. `make demo` runs the main job, `make test` the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	mkdir -p results/runs
	$(VENV)/bin/papermill notebooks/train.ipynb results/runs/demo.ipynb -f notebooks/params/demo.yaml

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadscope --nbval-lax tests notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check dasrlib tests benchmarks
