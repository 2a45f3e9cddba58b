#!/usr/bin/env python3
"""Speed of the all-reduce payload types (`--sync-type f32|bf16|q8_0`) at 2 ranks: `gemma-node
bench` on shared memory and over emulated links, in rounds that rotate the order of the
payload types, so each type sees the same share of the box's background load. Prints per link
and type the median over rounds of decode (tg) and prefill (pp) tok/s, the decode and prefill
all-reduce time per step (rank 0) and the bytes each rank sends per step, with the ratio to
f32 run in the same rounds.

    python3 Scripts/bench_sync.py [--gemma-node BIN] [-m MODEL] [--links shm,200,1;50,2.5]
                                  [--rounds 3] [--reps 2] [-p 128] [-n 32] [--json-out F]
    python3 Scripts/bench_sync.py --mpi-variants [--rounds 2]

`--mpi-variants` instead compares Open MPI's collective choices for the f32 all-reduce on
shared memory (MPI_VARIANTS below: tuned all-reduce algorithms forced through dynamic rules,
coll/han and coll/sm raised above tuned), with the same rotation.

`--emulate-link` is an emulation (docs/SCALING.md): every collective also waits the modelled
time of the link, computed from the bytes actually sent.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("test")

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TYPES = ["f32", "bf16", "q8_0"]
# Open MPI 4.1 coll/tuned all-reduce algorithms: 1 basic linear, 2 nonoverlapping (reduce +
# bcast), 3 recursive doubling, 4 ring, 5 segmented ring, 6 Rabenseifner.
TUNED = {"OMPI_MCA_coll_tuned_use_dynamic_rules": "1"}
MPI_VARIANTS = {
    "default": {},
    "tuned-1-linear": dict(TUNED, OMPI_MCA_coll_tuned_allreduce_algorithm="1"),
    "tuned-2-reduce+bcast": dict(TUNED, OMPI_MCA_coll_tuned_allreduce_algorithm="2"),
    "tuned-3-doubling": dict(TUNED, OMPI_MCA_coll_tuned_allreduce_algorithm="3"),
    "tuned-4-ring": dict(TUNED, OMPI_MCA_coll_tuned_allreduce_algorithm="4"),
    "tuned-6-rabenseifner": dict(TUNED, OMPI_MCA_coll_tuned_allreduce_algorithm="6"),
    "han": {"OMPI_MCA_coll_han_priority": "100"},
    "coll-sm": {"OMPI_MCA_coll_sm_priority": "100"},
    # gemma-node turns yield-when-idle on when ranks >= cores (MPICommunicator); this keeps
    # Open MPI polling, to tell an algorithm's effect from a polling-versus-yielding one.
    "default-polling": {"OMPI_MCA_mpi_yield_when_idle": "0"},
    "tuned-6-polling": dict(TUNED, OMPI_MCA_coll_tuned_allreduce_algorithm="6", OMPI_MCA_mpi_yield_when_idle="0"),
}


def bench(binary, model, ranks, link, sync, args, extra_env=None):
    cmd = ["mpirun", "-n", str(ranks), binary, "bench", "-m", model, "-t", "1", "-p", str(args.prompt),
           "-n", str(args.gen), "-r", str(args.reps), "--json", "--sync-type", sync]
    if link != "shm":
        cmd += ["--emulate-link", link]
    env = dict(os.environ, **(extra_env or {}))
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return json.loads(out[out.index("{"):])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemma-node", default=os.path.join(ROOT, ".build", "release", "gemma-node"))
    ap.add_argument("-m", "--model", default=_venv.default_model())
    ap.add_argument("--links", default="shm;200,1;50,2.5", help="semicolon-separated: shm or LATENCY_US,GBIT")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("-p", "--prompt", type=int, default=128)
    ap.add_argument("-n", "--gen", type=int, default=32)
    ap.add_argument("--json-out")
    ap.add_argument("--mpi-variants", action="store_true")
    ap.add_argument("--variants", help="with --mpi-variants: a comma-separated subset of MPI_VARIANTS")
    args = ap.parse_args()
    if args.mpi_variants:
        return mpi_variants(args)
    links = args.links.split(";")
    types = args.types.split(",")

    runs = {}
    for rnd in range(args.rounds):
        order = types[rnd % len(types):] + types[:rnd % len(types)]
        for link in links:
            for sync in order:
                r = bench(args.gemma_node, args.model, args.ranks, link, sync, args)
                r0 = r["per_rank"][0]
                row = {
                    "tg": r["decode_tokens_per_second"]["median"], "pp": r["prefill_tokens_per_second"]["median"],
                    "tg_ar_ms": r0["decode_step_ms"]["all_reduce"], "tg_bytes": r0["decode_all_reduce_bytes_per_step"],
                    "pp_ar_ms": r0["prefill_all_reduce_ms"], "pp_bytes": r0["prefill_all_reduce_bytes_per_step"],
                    "load_average": r.get("load_average"), "cpu": r.get("cpu"),
                }
                runs.setdefault((link, sync), []).append(row)
                print(f"round {rnd + 1} {link:>8} {sync:>5}: tg {row['tg']:.1f} pp {row['pp']:.1f} tok/s", file=sys.stderr)

    cpu = next(iter(runs.values()))[0]["cpu"]
    print(f"{args.ranks} ranks x 1 thread, pp{args.prompt} tg{args.gen}, {args.rounds} rounds x {args.reps} reps, medians; CPU {cpu}")
    print(f"{'link':>8} {'sync':>5} | {'tg tok/s':>8} {'x f32':>6} | {'pp tok/s':>8} {'x f32':>6} | "
          f"{'tg AR ms/step':>13} {'tg B/step':>9} | {'pp AR ms':>8} {'pp B/step':>10}")
    summary = []
    for link in links:
        base = {k: statistics.median(x[k] for x in runs[(link, "f32")]) for k in ("tg", "pp")} if (link, "f32") in runs else None
        for sync in types:
            m = {k: statistics.median(x[k] for x in runs[(link, sync)]) for k in ("tg", "pp", "tg_ar_ms", "tg_bytes", "pp_ar_ms", "pp_bytes")}
            rt = m["tg"] / base["tg"] if base else float("nan")
            rp = m["pp"] / base["pp"] if base else float("nan")
            print(f"{link:>8} {sync:>5} | {m['tg']:>8.1f} {rt:>6.2f} | {m['pp']:>8.1f} {rp:>6.2f} | "
                  f"{m['tg_ar_ms']:>13.2f} {m['tg_bytes']:>9.0f} | {m['pp_ar_ms']:>8.1f} {m['pp_bytes']:>10.0f}")
            summary.append(dict(link=link, sync=sync, tg_ratio=rt, pp_ratio=rp, **m))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"cpu": cpu, "summary": summary, "runs": {f"{k[0]} {k[1]}": v for k, v in runs.items()}}, f, indent=2)


def mpi_variants(args):
    names = args.variants.split(",") if args.variants else list(MPI_VARIANTS)
    runs = {}
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for name in order:
            r = bench(args.gemma_node, args.model, args.ranks, "shm", "f32", args, MPI_VARIANTS[name])
            r0 = r["per_rank"][0]
            runs.setdefault(name, []).append((r["decode_tokens_per_second"]["median"], r["prefill_tokens_per_second"]["median"],
                                              r0["decode_step_ms"]["all_reduce"], r0["prefill_all_reduce_ms"], r.get("cpu")))
            print(f"round {rnd + 1} {name}: tg {runs[name][-1][0]:.1f} tok/s, decode all-reduce {runs[name][-1][2]:.3f} ms/step",
                  file=sys.stderr)
    print(f"{args.ranks} ranks x 1 thread on shared memory, f32 payload, pp{args.prompt} tg{args.gen}, "
          f"{args.rounds} rounds, medians; CPU {runs['default'][0][4]}")
    print(f"{'variant':>22} | {'tg tok/s':>8} | {'pp tok/s':>8} | {'tg AR ms/step':>13} | {'pp AR ms/step':>13}")
    for name in names:
        med = [statistics.median(x[i] for x in runs[name]) for i in range(4)]
        print(f"{name:>22} | {med[0]:>8.1f} | {med[1]:>8.1f} | {med[2]:>13.3f} | {med[3]:>13.2f}")


if __name__ == "__main__":
    sys.exit(main())
