#!/usr/bin/env python3
"""Predictions for named clusters in docs/SCALING.md: `gemma-node plan --json` for Gemma 3 27B,
Gemma 4 31B and 26B-A4B (Q4_K_M mix, f32 KV cache, 4096 tokens) on each cluster below, printed
as a markdown table. Every figure is the cost model's (DecodeCostModel), not a measurement.

    Scripts/plan_clusters.py [--gemma-node BIN] [--kv-type f32|f16|q8_0]

Assumptions are the CLUSTERS rows below (per machine: effective decode memory bandwidth in
GB/s and memory in GB; link: one-way latency of one MPI message in us and Gbit/s); the "same,"
rows repeat a cluster with another latency to show how much it matters.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["gemma-3-27b", "gemma-4-31b", "gemma-4-26b-a4b"]
# name, machines, GB/s per machine, GB per machine, latency us, Gbit/s
CLUSTERS = [
    ("4 x Raspberry Pi 5 8 GB, 1 GbE", 4, 10, 8, 150, 1),
    ("same, 300 us per message", 4, 10, 8, 300, 1),
    ("4 mini PCs 16 GB, 2.5 GbE", 4, 40, 16, 50, 2.5),
    ("2 workstations 64 GB, 10 GbE", 2, 80, 64, 25, 10),
    ("same, 100 us per message", 2, 80, 64, 100, 10),
]


def plan(binary, model, ranks, gbs, mem, lat, gbit, kv):
    cmd = [binary, "plan", "--config", model, "--ranks", str(ranks), "--bandwidth", str(gbs), "--memory", str(mem),
           "--link", f"{lat},{gbit}", "--kv-type", kv, "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return json.loads(p.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemma-node", default=os.path.join(ROOT, ".build", "debug", "gemma-node"))
    ap.add_argument("--kv-type", default="f32")
    args = ap.parse_args()
    print("| cluster | model | tok/s at 1 / 2 / ... machines (x: does not fit) | best | at the best: compute / communication ms per token |")
    print("|---|---|---|---|---|")
    for name, n, gbs, mem, lat, gbit in CLUSTERS:
        for model in MODELS:
            a = plan(args.gemma_node, model, n, gbs, mem, lat, gbit, args.kv_type)
            cells = []
            for row in a["rows"]:
                t = row.get("tokensPerSecond")
                cells.append("x" if row.get("fitsMemory") is False or t is None else f"{t:.2f}")
            best = a.get("bestRanks")
            detail = ""
            if best:
                p = a["rows"][best - 1]["prediction"]
                detail = f"{p['computeSeconds'] * 1e3:.0f} / {p['communicationSeconds'] * 1e3:.1f}"
            print(f"| {name} | {model} | {' / '.join(cells)} | {best or 'none'} | {detail} |", flush=True)


if __name__ == "__main__":
    main()
