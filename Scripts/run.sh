#!/usr/bin/env bash
# The main job on a fresh machine: sets up (packages, default model, release build) and
# runs gemma-node on 4 ranks of this machine under mpirun. Arguments go to gemma-node;
# without any it runs the default job. RANKS=N changes the rank count.
#
#   Scripts/run.sh                          # default job
#   Scripts/run.sh cluster-check            # check MPI and measure all-reduce
#   Scripts/run.sh generate -p "Hello" -n 32
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL_PATH="$("$ROOT/Scripts/setup.sh" | tail -n 1)"
export GEMMA_NODE_MODEL="${GEMMA_NODE_MODEL:-$MODEL_PATH}"
export OPENBLAS_NUM_THREADS=1

if [ "$#" -eq 0 ]; then
    # The default job: Gemma 3 270M (Q4_K_M GGUF) split over the ranks continues a prompt,
    # greedy, streamed as it is generated; one compute thread per rank. (This small model
    # answers chat turns poorly - llama.cpp's greedy output on them is the same; try
    # `Scripts/run.sh chat` for an interactive session.)
    set -- generate -p "Here is a short story about a robot who learns to paint:" -n 64 --temp 0 -t 1
fi

RANKS="${RANKS:-4}"
MPI_ARGS=(-n "$RANKS" --oversubscribe --bind-to none)
if [ "$(id -u)" = 0 ]; then MPI_ARGS+=(--allow-run-as-root); fi
exec mpirun "${MPI_ARGS[@]}" "$ROOT/.build/release/gemma-node" "$@"
