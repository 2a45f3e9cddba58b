#!/usr/bin/env python3
"""Time to first token with and without a reusable prefix, against a running `gemma-node serve`
(not a test).

    mpirun -n 2 --bind-to none gemma-node serve -m MODEL --port 8080 [--prefix-cache on|off] &
    Scripts/bench_prefix_cache.py --base-url http://127.0.0.1:8080 [--api-key KEY] [--trials 3]

Each trial builds a system prompt of about --system-tokens tokens that no earlier request
shared (a unique first sentence), then sends two streaming greedy chats one after the other:
the system prompt with question A, then the same system prompt with question B. Reported per
trial: prompt tokens, `usage.prompt_tokens_details.cached_tokens`, and the time from sending
the request to the first chunk carrying text (what a user waits for) of both; then the median
ratio first / second. Against a server started with `--prefix-cache off` the ratio shows the
same measurement without reuse. One warm-up request runs first.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("test")

import argparse
import statistics
import time

import openai

SENTENCES = [
    "You are the help desk assistant of a regional public library with four branches.",
    "The central branch opens at nine in the morning and closes at seven in the evening on weekdays.",
    "On Saturdays every branch opens at ten and closes at four; on Sundays only the central branch opens.",
    "Members may borrow up to twelve items at once: books, magazines, films and music.",
    "Books are lent for three weeks, films and magazines for one week; each loan can be renewed twice.",
    "Late returns cost ten cents a day per item, never more than the price of the item.",
    "Lost items are replaced at their listed price plus a processing fee of five dollars.",
    "The reading room on the second floor is silent; group study rooms can be booked for two hours.",
    "Printing costs ten cents a page in black and white and fifty cents a page in colour.",
    "Children under twelve need a parent or guardian to sign their membership form.",
    "Interlibrary loans take one to two weeks and are free for members.",
    "Answer politely and briefly, and say so when you do not know an answer.",
]


def system_prompt(trial, target_tokens):
    # About 18 tokens per sentence; the first sentence makes each trial's prompt new to the server.
    parts = [f"Help desk session {time.time_ns()} (trial {trial})."]
    i = 0
    while len(" ".join(parts)) < target_tokens * 4.4:
        parts.append(SENTENCES[i % len(SENTENCES)])
        i += 1
    return " ".join(parts)


def timed_chat(client, model, system, question, max_tokens):
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    t0 = time.perf_counter()
    first = None
    usage = None
    text = ""
    for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                                                stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - t0
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = chunk.usage
    details = getattr(usage, "prompt_tokens_details", None) if usage else None
    cached = details.cached_tokens if details is not None else None
    return first, usage.prompt_tokens if usage else None, cached, text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--system-tokens", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=8)
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url.rstrip("/") + "/v1", api_key=args.api_key, max_retries=0, timeout=1800)
    model = client.models.list().data[0].id

    timed_chat(client, model, "You are brief.", "Say hi.", 2)  # warm-up
    ratios = []
    print("trial  prompt  cached  TTFT first (s)  |  prompt  cached  TTFT second (s)  ratio")
    for trial in range(args.trials):
        system = system_prompt(trial, args.system_tokens)
        t1, p1, c1, _ = timed_chat(client, model, system, "When does the central branch open on Saturdays?", args.max_tokens)
        t2, p2, c2, _ = timed_chat(client, model, system, "How long can I keep a film?", args.max_tokens)
        ratio = t1 / t2 if t1 and t2 else float("nan")
        ratios.append(ratio)
        print(f"{trial:5d}  {p1:6d}  {c1!s:>6}  {t1:14.3f}  |  {p2:6d}  {c2!s:>6}  {t2:15.3f}  {ratio:5.1f}")
    print(f"median ratio first / second TTFT: {statistics.median(ratios):.1f} over {len(ratios)} trials")


if __name__ == "__main__":
    main()
