#!/usr/bin/env bash
# Sets up what the tests need (system packages, the project's Python environment, the default
# model), then builds and runs the test suite. Exits non-zero on any failure.
#
# Usage: Scripts/test.sh [--fast] [swift test arguments, e.g. --filter X]
#   (no flag)  the whole suite, as CI runs it: the NEON kernels against their scalar twins
#              under qemu-aarch64 (Scripts/test_neon.sh), every in-process suite, then the
#              real binary under the real mpirun at 2 and 4 ranks on the default model, the
#              OpenAI server driven by the official `openai` client.
#   --fast     the in-process suites only (no binary, no mpirun): the development loop.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FAST=0
if [ "${1:-}" = "--fast" ]; then FAST=1; shift; fi

MODEL_PATH="$("$ROOT/Scripts/setup.sh" --no-build --quiet | tail -n 1)"
. "$ROOT/Scripts/lib.sh"
ensure_swift
# Tests that run Python use this interpreter (the project's environment), never python3 from PATH.
GEMMA_NODE_PYTHON="$("$ROOT/Scripts/venv.sh" test)"
export GEMMA_NODE_PYTHON
export GEMMA_NODE_MODEL="${GEMMA_NODE_MODEL:-$MODEL_PATH}"

# mpirun as root (CI containers) must be allowed explicitly; more ranks than cores is normal.
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1
# The project runs its own thread pools; OpenBLAS must not start its own on top.
export OPENBLAS_NUM_THREADS=1

start=$(date +%s)
if [ "$FAST" = 0 ]; then
    echo "test: NEON kernels under qemu-aarch64 (Scripts/test_neon.sh)" >&2
    "$ROOT/Scripts/test_neon.sh"
fi
# Every import must be a declared dependency (Package.swift exact): a missing one fails here.
echo "test: swift build --build-tests --explicit-target-dependency-import-check error" >&2
swift build --build-tests --explicit-target-dependency-import-check error
echo "test: built in $(( $(date +%s) - start )) s" >&2
if [ "$FAST" = 1 ]; then
    echo "test: swift test (in-process suites; GemmaNodeTests, which run the binary, skipped by --fast)" >&2
    swift test --skip-build --skip GemmaNodeTests "$@"
elif [ $# -gt 0 ]; then
    swift test --skip-build "$@"
else
    # The in-process HTTP server tests run alone after the rest: beside the mpirun suites, whose
    # synchronous waits hold Swift's cooperative threads (2 on 2 cores), their server's tasks
    # could not get scheduled for minutes.
    echo "test: swift test (all suites but HTTPBadInputTests)" >&2
    swift test --skip-build --skip HTTPBadInputTests
    echo "test: swift test --filter HTTPBadInputTests (alone)" >&2
    swift test --skip-build --filter HTTPBadInputTests
fi
echo "test: done in $(( $(date +%s) - start )) s" >&2
