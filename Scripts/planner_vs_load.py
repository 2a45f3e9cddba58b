#!/usr/bin/env python3
"""Planned weights per rank against what loading really takes, per model file and rank count.

For each FILE and each N in --ranks: `gemma-node inspect -m FILE --ranks N --json` gives every
rank's planned weight bytes; `mpirun -n N --bind-to none gemma-node bench -m FILE -t 1 -p 4 -n 1
-r 1 --no-warmup --json` loads the model and reports each rank's peak RSS (VmHWM: the highest
resident set, which for a short run is reached while loading), resident anonymous memory after
the run, and the load time. Prints a Markdown table (MiB = 2^20 bytes) with the CPU and date.

    python3 Scripts/planner_vs_load.py [--ranks 1,2,4] [--gemma-node PATH] FILE.gguf ...

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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--gemma-node", default=os.path.join(ROOT, ".build", "release", "gemma-node"))
    a = ap.parse_args()
    env = dict(os.environ, OMPI_MCA_rmaps_base_oversubscribe="1")
    mpirun = ["mpirun", "--bind-to", "none"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    print(f"CPU: {cpu_name()}, kernel {platform.release()}, {datetime.date.today().isoformat()}")
    print()
    print("| model | ranks | planned weights per rank MiB | peak RSS per rank MiB | peak − planned MiB | peak / 1-rank peak | load s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model in a.models:
        name = os.path.basename(model)
        one_rank_peak = None
        for n in [int(x) for x in a.ranks.split(",")]:
            plan = last_json(run([a.gemma_node, "inspect", "-m", model, "--ranks", str(n), "--json"]), "inspect")
            planned = [r["weightBytes"] / 2**20 for r in plan["perRank"]]
            cmd = mpirun + ["-n", str(n), a.gemma_node, "bench", "-m", model, "-t", "1", "-p", "4", "-n", "1", "-r", "1",
                            "--no-warmup", "--json"]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if p.returncode != 0:
                sys.exit(f"planner_vs_load: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
            bench = last_json(p.stdout, "bench")
            ranks = sorted(bench["per_rank"], key=lambda r: r["rank"])
            peaks = [r["peak_rss_mib"] for r in ranks]
            if n == 1:
                one_rank_peak = peaks[0]
            def fmt(xs):
                return ", ".join(f"{x:,.0f}" for x in xs) if len(set(round(x) for x in xs)) > 1 else f"{xs[0]:,.0f} each" if len(xs) > 1 else f"{xs[0]:,.0f}"
            ratio = f"{max(peaks) / one_rank_peak:.3f}" if one_rank_peak else "-"
            print(f"| {name} | {n} | {fmt(planned)} | {fmt(peaks)} | {fmt([p - q for p, q in zip(peaks, planned)])} | {ratio} | "
                  f"{bench['load_seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
