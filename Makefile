# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_MODEL := HuggingFaceTB/SmolLM2-135M-Instruct

.PHONY: setup demo lint browser test test-fast screenshots bench clean

# The venv is rebuilt only when the project's dependencies change.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# llama.cpp for `lora-tui export --gguf` (engine/export/llama_cpp.py): its converter unpacked from the
# pinned llama-cpp-python source distribution on PyPI, and its bindings compiled from it once (about
# 7 minutes on 2 cores; cmake and a C++ compiler). The built wheel stays in ~/.cache/lora-tui/wheels,
# so a fresh .venv or another clone installs it in seconds.
$(BIN)/.llama-cpp: $(BIN)/.installed engine/export/llama_cpp.py
	$(BIN)/python -m engine.export.llama_cpp
	touch $@

setup: $(BIN)/.installed $(BIN)/.llama-cpp
	$(BIN)/lora-tui models cache $(DEMO_MODEL)

demo: setup
	$(BIN)/lora-tui --model $(DEMO_MODEL) --dataset data/demo/extract_contacts.jsonl

lint: $(BIN)/.installed
	$(BIN)/ruff check engine tui tests benchmarks scripts

# Headless Chromium for tests/test_serve.py: Debian's package (Playwright's own browser download is
# not reachable). Installed only when missing; without root or apt-get it says so and the test skips.
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" = none ] || ! command -v apt-get >/dev/null; then \
	    echo "make browser: $(CHROMIUM) is missing and installing it needs root and apt-get (apt-get install -y chromium); tests/test_serve.py will skip."; \
	  else \
	    export DEBIAN_FRONTEND=noninteractive; \
	    $$SUDO apt-get install -y -q chromium || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; } \
	      || echo "make browser: apt-get could not install chromium; tests/test_serve.py will skip."; \
	  fi; }

test: setup lint browser
	$(BIN)/python -m pytest -q --timeout=900 --durations=15 tests

test-fast: setup
	$(BIN)/python -m pytest -q -m "not training" tests

screenshots: setup
	$(BIN)/python scripts/screenshots.py

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
