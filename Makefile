# `make demo` and `make test` work on a fresh machine with only Python and gcc.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.base
	$(PY) -m rnncompiler.demo

# One kernel cache per test session (conftest.py points RNNC_CACHE_DIR at a temp dir).
test: $(VENV)/.test
	$(PY) -m pytest -n 2 -q tests

bench: $(VENV)/.test
	$(PY) benchmarks/bench_lstm.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
