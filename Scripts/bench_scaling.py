#!/usr/bin/env python3
"""Rank scaling of gemma-node on one machine: `gemma-node bench` at 1, 2 and 4 ranks (1 thread
each) on the same GGUF, in rounds that alternate the order of the rank counts. Prints, per rank
count, the median over rounds of pp/tg tok/s, the per-rank decode step split (compute,
all-reduce, sampling+control) and the peak RSS per rank against the ideal 1/N of the 1-rank
peak, and optionally plots them.

    python3 Scripts/bench_scaling.py [--gemma-node BIN] [--ranks 1,2,4] [--rounds 2] [--reps 3]
                                     [--json-out F] [--plot docs/scaling.png]

On one box the ranks share its cores and memory bandwidth, so this measures tensor-parallel
overhead (all-reduces, the sampling gather, load imbalance) and the memory split, not the
speed-up of several machines. More ranks than cores is oversubscribed: gemma-node then turns on
Open MPI's yield-when-idle itself (MPICommunicator.yieldWhenOversubscribed).
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("bench")

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def run(args, ranks):
    cmd = [args.gemma_node, "bench", "-m", args.model, "-t", "1", "-p", str(args.n_prompt), "-n", str(args.n_gen),
           "-r", str(args.reps), "--bandwidth-mib", "0", "--json"]
    if ranks > 1:
        cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n", str(ranks)] + cmd
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    per = r["per_rank"]
    mean = lambda key: statistics.mean(p["decode_step_ms"][key] for p in per)
    return {"decode": r["decode_tokens_per_second"]["median"], "prefill": r["prefill_tokens_per_second"]["median"],
            "peak_rss_mib": max(p["peak_rss_mib"] for p in per),
            "compute_ms": mean("compute"), "allreduce_ms": mean("all_reduce"),
            "sampling_ms": mean("sampling_and_control"), "load": os.getloadavg()[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=_venv.default_model())
    ap.add_argument("--gemma-node", default=os.path.join(ROOT, ".build", "release", "gemma-node"))
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-prompt", type=int, default=128)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--json-out")
    ap.add_argument("--plot", help="write a PNG (needs matplotlib)")
    args = ap.parse_args()
    counts = [int(x) for x in args.ranks.split(",")]
    results = {n: [] for n in counts}
    log = {"loadavg_before": open("/proc/loadavg").read().strip(), "runs": []}
    for rnd in range(args.rounds):
        order = counts if rnd % 2 == 0 else list(reversed(counts))
        for n in order:
            r = run(args, n)
            results[n].append(r)
            log["runs"].append({"round": rnd, "ranks": n, **r})
            print(f"round {rnd} ranks {n}: tg {r['decode']:.1f} pp {r['prefill']:.1f} tok/s, "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB, load {r['load']:.2f}", flush=True)
    med = lambda n, k: statistics.median(r[k] for r in results[n])
    base_rss = med(counts[0], "peak_rss_mib") * counts[0]
    print(f"\n| ranks x 1 thread | tg{args.n_gen} tok/s | pp{args.n_prompt} tok/s | decode step ms: compute / all-reduce / "
          "sampling+control | peak RSS per rank MiB | 1-rank peak / N |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in counts:
        print(f"| {n} | {med(n, 'decode'):.1f} | {med(n, 'prefill'):.1f} | {med(n, 'compute_ms'):.1f} / "
              f"{med(n, 'allreduce_ms'):.1f} / {med(n, 'sampling_ms'):.1f} | {med(n, 'peak_rss_mib'):.0f} | "
              f"{base_rss / n:.0f} |")
    log["loadavg_after"] = open("/proc/loadavg").read().strip()
    print(f"\nload average before: {log['loadavg_before']}; after: {log['loadavg_after']}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(log, f, indent=1)
    if args.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib not available: no plot", file=sys.stderr)
            return
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
        a.plot(counts, [med(n, "decode") for n in counts], "o-", label=f"decode (tg{args.n_gen})")
        a.plot(counts, [med(n, "prefill") / 10 for n in counts], "s-", label=f"prefill (pp{args.n_prompt}) / 10")
        a.set_xlabel("ranks (1 thread each, one 2-core box)")
        a.set_ylabel("tok/s")
        a.set_xticks(counts)
        a.legend()
        b.plot(counts, [med(n, "peak_rss_mib") for n in counts], "o-", label="measured")
        b.plot(counts, [base_rss / n for n in counts], "--", color="gray", label="1-rank peak / N")
        b.set_xlabel("ranks")
        b.set_ylabel("peak RSS per rank (MiB)")
        b.set_xticks(counts)
        b.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
