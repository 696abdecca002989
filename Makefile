# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_MODEL := HuggingFaceTB/SmolLM2-135M-Instruct

.PHONY: setup demo lint test test-fast screenshots bench clean

# The venv is rebuilt only when the project's dependencies change.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed
	$(BIN)/lora-tui models cache $(DEMO_MODEL)

demo: setup
	$(BIN)/lora-tui --model $(DEMO_MODEL) --dataset data/demo/extract_contacts.jsonl

lint: $(BIN)/.installed
	$(BIN)/ruff check engine tui tests benchmarks scripts

test: setup lint
	$(BIN)/python -m pytest -q --timeout=900 --durations=15 tests

test-fast: setup
	$(BIN)/python -m pytest -q -m "not training" tests

screenshots: setup
	$(BIN)/python scripts/screenshots.py

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
