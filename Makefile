# nn2pgm: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.nn2pgm-installed
# The CPU build of torch that lies on these machines; a plain `torch` would pull a CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: env graphviz demo test lint bench clean

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,onnx,pgmpy]"
	touch $(STAMP)

# Graphviz draws SVG/PNG; without it nn2pgm still writes JSON and DOT and says why not SVG.
graphviz:
	@command -v dot >/dev/null 2>&1 || { \
	  (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) 2>/dev/null || \
	  echo "warning: Graphviz could not be installed: .svg/.png output and its tests are skipped"; }

demo: $(STAMP) graphviz
	$(BIN)/nn2pgm convert fixtures/vae.py:VAE -o vae.json
	$(BIN)/nn2pgm convert fixtures/vae.py:VAE -o vae.dot
	$(BIN)/nn2pgm convert fixtures/vae.py:VAE -o vae.svg
	$(BIN)/nn2pgm inspect fixtures/vae.py:VAE
	$(BIN)/nn2pgm check fixtures/vae.py:VAE

# pytest exits 5 when it collects no test: that fails this target like any other failure.
test: $(STAMP) graphviz
	$(BIN)/python -m pytest

# Style, the layering contracts of .importlinter, and the size limits (modules <= 600 lines,
# functions <= 80).
lint: $(STAMP)
	$(BIN)/ruff check nn2pgm cli tests benchmarks fixtures
	$(BIN)/ruff format --check nn2pgm cli tests benchmarks fixtures
	$(BIN)/lint-imports
	$(BIN)/python .ci/check_sizes.py nn2pgm cli

clean:
	rm -rf $(VENV) vae.json vae.safetensors vae.dot vae.svg
