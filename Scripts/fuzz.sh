#!/usr/bin/env bash
# Fuzzes one parser of outside bytes with libFuzzer, under AddressSanitizer.
#
# Usage: Scripts/fuzz.sh TARGET SECONDS   fuzz TARGET for SECONDS (wall clock)
#        Scripts/fuzz.sh all SECONDS      every target in turn, SECONDS each
#        Scripts/fuzz.sh seeds            (re)write the committed seeds, Fuzz/corpus/<target>/
#        Scripts/fuzz.sh list             the targets
# Targets (Sources/GemmaFuzz/FuzzTargets.swift): gguf, gguf-model, safetensors, tokenizer-json,
# tokenizer-model, wire, http, grammar (JSON Schema -> constrained-decoding automaton and shard
# mask, cross-checked id by id: a mismatch stops the run like a crash).
#
# Builds `gemma-fuzz` (GEMMA_NODE_FUZZ=1 swift build --sanitize fuzzer --sanitize address, debug,
# so Swift's overflow and bounds checks trap; its own build folder .build/fuzz, apart from the
# ordinary build). Inputs that found new coverage go to ~/.cache/gemma-node/fuzz/corpus/TARGET
# (not committed: they grow); the committed seeds are read, never written. A crash, trap,
# sanitizer report, timeout (> 10 s per input) or out-of-memory (> 4 GB) stops the run; its
# input is saved under ~/.cache/gemma-node/fuzz/crashes/TARGET/, and the script exits 1 and
# says how to keep it as a regression input (Fuzz/regressions/TARGET/, replayed by the test
# suite). Each run appends a line (date, target, seconds fuzzed, executions, outcome: clean,
# failed(rc=N) or interrupted, when gemma-fuzz was sent SIGINT to stop a long run early) to
# ~/.cache/gemma-node/fuzz/runs.tsv, the record of hours fuzzed per target.
# Env: FUZZ_ARGS (extra libFuzzer flags), GEMMA_NODE_MODEL (the http target loads the default model),
#      FUZZ_SKIP_BUILD=1 (fuzz with the gemma-fuzz already built, so a long background run does not
#      rebuild while the sources are being edited).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGETS="gguf gguf-model safetensors tokenizer-json tokenizer-model wire http grammar"
WORK="$HOME/.cache/gemma-node/fuzz"

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in
    list) echo "$TARGETS" | tr ' ' '\n'; exit 0 ;;
    seeds|all) ;;
    *) echo " $TARGETS " | grep -q " $1 " || { echo "fuzz.sh: unknown target '$1' (targets: $TARGETS)" >&2; exit 2; } ;;
esac

. "$ROOT/Scripts/lib.sh"
ensure_swift
# SwiftPM passes each --sanitize as its own -sanitize= flag, and swiftc keeps only the last one
# (Swift code would get AddressSanitizer but no coverage counters, and libFuzzer would fuzz
# blind); the trailing combined -Xswiftc flag gives Swift code both. C code gets both anyway.
FLAGS=(--scratch-path "$ROOT/.build/fuzz" --sanitize fuzzer --sanitize address -Xswiftc -sanitize=fuzzer,address --product gemma-fuzz)
build() {
    if [ "${FUZZ_SKIP_BUILD:-0}" = 1 ]; then
        BIN="$(GEMMA_NODE_FUZZ=1 swift build "${FLAGS[@]}" --show-bin-path)/gemma-fuzz"
        [ -x "$BIN" ] || { echo "fuzz.sh: FUZZ_SKIP_BUILD=1 but $BIN is not built" >&2; exit 1; }
        echo "fuzz.sh: using the gemma-fuzz already built ($BIN)" >&2
        return
    fi
    echo "fuzz.sh: building gemma-fuzz (libFuzzer + AddressSanitizer, debug)" >&2
    local log="$ROOT/.build/fuzz-build.log"
    mkdir -p "$ROOT/.build"
    if ! GEMMA_NODE_FUZZ=1 swift build "${FLAGS[@]}" >"$log" 2>&1; then
        grep -v "ld.gold: warning: Cannot export local symbol" "$log" | tail -30 >&2
        echo "fuzz.sh: build failed (full log: $log)" >&2
        exit 1
    fi
    BIN="$(GEMMA_NODE_FUZZ=1 swift build "${FLAGS[@]}" --show-bin-path)/gemma-fuzz"
}

if [ "$1" = seeds ]; then
    build
    rm -rf "$ROOT/Fuzz/corpus"
    GEMMA_FUZZ_WRITE_SEEDS="$ROOT/Fuzz/corpus" "$BIN"
    find "$ROOT/Fuzz/corpus" -type f | sort
    exit 0
fi

SECONDS_EACH="${2:-}"
[[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || usage
if [ -z "${GEMMA_NODE_MODEL:-}" ]; then
    GEMMA_NODE_MODEL="$("$ROOT/Scripts/setup.sh" --no-build --quiet | tail -n 1)"
fi
export GEMMA_NODE_MODEL
build

fuzz_one() {
    local target=$1 seconds=$2
    local corpus="$WORK/corpus/$target" crashes="$WORK/crashes/$target" log="$WORK/logs/$target.log"
    mkdir -p "$corpus" "$crashes" "$WORK/logs"
    local dict=()
    case "$target" in http|tokenizer-json|safetensors|grammar) dict=(-dict="$ROOT/Fuzz/json.dict") ;; esac
    echo "fuzz.sh: $target for ${seconds}s (log: $log)" >&2
    local rc=0 started=$SECONDS
    # -max_len: large enough for the biggest seed (the model files are ~300 KB).
    # SWIFT_BACKTRACE off: libFuzzer reports the crash; Swift's backtracer under ASan adds a
    # spurious stack-buffer-underflow report of its own.
    SWIFT_BACKTRACE=enable=no GEMMA_FUZZ_TARGET="$target" "$BIN" "$corpus" "$ROOT/Fuzz/corpus/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=400000 \
        -artifact_prefix="$crashes/" -print_final_stats=1 "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
    local execs
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    local outcome=clean
    [ $rc -eq 0 ] || outcome="failed(rc=$rc)"
    # Stopped on purpose (SIGINT to gemma-fuzz: libFuzzer prints its stats and exits 72).
    if grep -q "libFuzzer: run interrupted" "$log"; then outcome=interrupted; fi
    # The seconds actually fuzzed, not the seconds asked for.
    printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$target" "$((SECONDS - started))" "$execs" "$outcome" >>"$WORK/runs.tsv"
    if [ "$outcome" = interrupted ]; then
        echo "fuzz.sh: $target interrupted after $((SECONDS - started))s: $execs executions" >&2
        return 0
    fi
    if [ $rc -ne 0 ]; then
        grep -E "ERROR|Fatal error|SUMMARY|Test unit written|==[0-9]+==" "$log" | head -20 >&2 || true
        echo "fuzz.sh: $target found a problem (log $log). Keep the input as a regression test:" >&2
        echo "  cp $crashes/<file> Fuzz/regressions/$target/   (then fix it; the suite replays it)" >&2
        return 1
    fi
    echo "fuzz.sh: $target clean: $execs executions in ${seconds}s; corpus $(ls "$corpus" | wc -l) files" >&2
}

if [ "$1" = all ]; then
    failed=0
    for t in $TARGETS; do fuzz_one "$t" "$SECONDS_EACH" || failed=1; done
    exit $failed
fi
fuzz_one "$1" "$SECONDS_EACH"
