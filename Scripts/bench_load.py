#!/usr/bin/env python3
"""Load time and peak memory per rank, three ways of getting the weights to the ranks:

    file    every rank reads its slices of the model file itself (the default)
    root    --weights-from-root: rank 0 reads the file and sends each rank its slices over
            MPI; the other ranks are started with a path that does not exist
    shards  -m DIR of `gemma-node shard` output (cut once before the rounds; the cut's own
            time is reported apart)

    Scripts/bench_load.py [--gemma-node BIN] [--model F.gguf] [--ranks 2] [--rounds 3]
        [--modes file,root,shards] [--emulate-link LAT_US,GBIT] [--json OUT.json]

Each run is `gemma-node bench -p 8 -n 4 -r 1 --json -t 1` under mpirun (MPMD for `root`);
its `load_seconds` (rank 0's clock from the start of loading to every rank holding its shard)
and every rank's peak RSS are kept. The modes alternate within each round, so a slow moment of
a shared machine hits all of them. The model file is read once before the rounds, so every
mode reads from the page cache: the figures compare the ways of moving weights, not disks.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("test")

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _run import mpirun_prefix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABSENT = "/nonexistent/gemma-node-worker/model.gguf"


def mpirun(per_rank):
    cmd = mpirun_prefix(1) + per_rank[0]
    for args in per_rank[1:]:
        cmd += [":", "-n", "1"] + args
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench_load: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])


def run(binary, mode, model, shard_dir, ranks, link):
    bench = [binary, "bench", "-p", "8", "-n", "4", "-r", "1", "--json", "-t", "1"]
    if link:
        bench += ["--emulate-link", link]
    if mode == "file":
        per_rank = [bench + ["-m", model]] * ranks
    elif mode == "root":
        per_rank = [bench + ["-m", model, "--weights-from-root"]] + [bench + ["-m", ABSENT, "--weights-from-root"]] * (ranks - 1)
    else:
        per_rank = [bench + ["-m", shard_dir]] * ranks
    r = mpirun(per_rank)
    return {"load_s": r["load_seconds"], "rss_mib": [p["peak_rss_mib"] for p in r["per_rank"]]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemma-node", default=os.path.join(ROOT, ".build", "release", "gemma-node"))
    ap.add_argument("--model", default=_venv.default_model())
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default="file,root,shards")
    ap.add_argument("--emulate-link", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    modes = a.modes.split(",")
    with open(a.model, "rb") as f:  # warm the page cache
        while f.read(64 << 20):
            pass
    shard_dir, cut_s = None, None
    tmp = tempfile.mkdtemp(prefix="gemma-node-bench-load-")
    try:
        if "shards" in modes:
            shard_dir = os.path.join(tmp, "shards")
            start = time.time()
            subprocess.run([a.gemma_node, "shard", "-m", a.model, "--ranks", str(a.ranks), "-o", shard_dir],
                           check=True, capture_output=True)
            cut_s = time.time() - start
        results = {m: [] for m in modes}
        for rnd in range(a.rounds):
            order = modes if rnd % 2 == 0 else list(reversed(modes))
            for m in order:
                results[m].append(run(a.gemma_node, m, a.model, shard_dir, a.ranks, a.emulate_link))
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        size = os.path.getsize(a.model)
        print(f"model {os.path.basename(a.model)} ({size / 1e9:.2f} GB), {a.ranks} ranks, {a.rounds} rounds, CPU {cpu}"
              + (f", EMULATED link {a.emulate_link}" if a.emulate_link else ""))
        if cut_s is not None:
            print(f"shard cut: {cut_s:.1f} s (one process, all ranks' files)")
        print("| mode | load s (median, min-max) | peak RSS per rank MiB (median) |")
        print("| --- | --- | --- |")
        summary = {}
        for m in modes:
            loads = [r["load_s"] for r in results[m]]
            rss = [statistics.median(r["rss_mib"][k] for r in results[m]) for k in range(a.ranks)]
            summary[m] = {"load_s": loads, "peak_rss_mib_per_rank": rss}
            print(f"| {m} | {statistics.median(loads):.2f} ({min(loads):.2f}-{max(loads):.2f}) | "
                  + " / ".join(f"{x:.0f}" for x in rss) + " |")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"model": a.model, "ranks": a.ranks, "cpu": cpu, "shard_cut_s": cut_s, "modes": summary}, f, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
