#!/usr/bin/env python3
"""Checks by hand, on a real model, that prefix caching changes no result (not a test: it needs
two server runs). Run it against a server started with `--prefix-cache on`, then against one
with `--prefix-cache off`, then compare:

    Scripts/prefix_cache_equal.py --base-url http://127.0.0.1:PORT_ON --out on.json
    Scripts/prefix_cache_equal.py --base-url http://127.0.0.1:PORT_OFF --out off.json
    Scripts/prefix_cache_equal.py --compare on.json off.json

Three greedy chats share a ~1,300-token system prompt (longer than Gemma 3's 512-token sliding
window), 40 tokens each with the 3 most likely alternatives per token; the comparison requires
the same text and bit-identical log-probabilities, and prints the reused counts.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("test")

import argparse
import json
import sys

from bench_prefix_cache import SENTENCES

QUESTIONS = ["When does the central branch open on Saturdays?", "How long can I keep a film?",
             "How long can I keep a film? Answer in detail."]


def run(base, out):
    import openai
    client = openai.OpenAI(base_url=base.rstrip("/") + "/v1", api_key="none", max_retries=0, timeout=1800)
    model = client.models.list().data[0].id
    system = "Help desk session fixed. " + " ".join(SENTENCES * 6)
    results = []
    for q in QUESTIONS:
        r = client.chat.completions.create(model=model, messages=[{"role": "system", "content": system}, {"role": "user", "content": q}],
                                           max_tokens=40, temperature=0, logprobs=True, top_logprobs=3)
        details = r.usage.prompt_tokens_details
        results.append({"text": r.choices[0].message.content, "prompt_tokens": r.usage.prompt_tokens,
                        "cached_tokens": details.cached_tokens if details else None,
                        "logprobs": [[t.token, t.logprob, [[a.token, a.logprob] for a in t.top_logprobs]]
                                     for t in r.choices[0].logprobs.content]})
    with open(out, "w") as f:
        json.dump(results, f)
    for r in results:
        print(f"prompt {r['prompt_tokens']}, cached {r['cached_tokens']}: {r['text'][:60]!r}")


def compare(a, b):
    with open(a) as f:
        x = json.load(f)
    with open(b) as f:
        y = json.load(f)
    same = True
    for i, (p, q) in enumerate(zip(x, y)):
        equal = p["text"] == q["text"] and p["logprobs"] == q["logprobs"]
        same = same and equal
        print(f"request {i + 1}: cached {p['cached_tokens']} vs {q['cached_tokens']}, "
              f"{len(p['logprobs'])} tokens, {'identical' if equal else 'DIFFERENT'}")
    return 0 if same and len(x) == len(y) else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url")
    ap.add_argument("--out")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)
    if not args.base_url or not args.out:
        ap.error("--base-url and --out, or --compare A B")
    run(args.base_url, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
