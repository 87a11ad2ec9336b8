# The README's commands. `make demo` runs the main job, `make test` the whole test suite.
# Every install is pinned by requirements-lock.txt (exact versions of every package, generated
# from pyproject.toml); `make lock` refreshes it after a dependency change.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements-lock.txt
PIP_VERSION := 26.3
STAMP := $(VENV)/.installed

.PHONY: install demo test lint lock clean-venv

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install "pip==$(PIP_VERSION)"
	$(PY) -m pip install -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	mkdir -p results/runs
	$(VENV)/bin/papermill notebooks/train.ipynb results/runs/demo.ipynb -f notebooks/params/demo.yaml

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadscope --nbval-lax tests notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check dasrlib tests benchmarks

# Resolve every dependency of pyproject.toml (package + dev extra) to exact versions, for every
# platform and Python >= 3.10, with uv (a dev dependency). Commit the result.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.10 \
		--no-header -o $(LOCK).tmp
	{ echo "# Exact versions of every dependency. Refresh with: make lock"; cat $(LOCK).tmp; } > $(LOCK)
	rm -f $(LOCK).tmp

clean-venv:
	rm -rf $(VENV)
