# The README's two commands are `make demo` and `make test`; each sets itself up (virtual env,
# install with test extras, native cffi build) and is quick when that is already done.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NATIVE_SRC := $(wildcard native/*.c native/*.h native/*.py)

.PHONY: all setup demo test test-fast lint docs bench fuzz soak docs-images clean

all: test

# Set-up prints one line per step; each step's own output goes to $(LOG) and is shown only if it fails.
LOG := $(VENV)/setup.log
RUN_STEP = > $(LOG) 2>&1 || { tail -n 40 $(LOG); echo "set-up failed; the whole log: $(LOG)"; exit 1; }

$(STAMP): pyproject.toml setup.py $(NATIVE_SRC)
	@test -x $(PY) || { echo "setup: creating the virtual environment $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "setup: updating pip, setuptools and wheel"
	@$(PY) -m pip install --disable-pip-version-check --upgrade pip setuptools wheel $(RUN_STEP)
	@echo "setup: installing tcpstack with its test extras and building the native module"
	@$(PY) -m pip install --disable-pip-version-check -e '.[test]' $(RUN_STEP)
	@touch $@

setup: $(STAMP)

# The shell ignores SIGINT so that Ctrl-C is tcpstack's alone to answer: it cleans up, prints one
# line and exits 130, which is the interruption it asked for, not a failure for make to report.
demo: $(STAMP)
	@trap '' INT; $(VENV)/bin/tcpstack demo || { rc=$$?; [ $$rc -eq 130 ] || exit $$rc; }

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not kernel and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check stack tests examples benchmarks tools
	$(VENV)/bin/mypy --strict stack

# The API reference, generated from the docstrings by pdoc into docs/api/ (open docs/api/index.html).
docs: $(STAMP)
	@$(PY) tools/api_docs.py docs/api

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
	rm -rf $(VENV) build dist *.egg-info stack/_native*.so stack/_native.c docs/api
