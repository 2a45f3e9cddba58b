#!/usr/bin/env python3
"""Accuracy of the compact sum all-reduce payloads (`--sync-type bf16|q8_0`) on a real model
over real text: the next-token distribution at every position of a ~130-token passage, from
`gemma-node logits --all` at 2 ranks, against the f32-payload run at 2 ranks.

Prints, per payload: mean and max KL(P_f32 || P_payload) over positions (nats), the largest
|logit difference|, and how often the top-1 token agrees. The 1-rank run is also compared
with the 2-rank f32 run, as the noise floor of summing in another order.

    python3 Scripts/sync_accuracy.py [--gemma-node BIN] [-m MODEL] [--ranks 2] [--json-out F]
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("test")

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Real text (public domain: the opening of Dickens, "A Tale of Two Cities", 1859).
TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the "
    "season of Light, it was the season of Darkness, it was the spring of hope, it was the winter "
    "of despair, we had everything before us, we had nothing before us, we were all going direct "
    "to Heaven, we were all going direct the other way - in short, the period was so far like the "
    "present period, that some of its noisiest authorities insisted on its being received, for "
    "good or for evil, in the superlative degree of comparison only. There were a king with a "
    "large jaw and a queen with a plain face, on the throne of England; there were a king with a "
    "large jaw and a queen with a fair face, on the throne of France."
)


def run_logits(binary, model, tokens, ranks, sync):
    cmd = [binary, "logits", "-m", model, "-t", "1", "-c", "512", "--all",
           "--tokens", ",".join(map(str, tokens)), "--sync-type", sync]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks)] + cmd
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    start = out.index("{")
    data = json.loads(out[start:])
    return np.array([p["logits"] for p in data["positions"]], dtype=np.float64)


def log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def compare(ref, other):
    lp, lq = log_softmax(ref), log_softmax(other)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    return {
        "kl_mean": float(kl.mean()), "kl_median": float(np.median(kl)), "kl_max": float(kl.max()),
        "kl_max_position": int(kl.argmax()), "kl_mean_without_first": float(kl[1:].mean()),
        "max_abs_logit_diff_without_first": float(np.abs(ref[1:] - other[1:]).max()),
        "max_abs_logit_diff": float(np.abs(ref - other).max()),
        "top1_agreement": float((ref.argmax(axis=-1) == other.argmax(axis=-1)).mean()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemma-node", default=os.path.join(ROOT, ".build", "release", "gemma-node"))
    ap.add_argument("-m", "--model", default=_venv.default_model())
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--json-out")
    args = ap.parse_args()

    tok = subprocess.run([args.gemma_node, "tokenize", "-m", args.model, "-p", TEXT],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    tokens = json.loads(tok)["tokens"]
    print(f"{len(tokens)} tokens, {args.ranks} ranks, model {os.path.basename(args.model)}")

    ref = run_logits(args.gemma_node, args.model, tokens, args.ranks, "f32")
    results = {"positions": len(tokens), "ranks": args.ranks}
    one = run_logits(args.gemma_node, args.model, tokens, 1, "f32")
    results["1 rank vs f32"] = compare(ref, one)
    del one
    for sync in ("bf16", "q8_0"):
        results[sync] = compare(ref, run_logits(args.gemma_node, args.model, tokens, args.ranks, sync))

    print("KL(P_f32 || P) in nats over positions; 'w/o 0': without position 0 (BOS)")
    print(f"{'against 2-rank f32':<16} {'mean KL':>9} {'median':>9} {'w/o 0':>9} {'max KL':>9} {'at':>4} "
          f"{'max|dlogit|':>11} {'w/o 0':>7} {'top-1 same':>10}")
    for name in ("1 rank vs f32", "bf16", "q8_0"):
        r = results[name]
        print(f"{name:<16} {r['kl_mean']:>9.2e} {r['kl_median']:>9.2e} {r['kl_mean_without_first']:>9.2e} "
              f"{r['kl_max']:>9.2e} {r['kl_max_position']:>4} {r['max_abs_logit_diff']:>11.3f} "
              f"{r['max_abs_logit_diff_without_first']:>7.3f} {r['top1_agreement'] * 100:>9.1f}%")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
