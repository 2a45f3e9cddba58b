#!/usr/bin/env python3
"""Accuracy of the KV-cache types (`--kv-type f16|q8_0`) against the f32 cache on a real model.

Tokenizes real text (default: the first tokens of README.md), runs `gemma-node logits --all`
once per cache type on one rank, and compares every position's full next-token distribution
with the f32 cache's: the largest |logit difference| over all positions and vocabulary entries,
the mean KL(P_f32 || P_type) over positions (nats), and how often the argmax agrees. For scale
it also compares the f32 cache at 2 ranks (mpirun) with 1 rank: the same math with only the
all-reduce's summation order changed, which the int8 activation rounding of the quantized
matmuls amplifies over the layers (the noise floor any small perturbation meets).

    python3 Scripts/kv_accuracy.py --binary .build/debug/gemma-node --positions 256

Needs: numpy (the test group of Scripts/requirements), a built gemma-node.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("test")

import argparse, json, os, subprocess, sys
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def logits(binary, model, ids, kv_type, threads, ranks=1):
    launcher = ["mpirun", "-n", str(ranks), "--bind-to", "none"] if ranks > 1 else []
    data = run(launcher + [binary, "logits", "-m", model, "--tokens", ",".join(map(str, ids)), "--all",
                "--kv-type", kv_type, "-t", str(threads), "-c", str(len(ids) + 8)])
    return np.array([p["logits"] for p in data["positions"]], dtype=np.float64)


def log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(HERE, "..", ".build", "debug", "gemma-node"))
    ap.add_argument("--model", default=_venv.default_model())
    ap.add_argument("--text-file", default=os.path.join(HERE, "..", "README.md"))
    ap.add_argument("--positions", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", default="f16,q8_0")
    ap.add_argument("--floor-ranks", type=int, default=2, help="ranks of the f32 noise-floor run (0 = skip)")
    args = ap.parse_args()

    text = open(args.text_file, encoding="utf-8").read()
    ids = run([args.binary, "tokenize", "-m", args.model, "-p", text[:20000]])["tokens"][: args.positions]
    if len(ids) < args.positions:
        sys.exit(f"{args.text_file} gives only {len(ids)} tokens")
    base = logits(args.binary, args.model, ids, "f32", args.threads)
    lp = log_softmax(base)
    p = np.exp(lp)
    print(f"model {os.path.basename(args.model)}, {len(ids)} positions of {os.path.basename(args.text_file)}, "
          f"vocabulary {base.shape[1]}")
    runs = [(t, t, 1) for t in args.types.split(",") if t]
    if args.floor_ranks > 1:
        runs.append((f"f32 at {args.floor_ranks} ranks", "f32", args.floor_ranks))
    for name, t, ranks in runs:
        other = logits(args.binary, args.model, ids, t, max(1, args.threads // ranks), ranks)
        lq = log_softmax(other)
        kl = (p * (lp - lq)).sum(axis=1)
        top = (base.argmax(axis=1) == other.argmax(axis=1)).mean()
        print(f"{name} vs f32: max |logit diff| {np.abs(other - base).max():.4g}, "
              f"mean KL {kl.mean():.3g} nats (max {kl.max():.3g}), argmax agrees at {100 * top:.1f}% of positions")


if __name__ == "__main__":
    main()
