#!/usr/bin/env python3
"""The planner table of docs/LARGE_MODELS.md: for every preset at Q4_K_M (the mix `synth --quant
q4_k` writes), the fewest machines of 8 GB and of 16 GB that hold it (`gemma-node inspect
--config P --quant q4_k_m --machines GB --context C --kv-type K --json`), at 4K and 32K tokens
of context, per KV-cache type (cells: f32 / f16 / q8_0).

    Scripts/planner_table.py [--gemma-node BIN] [--overhead-mb MB]

Prints a markdown table. Needs only the binary (presets are shipped configs; nothing is read).
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = ["gemma-3-1b", "gemma-3-4b", "gemma-3-12b", "gemma-3-27b",
           "gemma-4-e2b", "gemma-4-e4b", "gemma-4-31b", "gemma-4-26b-a4b"]
KV_TYPES = ["f32", "f16", "q8_0"]
CONTEXTS = [4096, 32768]
SIZES = [8, 16]


def machines(binary, preset, gb, context, kv, overhead):
    """(machine count or "> 64", total weight bytes or None)."""
    cmd = [binary, "inspect", "--config", preset, "--quant", "q4_k_m", "--machines", str(gb), "--context", str(context),
           "--kv-type", kv, "--json"]
    if overhead is not None:
        cmd += ["--overhead-mb", str(overhead)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        if "does not fit" in p.stderr:
            return "> 64", None
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    fit = json.loads(p.stdout)
    return str(len(fit["ranks"])), fit["report"]["totalWeightBytes"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemma-node", default=os.path.join(ROOT, ".build", "debug", "gemma-node"))
    ap.add_argument("--overhead-mb", type=float, default=None, help="default: inspect's own")
    args = ap.parse_args()
    head = ["preset", "weights GB"] + [f"{gb} GB machines, {c // 1024}K context" for gb in SIZES for c in CONTEXTS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for preset in PRESETS:
        cells, total = [], None
        for gb in SIZES:
            for c in CONTEXTS:
                answers = [machines(args.gemma_node, preset, gb, c, kv, args.overhead_mb) for kv in KV_TYPES]
                total = total or next((t for _, t in answers if t), None)
                cells.append(" / ".join(n for n, _ in answers))
        weights = "?" if total is None else f"{total / 1e9:.2f}"
        print(f"| {preset} | {weights} | " + " | ".join(cells) + " |", flush=True)

if __name__ == "__main__":
    main()
