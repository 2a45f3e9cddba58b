#!/usr/bin/env bash
# Runs the NEON kernels against their scalar twins on an x86 host: cross-compiles
# Sources/CKernels (all of it: the x86 files compile to stubs on aarch64) with the C test driver
# Scripts/neon/test_kernels.c for aarch64, then runs it under qemu-aarch64 on two emulated CPUs:
#   max         has the ARMv8.2 dot product: the vdotq_s32 kernels run, and are compared bit for
#               bit with the widening-multiply ones
#   cortex-a53  ARMv8.0, no dot product: the run-time check must pick the widening-multiply kernels
# Installs qemu-user, gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (Debian/Ubuntu) if missing.
# Exits non-zero on any mismatch. Tolerances: see the driver's header. Env: NEON_CFLAGS (default
# -O3, as the release build), NEON_CPUS (default "max cortex-a53"), NEON_TIMEOUT (seconds per
# CPU, default 300), NEON_CC (a clang, e.g. the Swift toolchain's, to compile the kernels with
# instead of gcc, as SwiftPM would; gcc links).
set -euo pipefail
cd "$(dirname "$0")/.."

CC=aarch64-linux-gnu-gcc
SYSROOT=/usr/aarch64-linux-gnu

have_tools() {
    command -v "$CC" >/dev/null 2>&1 && command -v qemu-aarch64 >/dev/null 2>&1 && [ -f "$SYSROOT/include/stdio.h" ]
}

if ! have_tools; then
    . Scripts/lib.sh
    ensure_apt qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    have_tools || { echo "test_neon: tools still missing after install" >&2; exit 2; }
fi

BUILD=$(mktemp -d "${TMPDIR:-/tmp}/test_neon.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT

# The kernels at the release build's optimisation; the driver (not under test) at -O2, where
# gcc 12 does not hit an internal compiler error vectorising its reference loops.
KCC=("$CC")
if [ -n "${NEON_CC:-}" ]; then KCC=("$NEON_CC" --target=aarch64-linux-gnu --sysroot="$SYSROOT"); fi
for src in Sources/CKernels/*.c; do
    # shellcheck disable=SC2086
    "${KCC[@]}" ${NEON_CFLAGS:--O3} -std=gnu11 -Wall -Wextra -pthread -I Sources/CKernels/include \
        -c "$src" -o "$BUILD/$(basename "$src" .c).o"
done
"$CC" -O2 -std=gnu11 -Wall -Wextra -pthread -I Sources/CKernels -I Sources/CKernels/include \
    Scripts/neon/test_kernels.c "$BUILD"/*.o -lm -o "$BUILD/test_kernels"

total_pass=0 total_fail=0 status=0
for cpu in ${NEON_CPUS:-max cortex-a53}; do
    case "$cpu" in
        max|cortex-a76|neoverse-n1) expect=1 ;;
        cortex-a35|cortex-a53|cortex-a57|cortex-a72) expect=0 ;;
        *) expect=-1 ;;  # not checked
    esac
    echo "== qemu-aarch64 -cpu $cpu (dot product expected: $expect)"
    rc=0
    # A pass takes 1-2 s on an idle machine; the limit turns a hang (a thread pool bug, as in
    # session 11, or qemu) into a failure with the driver's output so far.
    timeout -k 10 "${NEON_TIMEOUT:-300}" qemu-aarch64 -L "$SYSROOT" -cpu "$cpu" "$BUILD/test_kernels" --expect-dotprod "$expect" >"$BUILD/out" 2>&1 || rc=$?
    cat "$BUILD/out"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$BUILD/out" | tail -1 || true)
    if [ -z "$line" ]; then
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "test_neon: -cpu $cpu: the driver did not finish within ${NEON_TIMEOUT:-300} s (killed)"
        else
            echo "test_neon: -cpu $cpu: the driver did not finish (exit $rc)"
        fi
        total_fail=$((total_fail + 1))
        status=1
        continue
    fi
    p=${line%% passed*}
    f=${line#*, }
    f=${f%% failed}
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    [ "$rc" -eq 0 ] && [ "$f" -eq 0 ] || status=1
done
echo "== NEON under qemu, all CPUs: $total_pass passed, $total_fail failed"
exit $status
