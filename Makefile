# `make demo` and `make test` work on a fresh machine with only Python and gcc. Every
# target installs into .venv (created if needed); `. .venv/bin/activate` then puts `rnnc`
# and a python that imports rnncompiler on PATH.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# the exact versions of the test and benchmark peers (the extras accept ranges)
PIP    := $(PY) -m pip install -q -c constraints.txt

.PHONY: demo test test-fast bench fuzz clean

$(VENV)/.base: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP) -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) -e '.[test]'
	touch $@

demo: $(VENV)/.base
	$(PY) -m rnncompiler.demo

# One kernel cache per test session (conftest.py points RNNC_CACHE_DIR at a temp dir).
test: $(VENV)/.test
	$(PY) -m pytest -n 2 -q tests

# The edit loop: the suite without the tests marked slow (builds in subprocesses,
# sanitizers, DDP, benchmarks, the bigger fuzz runs), which `make test` runs too.
test-fast: $(VENV)/.test
	$(PY) -m pytest -n 2 -q -m "not slow" tests

bench: $(VENV)/.test
	$(PY) benchmarks/bench_lstm.py

# The full reliability profile (docs/reliability.md): 250 random cells and 250 written by
# hand against finite differences and the reference evaluator; every built-in cell and 24
# random cells under AddressSanitizer and UndefinedBehaviorSanitizer; the hostile-input
# and contract tests; 10 000 random expressions and their derivatives through the C
# printer against numpy (tests/test_printer.py).
fuzz: $(VENV)/.test
	RNNC_FUZZ_EXAMPLES=250 RNNC_SANITIZE_FULL=1 RNNC_PRINTER_EXAMPLES=10000 \
		$(PY) -m pytest -n 2 -q --hypothesis-show-statistics tests/test_fuzz.py \
		tests/test_sanitizers.py tests/test_reliability.py tests/test_errors.py \
		tests/test_printer.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
