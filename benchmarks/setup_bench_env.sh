#!/usr/bin/env bash
# Create /work/main/.bench-venv with CPU torch, numpy, graphviz and torchview (idempotent).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.bench-venv}"
TORCH_VERSION="2.13.0"
TORCHVIEW_VERSION="0.2.7"
GRAPHVIZ_VERSION="0.21"
# Same numpy as the main venv, so `import torch` costs the same on both sides.
NUMPY_VERSION="2.4.6"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
    echo "creating $VENV"
    python3 -m venv "$VENV"
fi

installed() {
    "$PY" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'
}

# torch first, pinned, so that pip never resolves a CUDA build from the registry.
case "$(installed torch)" in
    "$TORCH_VERSION"*) echo "torch $(installed torch) already installed" ;;
    *) "$PY" -m pip install --quiet "torch==$TORCH_VERSION" ;;
esac

if [ "$(installed numpy)" != "$NUMPY_VERSION" ]; then
    "$PY" -m pip install --quiet --no-deps "numpy==$NUMPY_VERSION"
else
    echo "numpy $NUMPY_VERSION already installed"
fi

if [ "$(installed graphviz)" != "$GRAPHVIZ_VERSION" ]; then
    "$PY" -m pip install --quiet --no-deps "graphviz==$GRAPHVIZ_VERSION"
else
    echo "graphviz $GRAPHVIZ_VERSION already installed"
fi

# torchview's only dependency is graphviz (installed above); --no-deps keeps torch as is.
if [ "$(installed torchview)" != "$TORCHVIEW_VERSION" ]; then
    "$PY" -m pip install --quiet --no-deps "torchview==$TORCHVIEW_VERSION"
else
    echo "torchview $TORCHVIEW_VERSION already installed"
fi

"$PY" -c "import torch, torchview, graphviz; print('bench venv ok: torch', torch.__version__)"
