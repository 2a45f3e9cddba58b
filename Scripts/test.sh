#!/usr/bin/env bash
# Sets up what the tests need (system packages, the default model), then builds and runs
# the whole test suite, including the real binary under the real mpirun at 2 and 4 ranks.
# Exits non-zero on any failure. Extra arguments go to `swift test` (e.g. --filter X).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/Scripts/setup.sh" --no-build >/dev/null
if ! command -v swift >/dev/null && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi

# mpirun as root (CI containers) must be allowed explicitly; more ranks than cores is normal.
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1
# The project runs its own thread pools; OpenBLAS must not start its own on top.
export OPENBLAS_NUM_THREADS=1

echo "test: swift build" >&2
swift build --build-tests
echo "test: swift test" >&2
swift test --skip-build "$@"
