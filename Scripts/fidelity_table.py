#!/usr/bin/env python3
"""The tables and the plot of docs/FIDELITY.md: `gemma-node perplexity --kl-base TRUTH` under
each configuration (ranks, --activations, --kv-type, --sync-type, GEMMA_NODE_EXACT_OPS,
GEMMA_NODE_SIM_ACT), one
markdown row each, and a plot of per-position KL of gemma-node and llama.cpp.

    python3 Scripts/gen_truth_logits.py --ctx 1024 --out /tmp/truth.gnlogits --llamacpp --per-token /tmp/llamacpp.tsv
    python3 Scripts/fidelity_table.py --truth /tmp/truth.gnlogits --binary .build/release/gemma-node \
        --llamacpp-per-token /tmp/llamacpp.tsv --plot docs/fidelity_kl.png [--only NAME ...]

Needs: the plots group (matplotlib), a built gemma-node, mpirun.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("plots")

import argparse, json, os, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# name: (ranks, extra flags, environment)
CONFIGS = {
    "1 rank": (1, [], {}),
    "2 ranks": (2, [], {}),
    "4 ranks": (4, [], {}),
    "--activations f32, 1 rank": (1, ["--activations", "f32"], {}),
    "--activations f32, 2 ranks": (2, ["--activations", "f32"], {}),
    "--activations f32, 4 ranks": (4, ["--activations", "f32"], {}),
    "--activations f32 --kv-type f16": (1, ["--activations", "f32", "--kv-type", "f16"], {}),
    "--kv-type f32": (1, ["--kv-type", "f32"], {}),
    "--kv-type q8_0": (1, ["--kv-type", "q8_0"], {}),
    "2 ranks --sync-type bf16": (2, ["--sync-type", "bf16"], {}),
    "2 ranks --sync-type q8_0": (2, ["--sync-type", "q8_0"], {}),
    "exact Q5_0 products": (1, [], {"GEMMA_NODE_EXACT_OPS": "q5_0"}),
    "exact Q4_K products": (1, [], {"GEMMA_NODE_EXACT_OPS": "q4_k"}),
    "exact Q6_K products": (1, [], {"GEMMA_NODE_EXACT_OPS": "q6_k"}),
    "exact Q8_0 products (LM head, half the V)": (1, [], {"GEMMA_NODE_EXACT_OPS": "q8_0"}),
    "exact LM head only": (1, [], {"GEMMA_NODE_EXACT_OPS": "lm_head"}),
    "exact attention + GELU": (1, [], {"GEMMA_NODE_EXACT_OPS": "attention,gelu"}),
    "exact products, f16 KV": (1, [], {"GEMMA_NODE_EXACT_OPS": "q5_0,q4_k,q6_k,q8_0"}),
    # Simulated activation blocks (FidelityProbe's GEMMA_NODE_SIM_ACT): the per-32 candidate.
    "K-quant inputs per 256, simulated": (1, [], {"GEMMA_NODE_SIM_ACT": "q4_k:256,q6_k:256"}),
    "K-quant inputs per 32, 1 rank": (1, [], {"GEMMA_NODE_SIM_ACT": "q4_k:32,q6_k:32"}),
    "K-quant inputs per 32, 2 ranks": (2, [], {"GEMMA_NODE_SIM_ACT": "q4_k:32,q6_k:32"}),
    "K-quant inputs per 32, 4 ranks": (4, [], {"GEMMA_NODE_SIM_ACT": "q4_k:32,q6_k:32"}),
    "K-quant inputs per 16": (1, [], {"GEMMA_NODE_SIM_ACT": "q4_k:16,q6_k:16"}),
    "every input per 16": (1, [], {"GEMMA_NODE_SIM_ACT": "all:16"}),
}


def run(binary, truth, ranks, flags, env, per_token=None):
    cmd = [binary, "perplexity", "--kl-base", truth, "--json", "-t", "1"] + flags
    if per_token:
        cmd += ["--per-token", per_token]
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", str(ranks)] + \
              sum((["-x", k] for k in env), []) + cmd
    e = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", **env)
    out = subprocess.run(cmd, env=e, check=True, capture_output=True, text=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))


def read_kl(path):
    return [float(line.split("\t")[4]) for line in open(path) if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--truth", required=True)
    ap.add_argument("--binary", default=os.path.join(HERE, "..", ".build", "release", "gemma-node"))
    ap.add_argument("--only", nargs="*", help="configuration names to run (default: all)")
    ap.add_argument("--llamacpp-per-token", help="llama.cpp's per-position KL (gen_truth_logits.py --per-token)")
    ap.add_argument("--plot", help="PNG of per-position KL: gemma-node 1 rank and llama.cpp")
    args = ap.parse_args()
    print("| configuration | mean KL | max KL | top-1 | top-10 mean abs logit diff | perplexity |")
    print("|---|---|---|---|---|---|")
    tmp = tempfile.mkdtemp()
    for name, (ranks, flags, env) in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        per = os.path.join(tmp, "one_rank.tsv") if name == "1 rank" else None
        r = run(args.binary, args.truth, ranks, flags, env, per)
        print(f"| {name} | {r['kl_mean']:.3g} | {r['kl_max']:.3g} | {100 * r['top1_agreement']:.1f}% | "
              f"{r['top10_abs_logit_diff']:.3g} | {r['perplexity']:.4f} |", flush=True)
    if args.plot and args.llamacpp_per_token and os.path.exists(os.path.join(tmp, "one_rank.tsv")):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        ours, theirs = read_kl(os.path.join(tmp, "one_rank.tsv")), read_kl(args.llamacpp_per_token)
        fig, ax = plt.subplots(figsize=(10, 4))
        ax.semilogy(range(len(theirs)), theirs, lw=0.7, alpha=0.8, label="llama.cpp (1 thread)")
        ax.semilogy(range(len(ours)), ours, lw=0.7, alpha=0.8, label="gemma-node (1 rank)")
        ax.set_xlabel("position")
        ax.set_ylabel("KL(truth || engine), nats")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
