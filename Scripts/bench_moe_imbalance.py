#!/usr/bin/env python3
"""Per-rank expert memory and routing imbalance of Gemma 4 26B-A4B (E 128, top-8, H 2816,
Ie 704, 30 layers) under the two MoE sharding strategies of docs/MOE.md.

Routing is simulated (no real router activations are available offline): each token picks 8
distinct experts, either uniformly (what a load-balancing training loss aims for) or with
Zipf-like popularity (a pessimistic skew: expert popularity ~ 1/rank^s, s = 0.5). The numbers
that matter for decode are bytes of expert weights each rank must stream per token; the slowest
rank sets the step time. Usage: python3 Scripts/bench_moe_imbalance.py [--trials N]
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("bench")

import argparse

import numpy as np

E, K, H, IE, LAYERS = 128, 8, 2816, 704, 30
BYTES_PER_PARAM = {"bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def sample(rng, tokens, popularity):
    """[tokens, K] distinct expert ids per token."""
    if popularity is None:
        return np.argsort(rng.random((tokens, E)), axis=1)[:, :K]
    # Gumbel top-k = sampling K without replacement proportionally to popularity.
    g = np.log(popularity)[None, :] - np.log(-np.log(rng.random((tokens, E))))
    return np.argsort(-g, axis=1)[:, :K]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    expert_params = 3 * H * IE
    print(f"expert params: {expert_params:,} each, {E * expert_params * LAYERS / 1e9:.2f} G over {LAYERS} layers")
    for q, b in BYTES_PER_PARAM.items():
        total = E * expert_params * LAYERS * b
        print(f"  {q}: experts {total / 2**30:.2f} GiB in total;", ", ".join(f"R {r}: {total / r / 2**30:.2f} GiB/rank" for r in (2, 4, 8)))
    ranks_of = {r: np.repeat(np.arange(r), E // r) for r in (2, 4, 8)}  # contiguous expert ranges
    zipf = 1 / np.arange(1, E + 1) ** 0.5
    rng.shuffle(zipf)
    for name, pop in (("uniform", None), ("zipf s=0.5", zipf / zipf.sum())):
        print(f"\nrouting {name}")
        print("| R | decode: experts on the busiest rank (EP) | column split | EP/column decode bytes | prefill T64: pairs max/mean (EP) | experts hit per rank (EP, of E/R) |")
        for r in (2, 4, 8):
            sel = sample(rng, args.trials, pop)
            owner = ranks_of[r][sel]  # [trials, K]
            counts = np.stack([(owner == i).sum(1) for i in range(r)], 1)
            busiest = counts.max(1).mean()
            col = K / r  # every rank runs all K experts at 1/R width
            pre = []
            hit = []
            for _ in range(200):
                s = sample(rng, 64, pop)
                o = ranks_of[r][s]
                c = np.array([(o == i).sum() for i in range(r)])
                pre.append(c.max() / c.mean())
                hit.append(np.mean([len(np.unique(s[o == i])) for i in range(r)]))
            print(f"| {r} | {busiest:.2f} | {col:.2f} | {busiest / col:.2f}x | {np.mean(pre):.2f} | {np.mean(hit):.1f} of {E // r} |")


if __name__ == "__main__":
    main()
