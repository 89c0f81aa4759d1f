# Two entry points a newcomer needs; both set up the virtualenv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test fuzz loadtest

$(BIN)/voicegender: pyproject.toml Makefile  # Makefile: a changed install line reaches existing venvs
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch 2.14.1 / torchvision 0.29.1 are the pair pip finds on this machine's disk.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev,record]'
	touch $@

setup: $(BIN)/voicegender

demo: setup
	$(BIN)/voicegender demo

test: setup
	$(BIN)/python -m pytest -q

# Not part of `make test`: the loader fuzzer (FUZZ_SECONDS, default 300) and the load test (scripts/loadtest.py --help).
FUZZ_SECONDS ?= 300
fuzz: setup
	$(BIN)/python -m tests.fuzz.fuzz_audio --seconds $(FUZZ_SECONDS)

loadtest: setup
	$(BIN)/python scripts/loadtest.py $(LOADTEST_ARGS)
