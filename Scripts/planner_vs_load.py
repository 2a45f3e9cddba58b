#!/usr/bin/env python3
"""Planned weights per rank against what loading really takes, per model file and rank count.

For each FILE and each N in --ranks: `gemma-node inspect -m FILE --ranks N --json` gives every
rank's planned weight bytes; `mpirun -n N --bind-to none gemma-node bench -m FILE -t 1 -p 4 -n 1
-r 1 --no-warmup --json` loads the model and reports each rank's peak RSS (VmHWM: the highest
resident set, which for a short run is reached while loading), resident anonymous memory after
the run, and the load time. Prints a Markdown table (MiB = 2^20 bytes) with the CPU and date.

    python3 Scripts/planner_vs_load.py [--ranks 1,2,4] [--gemma-node PATH] [--json-out F.json]
        [--plot F.png] FILE.gguf ...
    python3 Scripts/planner_vs_load.py --from-json F.json [--plot F.png]   (table and plot again)

The plot (matplotlib, from the project's venv): per-rank peak RSS as a fraction of the 1-rank
peak against the rank count, one line per file, with the ideal 1/N and issue 14's 0.28 at 4.

Ranks beyond the host's cores are oversubscribed (memory does not depend on it; no speed is
reported). Needs the release build (`swift build -c release --product gemma-node`).
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def last_json(text, what):
    lines = [l for l in text.splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"planner_vs_load: no JSON from {what}:\n{text[-2000:]}")
    return json.loads(lines[-1])


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"planner_vs_load: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return p.stdout


def fmt(xs):
    if len(xs) == 1:
        return f"{xs[0]:,.0f}"
    return f"{xs[0]:,.0f} each" if len(set(round(x) for x in xs)) == 1 else ", ".join(f"{x:,.0f}" for x in xs)


def print_table(header, rows):
    print(header)
    print()
    print("| model | ranks | planned weights per rank MiB | peak RSS per rank MiB | peak − planned MiB | peak / 1-rank peak | load s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    one = {}
    for r in rows:
        if r["ranks"] == 1:
            one[r["model"]] = max(r["peak_mib"])
        base = one.get(r["model"])
        ratio = f"{max(r['peak_mib']) / base:.3f}" if base else "-"
        print(f"| {r['model']} | {r['ranks']} | {fmt(r['planned_mib'])} | {fmt(r['peak_mib'])} | "
              f"{fmt([p - q for p, q in zip(r['peak_mib'], r['planned_mib'])])} | {ratio} | {r['load_seconds']:.1f} |", flush=True)


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("planner_vs_load: --plot needs matplotlib (the project's venv has it)")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    models = []
    for r in rows:
        if r["model"] not in models:
            models.append(r["model"])
    ns = sorted({r["ranks"] for r in rows})
    for i, m in enumerate(models):
        color = f"C{i}"
        mr = sorted((r for r in rows if r["model"] == m), key=lambda r: r["ranks"])
        ax1.plot([r["ranks"] for r in mr], [max(r["peak_mib"]) * 2**20 / 1e9 for r in mr], "o-", color=color, label=f"{m} peak")
        ax1.plot([r["ranks"] for r in mr], [max(r["planned_mib"]) * 2**20 / 1e9 for r in mr], "x--", color=color, alpha=0.6)
        base = next((max(r["peak_mib"]) for r in mr if r["ranks"] == 1), None)
        if base:
            ax2.plot([r["ranks"] for r in mr], [max(r["peak_mib"]) * r["ranks"] / base for r in mr], "o-", color=color, label=m)
    ax1.set_yscale("log")
    ax1.set_xticks(ns)
    ax1.set_xlabel("ranks")
    ax1.set_ylabel("GB per rank (largest rank)")
    ax1.set_title("Peak RSS per rank (o) and planned weights (x)")
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=7)
    ax2.axhline(1.0, color="k", linestyle=":", label="ideal: 1 / ranks of the 1-rank peak")
    ax2.axhline(0.28 * 4, color="r", linestyle="--", label="issue 14 limit at 4 ranks (0.28 x 4)")
    ax2.set_xticks(ns)
    ax2.set_xlabel("ranks")
    ax2.set_ylabel("peak per rank x ranks / 1-rank peak")
    ax2.set_title("Overhead over a perfect split")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.suptitle("Loading synthetic Q4_K_M files at 1, 2 and 4 ranks (Scripts/planner_vs_load.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*")
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--gemma-node", default=os.path.join(ROOT, ".build", "release", "gemma-node"))
    ap.add_argument("--json-out", help="write the measurements as JSON")
    ap.add_argument("--from-json", help="print (and plot) earlier measurements instead of measuring")
    ap.add_argument("--plot", help="write a PNG of peak per rank / 1-rank peak against the rank count")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            saved = json.load(f)
        print_table(saved["header"], saved["rows"])
        if a.plot:
            plot(saved["rows"], a.plot)
        return
    if not a.models:
        ap.error("give model files, or --from-json")
    env = dict(os.environ, OMPI_MCA_rmaps_base_oversubscribe="1")
    mpirun = ["mpirun", "--bind-to", "none"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    header = f"CPU: {cpu_name()}, kernel {platform.release()}, {datetime.date.today().isoformat()}"
    rows = []
    for model in a.models:
        for n in [int(x) for x in a.ranks.split(",")]:
            plan = last_json(run([a.gemma_node, "inspect", "-m", model, "--ranks", str(n), "--json"]), "inspect")
            cmd = mpirun + ["-n", str(n), a.gemma_node, "bench", "-m", model, "-t", "1", "-p", "4", "-n", "1", "-r", "1",
                            "--no-warmup", "--json"]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if p.returncode != 0:
                sys.exit(f"planner_vs_load: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
            bench = last_json(p.stdout, "bench")
            ranks = sorted(bench["per_rank"], key=lambda r: r["rank"])
            rows.append({"model": os.path.basename(model), "ranks": n,
                         "planned_mib": [r["weightBytes"] / 2**20 for r in plan["perRank"]],
                         "peak_mib": [r["peak_rss_mib"] for r in ranks], "load_seconds": bench["load_seconds"]})
    print_table(header, rows)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1)
    if a.plot:
        plot(rows, a.plot)


if __name__ == "__main__":
    main()
