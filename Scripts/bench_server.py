#!/usr/bin/env python3
"""Throughput and latency of a running `gemma-node serve` at several client counts (not a test).

    mpirun -n 2 --bind-to none gemma-node serve -m MODEL --port 8080 --parallel 16 &
    Scripts/bench_server.py --base-url http://127.0.0.1:8080 [--api-key KEY] [--clients 1,4,16] [--max-tokens 64]

Each client sends streaming chat requests one after another (greedy, distinct prompts) for
--requests rounds. Reports per client count: generated tokens per second over the whole run,
time to first token (mean, p50, p95), inter-token latency (mean), request latency (mean), and
from the server's /metrics the mean sequences per engine step (how much batching happened).
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("test")

import argparse
import concurrent.futures
import re
import statistics
import time
import urllib.request

import openai

TOPICS = ["the sea", "mountains", "a city at night", "bread", "rivers", "the moon", "trains", "gardens",
          "winter", "music", "bridges", "forests", "deserts", "coffee", "libraries", "rain"]


def metric_sums(base):
    text = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    def get(name):
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0
    return get("gemma_batch_sequences_sum"), get("gemma_batch_sequences_count")


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def run_level(client, model, clients, requests, max_tokens):
    def one_client(c):
        records = []
        for r in range(requests):
            topic = TOPICS[(c * requests + r) % len(TOPICS)]
            t0 = time.perf_counter()
            first = None
            stamps = []
            tokens = 0
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"Write a short paragraph about {topic}."}],
                max_tokens=max_tokens, temperature=0, stream=True, stream_options={"include_usage": True})
            for chunk in stream:
                now = time.perf_counter()
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
                if chunk.choices and chunk.choices[0].delta.content:
                    if first is None:
                        first = now - t0
                    stamps.append(now)
            gaps = [b - a for a, b in zip(stamps, stamps[1:])]
            records.append({"ttft": first if first is not None else float("nan"), "gaps": gaps,
                            "latency": time.perf_counter() - t0, "tokens": tokens})
        return records

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        records = [r for rs in pool.map(one_client, range(clients)) for r in rs]
    wall = time.perf_counter() - t0
    tokens = sum(r["tokens"] for r in records)
    ttfts = [r["ttft"] for r in records]
    gaps = [g for r in records for g in r["gaps"]]
    return {"clients": clients, "requests": len(records), "tokens": tokens, "wall": wall,
            "tok_s": tokens / wall, "ttft_mean": statistics.mean(ttfts), "ttft_p50": percentile(ttfts, 0.5),
            "ttft_p95": percentile(ttfts, 0.95), "itl_mean": statistics.mean(gaps) if gaps else float("nan"),
            "latency_mean": statistics.mean(r["latency"] for r in records)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", default="http://127.0.0.1:8080")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=2, help="requests per client, one after another")
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    base = args.base_url.rstrip("/")
    client = openai.OpenAI(base_url=base + "/v1", api_key=args.api_key, max_retries=0, timeout=600)
    model = client.models.list().data[0].id
    # Warm-up (first-touch of the weights, allocator).
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
    print(f"model {model}; greedy, {args.max_tokens} tokens per request, {args.requests} requests per client")
    print("clients  requests  tokens  wall_s  tok/s  ttft_mean  ttft_p50  ttft_p95  itl_mean  latency_mean  seq/step")
    for c in [int(x) for x in args.clients.split(",")]:
        s0, n0 = metric_sums(base)
        r = run_level(client, model, c, args.requests, args.max_tokens)
        s1, n1 = metric_sums(base)
        per_step = (s1 - s0) / (n1 - n0) if n1 > n0 else float("nan")
        print(f"{r['clients']:7d}  {r['requests']:8d}  {r['tokens']:6d}  {r['wall']:6.1f}  {r['tok_s']:5.1f}  "
              f"{r['ttft_mean']:9.3f}  {r['ttft_p50']:8.3f}  {r['ttft_p95']:8.3f}  {r['itl_mean']:8.3f}  "
              f"{r['latency_mean']:12.2f}  {per_step:8.2f}", flush=True)


if __name__ == "__main__":
    main()
