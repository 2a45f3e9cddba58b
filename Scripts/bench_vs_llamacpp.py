#!/usr/bin/env python3
"""Side-by-side benchmark: gemma-node vs llama.cpp's own `llama-bench` on the same GGUF, same
threads, alternating runs. Prints the median over rounds of per-round ratios (ours / llama.cpp)
for tg64 and pp128 at 1 and 2 threads and our 1-thread decode's fraction of the read bandwidth
`gemma-node bench` measures, with the CPU model and both sides' kernel level.

    python3 Scripts/bench_vs_llamacpp.py [--model M] [--gemma-node BIN] [--rounds 3] [--reps 5]
                                         [--llama-avx2-only] [--kernels avx2|avx512]
                                         [--json-out results.json] [--plot docs/benchmarks.png]

llama-bench is built from llama.cpp's source on first use and cached under
~/.cache/gemma-node/llama.cpp-<version>/: the source is the vendor/llama.cpp tree of the
llama-cpp-python sdist (fetched from PyPI with pip), only the llama-bench target is built, with
llama.cpp's native flags (GGML_NATIVE) or, with --llama-avx2-only, for AVX2 only (AVX-512 and
AMX off; our side then runs GEMMA_NODE_KERNELS=avx2), so the AVX2 figures can be checked on an
AVX-512 machine. llama-bench runs with its defaults (weight repacking on, `--llama-repack 0`
turns it off), its own warm-up, `-r REPS`; its tg test does no sampling, ours takes the argmax
each step. `--extras` adds the older gemma-node-only measures (4-rank / 1-rank peak RSS, 2 ranks
x 1 thread vs 1 rank x 2 threads) and issue 14's measures: our 2 ranks x 1 thread against our 1
rank x 1 thread (when 1 thread is compared) and against llama.cpp's 2 threads (when 2 are), from
runs taken back to back in alternating order within the round.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("bench")

import argparse
import json
import os
import shlex
import shutil
import resource
import statistics
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)




LLAMA_VERSION = "0.3.36"  # llama-cpp-python sdist that carries the llama.cpp source (vendor/llama.cpp)
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "gemma-node", f"llama.cpp-{LLAMA_VERSION}")
# The AVX2-only llama.cpp: what an AVX2 machine's native build enables (AVX2, FMA, F16C, BMI2),
# every AVX-512 and AMX option off, so it can be compared with GEMMA_NODE_KERNELS=avx2 anywhere.
AVX2_FLAGS = ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
              "-DGGML_BMI2=ON", "-DGGML_SSE42=ON", "-DGGML_AVX512=OFF", "-DGGML_AVX512_VBMI=OFF",
              "-DGGML_AVX512_VNNI=OFF", "-DGGML_AVX512_BF16=OFF", "-DGGML_AVX_VNNI=OFF", "-DGGML_AMX_TILE=OFF",
              "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]


def ensure_build_tools():
    """cmake, make and a C++ compiler, installed through Scripts/lib.sh's ensure_apt if missing."""
    if all(shutil.which(t) for t in ("cmake", "make", "c++")):
        return
    subprocess.run(["bash", "-c", f"source {shlex.quote(os.path.join(HERE, 'lib.sh'))} && ensure_apt cmake make g++"],
                   check=True)


def llama_bench_binary(avx2_only=False, jobs=2):
    """Path of llama-bench built from llama.cpp's source, building it on first use: the
    llama-cpp-python sdist (PyPI, through pip) is downloaded once into CACHE, its
    vendor/llama.cpp extracted, and only the llama-bench target built with cmake, with llama.cpp's
    native flags (GGML_NATIVE, the default) or for AVX2 only (AVX2_FLAGS)."""
    variant = "avx2" if avx2_only else "native"
    build = os.path.join(CACHE, f"build-{variant}")
    binary = os.path.join(build, "bin", "llama-bench")
    if os.path.exists(binary):
        return binary
    os.makedirs(CACHE, exist_ok=True)
    sdist = os.path.join(CACHE, f"llama_cpp_python-{LLAMA_VERSION}.tar.gz")
    if not os.path.exists(sdist):
        # --no-binary for this package only: its build requirements come as wheels, and pip
        # only prepares metadata (no compilation) before saving the sdist.
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
                        f"llama-cpp-python=={LLAMA_VERSION}", "-d", CACHE], check=True)
    src = os.path.join(CACHE, "llama.cpp")
    if not os.path.exists(os.path.join(src, "CMakeLists.txt")):
        prefix = f"llama_cpp_python-{LLAMA_VERSION}/vendor/llama.cpp/"
        tmp = src + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(sdist) as tar:
            # vendor/llama.cpp/.git points into the sdist's absent parent repository: left out.
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.name != prefix + ".git"]
            for m in members:
                m.name = m.name[len(prefix):]
            try:
                tar.extractall(tmp, members=members, filter="tar")
            except TypeError:  # Python before 3.11.4 / 3.12: no extraction filters
                tar.extractall(tmp, members=members)
        os.rename(tmp, src)
    ensure_build_tools()
    flags = AVX2_FLAGS if avx2_only else ["-DGGML_NATIVE=ON"]
    subprocess.run(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
                    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                    "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_CCACHE=OFF", *flags],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build, "--target", "llama-bench", "-j", str(jobs)], check=True,
                   stdout=subprocess.DEVNULL)
    return binary


def llama_cpu_flags(binary):
    """The instruction-set flags llama.cpp's CPU backend was compiled with (e.g. "-march=native"
    or "-mavx2 -mfma ..."), read from the cmake build next to the binary; "?" if not found."""
    flags = os.path.join(os.path.dirname(os.path.dirname(binary)), "ggml", "src", "CMakeFiles", "ggml-cpu.dir",
                         "flags.make")
    try:
        words = [w for line in open(flags) if line.startswith("C_FLAGS") for w in line.split()]
    except OSError:
        return "?"
    return " ".join(w for w in words if w.startswith("-m")) or "?"


def run_llama(args, threads):
    """One llama-bench run (pp and tg tests, `--reps` repetitions, its own warm-up), JSON output."""
    cmd = [args.llama_bench, "-m", args.model, "-t", str(threads), "-p", str(args.n_prompt), "-n", str(args.n_gen),
           "-r", str(args.reps), "--repack", str(args.llama_repack), "-o", "json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    tests = json.loads(out)
    pp = [t for t in tests if t["n_prompt"] > 0 and t["n_gen"] == 0][0]
    tg = [t for t in tests if t["n_gen"] > 0 and t["n_prompt"] == 0][0]
    return {"prefill": statistics.median(pp["samples_ts"]), "decode": statistics.median(tg["samples_ts"]),
            "cpu_info": tg.get("cpu_info"), "build_commit": tg.get("build_commit"), "repack": tg.get("repack"),
            "load": os.getloadavg()[0]}


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
            "bandwidth_gb_per_s": r["bandwidth_gb_per_s"], "per_rank": r["per_rank"], "kernels": r["kernels"],
            "threads_per_rank": r["threads_per_rank"], "load": os.getloadavg()[0]}


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=_venv.default_model())
    ap.add_argument("--gemma-node", default=os.path.join(ROOT, ".build-perf", "release", "gemma-node"))
    ap.add_argument("--kernels", help="GEMMA_NODE_KERNELS for our side (avx2, avx512, ...); default: the best level")
    ap.add_argument("--llama-avx2-only", action="store_true",
                    help="compare with a llama.cpp built for AVX2 only (AVX-512 and AMX off); implies --kernels avx2")
    ap.add_argument("--llama-bench", help="use this llama-bench instead of building one")
    ap.add_argument("--llama-repack", type=int, default=1, choices=(0, 1),
                    help="llama-bench --repack (its default 1: weights repacked for its GEMM kernels)")
    ap.add_argument("--llama-jobs", type=int, default=2, help="parallel compile jobs for the llama-bench build")
    ap.add_argument("--build-llama-only", action="store_true", help="build (or find) llama-bench, print its path, exit")
    ap.add_argument("--threads", default="1,2", help="thread counts compared, comma-separated")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison")
    ap.add_argument("--reps", type=int, default=5, help="repetitions inside each run (median taken)")
    ap.add_argument("--n-prompt", type=int, default=128)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--extras", action="store_true",
                    help="also gemma-node's 4-rank / 1-rank peak RSS and 2 ranks x 1 thread vs 1 rank x 2 threads")
    ap.add_argument("--json-out")
    ap.add_argument("--plot", help="write a PNG of the ratios (needs matplotlib)")
    args = ap.parse_args()
    if args.llama_avx2_only and not args.kernels:
        args.kernels = "avx2"
    if not args.llama_bench:
        args.llama_bench = llama_bench_binary(args.llama_avx2_only, args.llama_jobs)
    if args.build_llama_only:
        print(args.llama_bench)
        return
    if args.kernels:
        os.environ["GEMMA_NODE_KERNELS"] = args.kernels
    thread_counts = [int(t) for t in args.threads.split(",")]

    med = statistics.median
    log = {"cpu": cpu_model(), "llama_bench": args.llama_bench, "llama_avx2_only": args.llama_avx2_only,
           "llama_repack": args.llama_repack, "rounds": [], "uptime_before": open("/proc/loadavg").read().strip()}
    ratios = {}
    for t in thread_counts:
        ratios[f"tg_{t}t"] = []
        ratios[f"pp_{t}t"] = []
    if 1 in thread_counts:
        ratios["roofline_1t"] = []
    if args.extras:
        ratios["rss_4r"] = []
        ratios["tp_2r1t_vs_1r2t"] = []
        if 1 in thread_counts:
            ratios["tp_2r1t_vs_1r1t"] = []
        if 2 in thread_counts:
            ratios["tp_2r1t_vs_llama_2t"] = []
    levels = set()
    for rnd in range(args.rounds):
        entry = {}
        for threads in thread_counts:
            # Alternate which side goes first so slow drifts of the shared machine cancel out.
            if rnd % 2 == 0:
                ours = run_ours(args, threads); llama = run_llama(args, threads)
            else:
                llama = run_llama(args, threads); ours = run_ours(args, threads)
            levels.add(("ours", ours["kernels"]))
            levels.add(("llama.cpp", llama_cpu_flags(args.llama_bench)))
            entry[f"ours_{threads}t"] = ours
            entry[f"llama_{threads}t"] = llama
            ratios[f"tg_{threads}t"].append(ours["decode"] / llama["decode"])
            ratios[f"pp_{threads}t"].append(ours["prefill"] / llama["prefill"])
            if threads == 1:
                ratios["roofline_1t"].append(ours["roofline_fraction"])
            print(f"round {rnd} t={threads}: tg ours {ours['decode']:.1f} llama {llama['decode']:.1f} | "
                  f"pp ours {ours['prefill']:.1f} llama {llama['prefill']:.1f} | "
                  f"roofline {ours['roofline_fraction']:.2f} of {ours['bandwidth_gb_per_s']:.1f} GB/s | "
                  f"load {ours['load']:.2f}/{llama['load']:.2f}", flush=True)
        if args.extras:
            one = run_ours(args, 1, n_gen=16, reps=1, bandwidth=False)
            four = run_ours(args, 1, ranks=4, n_gen=16, reps=1, bandwidth=False)
            entry["rss_1r"], entry["rss_4r"] = one, four
            ratios["rss_4r"].append(four["peak_rss_mib"] / one["peak_rss_mib"])
            # Issue 14's ratios compare runs taken back to back, in alternating order: two ranks
            # x 1 thread, one rank x 1 thread, llama.cpp at 2 threads (the machine's speed drifts
            # by tens of percent within minutes, so a ratio of runs minutes apart measures that).
            sides = {"tp": lambda: run_ours(args, 1, ranks=2), "solo": lambda: run_ours(args, 2)}
            if "tp_2r1t_vs_1r1t" in ratios:
                sides["one"] = lambda: run_ours(args, 1)
            if "tp_2r1t_vs_llama_2t" in ratios:
                sides["llama2"] = lambda: run_llama(args, 2)
            order = list(sides) if rnd % 2 == 0 else list(sides)[::-1]
            got = {k: sides[k]() for k in order}
            tp, solo = got["tp"], got["solo"]
            entry["tp_2r1t"], entry["solo_1r2t"] = tp, solo
            ratios["tp_2r1t_vs_1r2t"].append(tp["decode"] / solo["decode"])
            line = f"tg 2r x 1t {tp['decode']:.1f} vs 1r x 2t {solo['decode']:.1f}"
            if "one" in got:  # issue 14's scaling measure: two ranks against one, 1 thread each
                entry["adjacent_1r1t"] = got["one"]
                ratios["tp_2r1t_vs_1r1t"].append(tp["decode"] / got["one"]["decode"])
                line += f", 1r x 1t {got['one']['decode']:.1f}"
            if "llama2" in got:  # issue 14's measure: our two ranks against llama.cpp's two threads
                entry["adjacent_llama_2t"] = got["llama2"]
                ratios["tp_2r1t_vs_llama_2t"].append(tp["decode"] / got["llama2"]["decode"])
                line += f", llama.cpp 2 t {got['llama2']['decode']:.1f}"
            print(f"round {rnd}: RSS 1 rank {one['peak_rss_mib']:.0f} MiB, 4 ranks max {four['peak_rss_mib']:.0f} MiB | "
                  + line, flush=True)
        log["rounds"].append(entry)

    # Targets of issue 19 (decode, prefill, roofline) and the earlier ones of the extras.
    targets = {"roofline_1t": 0.75, "rss_4r": 0.35, "tp_2r1t_vs_1r2t": 0.95, "tp_2r1t_vs_1r1t": 1.8,
               "tp_2r1t_vs_llama_2t": 1.1}
    tg = f"tg{args.n_gen}"
    names = {"roofline_1t": f"{tg} 1 thread, fraction of the measured read bandwidth (ours)",
             "rss_4r": "peak RSS per rank, 4 ranks / 1 rank (ours)",
             "tp_2r1t_vs_1r2t": f"{tg}, 2 ranks x 1 thread / 1 rank x 2 threads (ours)",
             "tp_2r1t_vs_1r1t": f"{tg}, 2 ranks x 1 thread / 1 rank x 1 thread (ours)",
             "tp_2r1t_vs_llama_2t": f"{tg}, ours 2 ranks x 1 thread / llama.cpp 2 threads"}
    for t in thread_counts:
        targets[f"tg_{t}t"], targets[f"pp_{t}t"] = 1.3, 1.2
        names[f"tg_{t}t"] = f"tg{args.n_gen}, {t} thread(s) (ours / llama.cpp)"
        names[f"pp_{t}t"] = f"pp{args.n_prompt}, {t} thread(s) (ours / llama.cpp)"
    log["uptime_after"] = open("/proc/loadavg").read().strip()
    log["ratios"] = {k: {"median": med(v), "all": v} for k, v in ratios.items()}
    print(f"\nCPU: {log['cpu']}")
    for side, level in sorted(levels):
        print(f"{side} kernels: {level}")
    print(f"llama-bench: {args.llama_bench} (repack {args.llama_repack})")
    print(f"\n| measure | median | per round | target | met |\n| --- | --- | --- | --- | --- |")
    for k, v in ratios.items():
        lower_is_better = k == "rss_4r"
        met = med(v) <= targets[k] if lower_is_better else med(v) >= targets[k]
        print(f"| {names[k]} | {med(v):.2f} | {', '.join(f'{x:.2f}' for x in v)} | "
              f"{'<=' if lower_is_better else '>='} {targets[k]} | {'yes' if met else 'no'} |")
    print(f"\nload average before: {log['uptime_before']}; after: {log['uptime_after']}")
    log["levels"] = sorted(levels)
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
        ax.set_xlabel("median over rounds (red: target)")
        ax.set_title(log["cpu"], fontsize=9)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
