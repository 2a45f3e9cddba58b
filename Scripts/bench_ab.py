#!/usr/bin/env python3
"""A/B speed of two gemma-node binaries (e.g. before and after a change) on the same model:
`gemma-node bench --json` for each binary in rounds that alternate which goes first, at every
`RANKSxTHREADS` configuration asked for, so both see the same share of the box's background
load. Prints per configuration the median over rounds of decode (tg) and prefill (pp) tok/s
for A and B and the ratio B/A; the CPU and load average come from bench's own report.

    python3 Scripts/bench_ab.py --a OLD/gemma-node --b NEW/gemma-node [-m MODEL]
                                [--configs 1x1,2x1] [--rounds 3] [--reps 3] [-p 128] [-n 64]
                                [--a-args "..."] [--b-args "--kv-type f32"] [--json-out F]

`--a-args` / `--b-args` add flags to one side only: a binary from before a flag existed takes
its old default, and the other side can be told to match it (e.g. the KV cache type).
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("test")

import argparse
import json
import shlex
import statistics
import subprocess
import sys

from _run import mpirun_prefix


def bench(binary, model, ranks, threads, extra, args):
    cmd = mpirun_prefix(ranks) + [binary, "bench", "-m", model, "-t", str(threads), "-p", str(args.prompt),
                                  "-n", str(args.gen), "-r", str(args.reps), "--bandwidth-mib", "0", "--json"] + extra
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out[out.index("{"):])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="binary A (the baseline)")
    ap.add_argument("--b", required=True, help="binary B")
    ap.add_argument("-m", "--model", default=_venv.default_model())
    ap.add_argument("--configs", default="1x1,2x1", help="comma-separated RANKSxTHREADS")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-p", "--prompt", type=int, default=128)
    ap.add_argument("-n", "--gen", type=int, default=64)
    ap.add_argument("--a-args", default="")
    ap.add_argument("--b-args", default="")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    sides = {"A": (args.a, shlex.split(args.a_args)), "B": (args.b, shlex.split(args.b_args))}
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]

    runs = {}
    for rnd in range(args.rounds):
        order = ["A", "B"] if rnd % 2 == 0 else ["B", "A"]
        for ranks, threads in configs:
            for side in order:
                binary, extra = sides[side]
                r = bench(binary, args.model, ranks, threads, extra, args)
                row = {"tg": r["decode_tokens_per_second"]["median"], "pp": r["prefill_tokens_per_second"]["median"],
                       "load_average": r.get("load_average"), "cpu": r.get("cpu")}
                runs.setdefault((ranks, threads, side), []).append(row)
                print(f"round {rnd + 1} {ranks}x{threads} {side}: tg {row['tg']:.1f} pp {row['pp']:.1f} tok/s "
                      f"(load {row['load_average']})", file=sys.stderr)

    cpu = next(iter(runs.values()))[0]["cpu"]
    loads = [x["load_average"] for v in runs.values() for x in v if x["load_average"] is not None]
    print(f"A = {args.a} {args.a_args}\nB = {args.b} {args.b_args}")
    print(f"pp{args.prompt} tg{args.gen}, {args.rounds} alternating rounds x {args.reps} reps, medians; CPU {cpu}; "
          f"load average {min(loads):.1f}-{max(loads):.1f}" if loads else f"CPU {cpu}")
    print(f"{'ranks x threads':>15} | {'tg A':>7} {'tg B':>7} {'B/A':>5} | {'pp A':>7} {'pp B':>7} {'B/A':>5}")
    summary = []
    for ranks, threads in configs:
        m = {side: {k: statistics.median(x[k] for x in runs[(ranks, threads, side)]) for k in ("tg", "pp")} for side in "AB"}
        # Ratio of medians, and the median of the per-round ratios (robust to a noisy round).
        per_round = {k: statistics.median(b[k] / a[k] for a, b in zip(runs[(ranks, threads, "A")], runs[(ranks, threads, "B")]))
                     for k in ("tg", "pp")}
        print(f"{f'{ranks} x {threads}':>15} | {m['A']['tg']:>7.1f} {m['B']['tg']:>7.1f} {per_round['tg']:>5.2f} | "
              f"{m['A']['pp']:>7.1f} {m['B']['pp']:>7.1f} {per_round['pp']:>5.2f}")
        summary.append(dict(ranks=ranks, threads=threads, a=m["A"], b=m["B"], ratio_median_of_rounds=per_round))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"cpu": cpu, "summary": summary,
                       "runs": {f"{k[0]}x{k[1]} {k[2]}": v for k, v in runs.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
