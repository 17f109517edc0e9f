# Install into ./.venv and run the server or the tests. Everything a test needs is installed
# here; nothing is downloaded at run time.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# llama.cpp is compiled from source. Portable AVX2 kernels: the AVX-512 kernels picked by a
# native build crash on some virtual CPUs (general protection fault). Override for speed.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF
PIP_INSTALL := CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install --quiet

.PHONY: install install-test browser serve test lint bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP_INSTALL) -e '.[llamacpp]'
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The dashboard tests drive Debian's chromium with Playwright (Playwright's own browser
# download is not used).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

serve: install
	$(VENV)/bin/batch-server serve $(ARGS)

test: install-test browser
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install-test
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_eta.py
