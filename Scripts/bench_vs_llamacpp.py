#!/usr/bin/env python3
"""Side-by-side benchmark: gemma-node vs llama.cpp (llama-cpp-python) on the same GGUF, same
threads, alternating runs. Prints the median over rounds of per-round ratios (ours / llama.cpp)
for tg64 at 1 and 2 threads, pp128, the 4-rank vs 1-rank peak RSS per rank, and 2 ranks x 1
thread vs 1 rank x 2 threads (gemma-node only).

    python3 Scripts/bench_vs_llamacpp.py [--model M] [--gemma-node BIN] [--rounds 3] [--reps 5]
                                         [--json-out results.json] [--plot docs/benchmarks.png]

llama.cpp runs in a child process per measurement (clean peak RSS, no state kept between
rounds). Its side feeds back the argmax of the logits each step, as gemma-node's greedy bench does.
`use_extra_bufts` is turned off: on this machine llama.cpp's AMX weight repacking path dies with
SIGILL (tileloadd), so llama.cpp runs its ordinary CPU kernels (AVX-512/VNNI).
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("bench")

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)




def llama_worker(args):
    """Runs inside a child: pp and tg of llama.cpp, prints one JSON line."""
    import numpy as np
    import llama_cpp.llama_cpp as L

    default_params = L.llama_model_default_params

    def params():
        p = default_params()
        p.use_extra_bufts = False  # AMX repack path: SIGILL here (see the module docstring)
        return p

    L.llama_model_default_params = params
    from llama_cpp import Llama

    llm = Llama(model_path=args.model, n_threads=args.threads, n_threads_batch=args.threads,
                n_ctx=args.n_prompt + args.n_gen + 8, n_batch=512, verbose=False)
    vocab = llm.n_vocab()
    # The same prompt as `gemma-node bench`: BOS then ids spread over the vocabulary.
    span = max(vocab - 110, 1)
    prompt = [2] + [100 + (i * 7919) % span for i in range(1, args.n_prompt)]
    pp, tg = [], []
    for rep in range(args.reps + 1):  # rep 0 warms up
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t1 = time.perf_counter()
        for _ in range(args.n_gen):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t2 = time.perf_counter()
        if rep > 0:
            pp.append(args.n_prompt / (t1 - t0))
            tg.append(args.n_gen / (t2 - t1))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    print(json.dumps({"prefill": pp, "decode": tg, "peak_rss_mib": rss}))


def run_llama(args, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--llama-worker", "--model", args.model,
           "--threads", str(threads), "--reps", str(args.reps), "--n-prompt", str(args.n_prompt),
           "--n-gen", str(args.n_gen)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return {"prefill": statistics.median(r["prefill"]), "decode": statistics.median(r["decode"]),
            "peak_rss_mib": r["peak_rss_mib"], "load": os.getloadavg()[0]}


def run_ours(args, threads, ranks=1, n_gen=None, reps=None, bandwidth=True):
    cmd = [args.gemma_node, "bench", "-m", args.model, "-t", str(threads), "-p", str(args.n_prompt),
           "-n", str(n_gen or args.n_gen), "-r", str(reps or args.reps), "--json"]
    if not bandwidth:
        cmd += ["--bandwidth-mib", "0"]
    env = dict(os.environ)
    if ranks > 1:
        cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n", str(ranks)] + cmd
        # More busy threads than cores: workers must not spin (docs/KERNELS.md).
        if ranks * threads > os.cpu_count():
            env["GEMMA_NODE_SPIN_US"] = "0"
        # Open MPI busy-polls in collectives; on a shared, loaded box a polling rank holds the
        # core its peer needs. Yielding while idle cut the 2-rank all-reduce time by ~35% here.
        env.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
        cmd[cmd.index("-n"):cmd.index("-n")] = ["-x", "OMPI_MCA_mpi_yield_when_idle"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    r = json.loads(line)
    return {"prefill": r["prefill_tokens_per_second"]["median"], "decode": r["decode_tokens_per_second"]["median"],
            "peak_rss_mib": max(p["peak_rss_mib"] for p in r["per_rank"]), "roofline_fraction": r["roofline_fraction"],
            "bandwidth_gb_per_s": r["bandwidth_gb_per_s"], "per_rank": r["per_rank"], "load": os.getloadavg()[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=_venv.default_model())
    ap.add_argument("--gemma-node", default=os.path.join(ROOT, ".build-perf", "release", "gemma-node"))
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison")
    ap.add_argument("--reps", type=int, default=5, help="repetitions inside each run (median taken)")
    ap.add_argument("--n-prompt", type=int, default=128)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--json-out")
    ap.add_argument("--plot", help="write a PNG of the ratios (needs matplotlib)")
    ap.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.llama_worker:
        llama_worker(args)
        return

    med = statistics.median
    log = {"rounds": [], "uptime_before": open("/proc/loadavg").read().strip()}
    ratios = {"tg_1t": [], "tg_2t": [], "pp_1t": [], "pp_2t": [], "rss_4r": [], "tp_2r1t_vs_1r2t": []}
    for rnd in range(args.rounds):
        entry = {}
        for threads in (1, 2):
            # Alternate which side goes first so slow drifts of the shared machine cancel out.
            if rnd % 2 == 0:
                ours = run_ours(args, threads); llama = run_llama(args, threads)
            else:
                llama = run_llama(args, threads); ours = run_ours(args, threads)
            entry[f"ours_{threads}t"] = ours
            entry[f"llama_{threads}t"] = llama
            ratios[f"tg_{threads}t"].append(ours["decode"] / llama["decode"])
            ratios[f"pp_{threads}t"].append(ours["prefill"] / llama["prefill"])
            print(f"round {rnd} t={threads}: tg ours {ours['decode']:.1f} llama {llama['decode']:.1f} | "
                  f"pp ours {ours['prefill']:.1f} llama {llama['prefill']:.1f} | load {ours['load']:.2f}/{llama['load']:.2f}",
                  flush=True)
        one = run_ours(args, 1, n_gen=16, reps=1, bandwidth=False)
        four = run_ours(args, 1, ranks=4, n_gen=16, reps=1, bandwidth=False)
        entry["rss_1r"], entry["rss_4r"] = one, four
        ratios["rss_4r"].append(four["peak_rss_mib"] / one["peak_rss_mib"])
        if rnd % 2 == 0:
            tp = run_ours(args, 1, ranks=2); solo = run_ours(args, 2)
        else:
            solo = run_ours(args, 2); tp = run_ours(args, 1, ranks=2)
        entry["tp_2r1t"], entry["solo_1r2t"] = tp, solo
        ratios["tp_2r1t_vs_1r2t"].append(tp["decode"] / solo["decode"])
        print(f"round {rnd}: RSS 1 rank {one['peak_rss_mib']:.0f} MiB, 4 ranks max {four['peak_rss_mib']:.0f} MiB | "
              f"tg 2r x 1t {tp['decode']:.1f} vs 1r x 2t {solo['decode']:.1f}", flush=True)
        log["rounds"].append(entry)

    targets = {"tg_1t": 1.2, "tg_2t": 1.2, "pp_1t": 1.0, "pp_2t": 1.0, "rss_4r": 0.35, "tp_2r1t_vs_1r2t": 0.95}
    names = {"tg_1t": "tg64, 1 thread (ours / llama.cpp)", "tg_2t": "tg64, 2 threads (ours / llama.cpp)",
             "pp_1t": "pp128, 1 thread (ours / llama.cpp)", "pp_2t": "pp128, 2 threads (ours / llama.cpp)",
             "rss_4r": "peak RSS per rank, 4 ranks / 1 rank", "tp_2r1t_vs_1r2t": "tg64, 2 ranks x 1 thread / 1 rank x 2 threads"}
    log["uptime_after"] = open("/proc/loadavg").read().strip()
    log["ratios"] = {k: {"median": med(v), "all": v} for k, v in ratios.items()}
    print(f"\n| measure | median ratio | per round | target | met |\n| --- | --- | --- | --- | --- |")
    for k, v in ratios.items():
        lower_is_better = k == "rss_4r"
        met = med(v) <= targets[k] if lower_is_better else med(v) >= targets[k]
        print(f"| {names[k]} | {med(v):.2f} | {', '.join(f'{x:.2f}' for x in v)} | "
              f"{'<=' if lower_is_better else '>='} {targets[k]} | {'yes' if met else 'no'} |")
    print(f"\nload average before: {log['uptime_before']}; after: {log['uptime_after']}")
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
        keys = list(ratios)
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.barh([names[k] for k in keys], [med(ratios[k]) for k in keys], color="#4a7ab5")
        for i, k in enumerate(keys):
            ax.plot([targets[k]] * 2, [i - 0.4, i + 0.4], color="#c0392b")
        ax.axvline(1.0, color="gray", lw=0.5)
        ax.set_xlabel("median ratio over rounds (red: target)")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
