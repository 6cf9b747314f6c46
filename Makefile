# The README's two commands are `make demo` and `make test`; each sets itself up (virtual env,
# install with test extras, native cffi build) and is quick when that is already done.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NATIVE_SRC := $(wildcard native/*.c native/*.h native/*.py)

.PHONY: all setup demo test test-fast lint bench fuzz soak docs-images clean

all: test

$(STAMP): pyproject.toml setup.py $(NATIVE_SRC)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tcpstack demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not kernel and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check stack tests examples benchmarks tools
	$(VENV)/bin/mypy --strict stack

bench: $(STAMP)
	$(PY) benchmarks/run.py

# The full fuzz run: 1,000,000 malformed or hostile segments into connections in every state.
fuzz: $(STAMP)
	$(PY) tools/fuzz.py

# Churn of short and long connections under faults for 10 minutes (MINUTES=N to change).
soak: $(STAMP)
	$(PY) tools/soak.py --minutes $${MINUTES:-10}

# The README's picture: TIME-WAIT over the phases of examples/time_wait_storm.py (needs root, like
# `make demo`; about 30 s). The stats logs it draws stay in build/time_wait_storm/.
docs-images: $(STAMP)
	$(PY) examples/time_wait_storm.py --seconds 3 --stats-dir build/time_wait_storm --plot docs/time-wait-storm.png

clean:
	rm -rf $(VENV) build *.egg-info stack/_native*.so stack/_native.c
