# `make demo` and `make test` work on a fresh machine with only Python and gcc.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench fuzz clean

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

# The full reliability profile (docs/reliability.md): 250 random cells and 250 written by
# hand against finite differences and the reference evaluator; every built-in cell and 24
# random cells under AddressSanitizer and UndefinedBehaviorSanitizer; the hostile-input
# and contract tests.
fuzz: $(VENV)/.test
	RNNC_FUZZ_EXAMPLES=250 RNNC_SANITIZE_FULL=1 $(PY) -m pytest -n 2 -q \
		--hypothesis-show-statistics tests/test_fuzz.py tests/test_sanitizers.py \
		tests/test_reliability.py tests/test_errors.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
