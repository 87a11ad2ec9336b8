# The README's commands. `make demo` runs the main job, `make test` the whole test suite,
# `make lab` opens the notebooks in JupyterLab, `make app` the slider app alone (Voila).
# Every install is pinned by requirements-lock.txt (exact versions of every package, generated
# from pyproject.toml); `make lock` refreshes it after a dependency change.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements-lock.txt
PIP_VERSION := 26.3
STAMP := $(VENV)/.installed

.PHONY: install demo test lint lab app lock clean-venv

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install "pip==$(PIP_VERSION)"
	$(PY) -m pip install -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The demo trains with the training command first (its progress bar: stage, iteration, rate, time
# left; a run cut short exits non-zero with one line saying how to continue), then runs the
# notebook, which finds the finished run (resume: auto) and reports on it.
demo: $(STAMP)
	mkdir -p results/runs
	$(PY) -m dasrlib.train --params notebooks/params/demo.yaml
	$(VENV)/bin/papermill notebooks/train.ipynb results/runs/demo.ipynb -f notebooks/params/demo.yaml

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadscope --nbval-lax tests notebooks

# JupyterLab on the notebooks, on this machine only (127.0.0.1; the URL printed carries a token).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=notebooks \
		$(if $(filter 0,$(shell id -u)),--allow-root)

# The slider notebook as a page of sliders and images (code hidden), served by Voila on 127.0.0.1.
# Run from notebooks/ so that Voila reads notebooks/voila.json: the kernel of a closed page is
# shut down after two idle minutes (each page load starts a kernel of about 0.9 GB).
app: $(STAMP)
	cd notebooks && $(abspath $(VENV))/bin/voila interactive.ipynb --Voila.ip=127.0.0.1

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
