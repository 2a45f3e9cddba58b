#!/usr/bin/env python3
"""Scaling sweep: `gemma-node bench --json` over rank counts x link profiles x models, in
rounds that alternate the order of the runs, written as CSV; cost models of the decode step
and of the prefill step fitted to it; plots.

    Scripts/scaling_sweep.py [--gemma-node BIN] [--models A.gguf,B.gguf] [--ranks 1,2,4]
        [--links shm,10g,2.5g,1g-0.2ms,1g-1ms] [--rounds 2] [--reps 2] [--n-prompt 64]
        [--n-gen 32] [--csv F.csv] [--plot F.png] [--fit-out F.json]
    Scripts/scaling_sweep.py --from-csv F.csv [--plot F.png] [--fit-out F.json]
        (no runs: fits, prints and plots the rows of an earlier sweep)

Link profiles (LATENCY_US,GBIT for `--emulate-link`; `shm` is no emulation, the ranks'
shared-memory transport as it is):
    shm          ranks on one host, Open MPI's shared memory
    10g          25 us, 10 Gbit/s     (assumed one-way MPI latency of 10 GbE TCP)
    2.5g         50 us, 2.5 Gbit/s
    1g-0.2ms     200 us, 1 Gbit/s
    1g-1ms       1000 us, 1 Gbit/s
Everything but `shm` is EMULATED (EmulatedLinkCommunicator): each collective runs over shared
memory and then waits the modelled time of that link. It shows what the engine does when its
collectives take that long; it does not measure a real network (docs/SCALING.md).

The CSV has one row per run: model, ranks, link, round, decode and prefill tok/s, time to
first token (the prefill step), sum all-reduces per decode token and their bytes per rank,
decode step ms split into compute / all-reduce / sampling+control, peak RSS per rank (max and
mean), the load average, the host's cores and the prompt length.

The cost model of one decode step at N ranks over a link (latency l, bandwidth B):
    t(N) = c / N + s + k * (N - 1) + A * allreduce(N, bytes, l, B)
with c the one-rank compute, s the fixed per-step cost (sampling, control), k the per-extra-rank
overhead (shared cores, imbalance), A the all-reduces per token and allreduce() the same
algorithm model the emulation uses (min of recursive doubling and ring). c, s and k are fitted
by least squares on the `shm` runs and the first emulated link; the other links are held out
and their error is reported. On emulated links the all-reduce term is the emulation's own
formula, so the held-out error tests the compute/overhead terms and the additivity of the
wait, not a real network.

The prefill step (the time to first token of a P-token prompt, one step) has the same form with
its own c, s, k and all-reduces of P times the decode payload (the same count A, each carrying
every prompt row): t_p(N) = c_p / N + s_p + k_p (N - 1) + A * allreduce(N, P * bytes, l, B).

On one 2-core machine ranks beyond 2 share cores: the sweep measures tensor-parallel overhead,
not the speed-up of N machines.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("plots")

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys

from _run import mpirun_prefix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LINKS = {
    "shm": None,
    "10g": (25.0, 10.0),
    "2.5g": (50.0, 2.5),
    "1g-0.2ms": (200.0, 1.0),
    "1g-1ms": (1000.0, 1.0),
}




def allreduce_seconds(ranks, nbytes, latency_us, gbit):
    """EmulatedLink.allReduceSeconds: the faster of recursive doubling and ring."""
    if ranks <= 1:
        return 0.0
    lat, bw = latency_us / 1e6, gbit * 1e9 / 8
    rounds = math.ceil(math.log2(ranks))
    doubling = rounds * (lat + nbytes / bw)
    ring = 2 * (ranks - 1) * (lat + nbytes / ranks / bw)
    return min(doubling, ring)


def bench(args, model, ranks, link):
    cmd = [args.gemma_node, "bench", "-m", model, "-t", "1", "-p", str(args.n_prompt), "-n", str(args.n_gen),
           "-r", str(args.reps), "--bandwidth-mib", "0", "--json"]
    if LINKS[link] is not None:
        cmd += ["--emulate-link", "%g,%g" % LINKS[link]]
    if ranks > 1:
        cmd = mpirun_prefix(ranks) + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"scaling_sweep: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    r = json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])
    per = r["per_rank"]
    mean = lambda key: statistics.mean(p["decode_step_ms"][key] for p in per)
    return {
        "decode_tok_s": r["decode_tokens_per_second"]["median"],
        "prefill_tok_s": r["prefill_tokens_per_second"]["median"],
        "ttft_ms": max(p["prefill_step_ms"] for p in per),
        "allreduces_per_token": per[0]["decode_all_reduces_per_step"],
        "allreduce_bytes_per_token": per[0]["decode_all_reduce_bytes_per_step"],
        "step_ms": mean("total"), "compute_ms": mean("compute"), "allreduce_ms": mean("all_reduce"),
        "sampling_ms": mean("sampling_and_control"),
        "peak_rss_mib_max": max(p["peak_rss_mib"] for p in per),
        "peak_rss_mib_mean": statistics.mean(p["peak_rss_mib"] for p in per),
        "load_average": os.getloadavg()[0],
        "host_cores": os.cpu_count(),
        "n_prompt": args.n_prompt,
    }


def fit(rows, fit_links, step="decode"):
    """Least squares for c, s, k in t = c/N + s + k (N-1) + A allreduce(...), per model, for the
    decode step (step_ms, one token's all-reduces) or the prefill step (ttft_ms, all-reduces of
    n_prompt rows)."""
    import numpy as np
    measured = "step_ms" if step == "decode" else "ttft_ms"
    out = {}
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        def design(r):
            return [1.0 / r["ranks"], 1.0, r["ranks"] - 1.0]
        def comm(r):
            if LINKS[r["link"]] is None:
                return 0.0
            lat, gbit = LINKS[r["link"]]
            per = r["allreduce_bytes_per_token"] / max(r["allreduces_per_token"], 1)
            if step == "prefill":
                per *= r["n_prompt"]
            return r["allreduces_per_token"] * allreduce_seconds(r["ranks"], per, lat, gbit) * 1e3
        train = [r for r in mine if r["link"] in fit_links]
        if len(train) < 3:
            continue
        # shm all-reduce time is measured, not modelled: it goes into the fitted terms.
        X = np.array([design(r) for r in train])
        y = np.array([r[measured] - comm(r) for r in train])
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        predict = lambda r: float(np.dot(coef, design(r)) + comm(r))
        held = [r for r in mine if r["link"] not in fit_links]
        errors = [abs(predict(r) - r[measured]) / r[measured] for r in held]
        # Points with more ranks than the host has cores are reported apart: there the ranks
        # share cores, which no cluster of separate machines does.
        own = [abs(predict(r) - r[measured]) / r[measured] for r in held if r["ranks"] <= r["host_cores"]]
        out[model] = {"c_ms": coef[0], "s_ms": coef[1], "k_ms": coef[2], "fit_links": sorted(fit_links),
                      "held_out_points": len(held),
                      "held_out_median_error": statistics.median(errors) if errors else None,
                      "held_out_max_error": max(errors) if errors else None,
                      "held_out_points_own_cores": len(own),
                      "held_out_median_error_own_cores": statistics.median(own) if own else None,
                      "held_out_max_error_own_cores": max(own) if own else None,
                      "predict": {f"{r['ranks']}/{r['link']}": predict(r) for r in mine}}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemma-node", default=os.path.join(ROOT, ".build", "release", "gemma-node"))
    ap.add_argument("--models", default=None, help="comma-separated GGUF files (default: the default model)")
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--links", default=",".join(LINKS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--n-prompt", type=int, default=64)
    ap.add_argument("--n-gen", type=int, default=32)
    ap.add_argument("--csv", default="scaling_sweep.csv")
    ap.add_argument("--plot")
    ap.add_argument("--fit-out")
    ap.add_argument("--from-csv", help="fit, print and plot the rows of an earlier sweep's CSV instead of running")
    args = ap.parse_args()
    models = args.models.split(",") if args.models else [_venv.default_model()]
    counts = [int(x) for x in args.ranks.split(",")]
    links = args.links.split(",")
    for l in links:
        if l not in LINKS:
            sys.exit(f"scaling_sweep: unknown link {l!r}; known: {', '.join(LINKS)}")
    runs = [(m, n, l) for m in models for l in links for n in counts]
    rows = []
    fields = ["model", "ranks", "link", "round", "decode_tok_s", "prefill_tok_s", "ttft_ms", "allreduces_per_token",
              "allreduce_bytes_per_token", "step_ms", "compute_ms", "allreduce_ms", "sampling_ms",
              "peak_rss_mib_max", "peak_rss_mib_mean", "load_average", "host_cores", "n_prompt"]
    if args.from_csv:
        with open(args.from_csv, newline="") as f:
            for r in csv.DictReader(f):
                row = {"model": r["model"], "link": r["link"]}
                for k in fields[1:]:
                    if k == "link":
                        continue
                    v = r.get(k)
                    if k == "host_cores" and not v:
                        v = os.cpu_count()  # CSVs from before the column: this host
                    if k == "n_prompt" and not v:
                        v = args.n_prompt
                    row[k] = float(v)
                row["ranks"] = int(row["ranks"])
                rows.append(row)
        links = [l for l in LINKS if any(r["link"] == l for r in rows)]
        counts = sorted({r["ranks"] for r in rows})
    else:
        if not os.access(args.gemma_node, os.X_OK):
            sys.exit(f"scaling_sweep: no gemma-node binary at {args.gemma_node} (swift build -c release, or --gemma-node)")
        run_sweep(args, runs, fields, rows)
    summarize(args, rows, fields, links, counts)


def run_sweep(args, runs, fields, rows):
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for rnd in range(args.rounds):
            for model, n, link in (runs if rnd % 2 == 0 else list(reversed(runs))):
                r = {"model": os.path.basename(model), "ranks": n, "link": link, "round": rnd, **bench(args, model, n, link)}
                rows.append(r)
                w.writerow(r)
                f.flush()
                print(f"round {rnd} {r['model']} ranks {n} {link}: tg {r['decode_tok_s']:.1f} pp {r['prefill_tok_s']:.1f} "
                      f"tok/s, step {r['step_ms']:.2f} ms (all-reduce {r['allreduce_ms']:.2f}), load {r['load_average']:.2f}",
                      flush=True)


def summarize(args, rows, fields, links, counts):
    # Medians over rounds.
    med = {}
    for r in rows:
        med.setdefault((r["model"], r["ranks"], r["link"]), []).append(r)
    summary = [{**rs[0], **{k: statistics.median(x[k] for x in rs) for k in fields[4:]}} for rs in med.values()]
    fit_links = {l for l in links if l == "shm"} | ({[l for l in links if l != "shm"][0]} if len(links) > 1 else set())
    model = fit(summary, fit_links)
    prefill = fit(summary, fit_links, step="prefill")
    print("\n| model | link | ranks | tg tok/s | pp tok/s | step ms: compute / all-reduce / sampling | all-reduces x bytes per token | peak RSS per rank MiB | model ms | prefill step ms | its model ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(summary, key=lambda r: (r["model"], links.index(r["link"]), r["ranks"])):
        key = f"{r['ranks']}/{r['link']}"
        p = model.get(r["model"], {}).get("predict", {}).get(key)
        pp = prefill.get(r["model"], {}).get("predict", {}).get(key)
        print(f"| {r['model']} | {r['link']} | {r['ranks']} | {r['decode_tok_s']:.1f} | {r['prefill_tok_s']:.1f} | "
              f"{r['compute_ms']:.2f} / {r['allreduce_ms']:.2f} / {r['sampling_ms']:.2f} | "
              f"{r['allreduces_per_token']:.0f} x {r['allreduce_bytes_per_token'] / max(r['allreduces_per_token'], 1):.0f} | "
              f"{r['peak_rss_mib_max']:.0f} | {p if p is None else round(p, 2)} | {r['ttft_ms']:.1f} | "
              f"{pp if pp is None else round(pp, 1)} |")
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"
    for name, fits in (("decode", model), ("prefill", prefill)):
        for m, f in fits.items():
            print(f"\n{m} {name} step: t = {f['c_ms']:.2f}/N + {f['s_ms']:.2f} + {f['k_ms']:.2f} (N-1) ms + all-reduces; "
                  f"fitted on {', '.join(f['fit_links'])}; held-out error median {pct(f['held_out_median_error'])}, "
                  f"max {pct(f['held_out_max_error'])} over {f['held_out_points']} points; with no more ranks than cores: "
                  f"median {pct(f['held_out_median_error_own_cores'])}, max {pct(f['held_out_max_error_own_cores'])} "
                  f"over {f['held_out_points_own_cores']} points")
    if args.fit_out:
        with open(args.fit_out, "w") as f:
            json.dump({"decode": model, "prefill": prefill}, f, indent=1)
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        names = sorted({r["model"] for r in summary})
        fig, axes = plt.subplots(len(names), 3, figsize=(15, 3.6 * len(names)), squeeze=False)
        for row, name in zip(axes, names):
            a, b, c = row

            def per_link(ax, value, fits, modelled, title, ylabel):
                """Measured `value` against ranks per link, solid; the fitted model dashed."""
                pred = fits.get(name, {}).get("predict", {})
                for link in links:
                    pts = sorted((r for r in summary if r["model"] == name and r["link"] == link), key=lambda r: r["ranks"])
                    line, = ax.plot([r["ranks"] for r in pts], [value(r) for r in pts], "o-",
                                    label=link + ("" if link == "shm" else " (emulated)"))
                    ms = [pred.get(f"{r['ranks']}/{link}") for r in pts]
                    ax.plot([r["ranks"] for r in pts], [modelled(m) if m else float("nan") for m in ms],
                            "--", color=line.get_color(), alpha=0.6)
                ax.set_title(title)
                ax.set_xlabel("ranks (1 thread each)")
                ax.set_ylabel(ylabel)
                ax.set_xticks(counts)
                ax.legend(fontsize=7)

            per_link(a, lambda r: r["decode_tok_s"], model, lambda ms: 1e3 / ms,
                     f"{name}: decode (dashed: cost model)", "tok/s")
            per_link(c, lambda r: r["ttft_ms"], prefill, lambda ms: ms,
                     f"prefill step of {int(summary[0]['n_prompt'])} tokens (dashed: cost model)", "ms")
            pts = [r for r in summary if r["model"] == name]
            labels = [f"{r['ranks']}/{r['link']}" for r in pts]
            xs = range(len(pts))
            b.bar(xs, [r["compute_ms"] for r in pts], label="compute")
            b.bar(xs, [r["allreduce_ms"] for r in pts], bottom=[r["compute_ms"] for r in pts], label="all-reduce")
            b.bar(xs, [r["sampling_ms"] for r in pts], bottom=[r["compute_ms"] + r["allreduce_ms"] for r in pts],
                  label="sampling+control")
            b.set_xticks(list(xs))
            b.set_xticklabels(labels, rotation=70, fontsize=6)
            b.set_ylabel("decode step ms (mean over ranks)")
            b.set_title("where a decode step goes")
            b.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
