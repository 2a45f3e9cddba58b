#!/usr/bin/env python3
"""Soak test: `gemma-node serve` under `mpirun -n RANKS` with a steady mixed load for a while.

    Scripts/soak.py [--minutes 10] [--ranks 2] [--clients 6] [--binary PATH] [--model PATH]

The load, from CLIENTS threads with the official `openai` client, each picking at random:
  chat completion (non-streaming)          30%
  chat completion, streaming               25%
  text completion                          15%
  streaming, abandoned after 2-6 chunks    10%   (the client closes the stream)
  bad request (must be a 4xx)              20%   (bad temperature, context overflow, malformed
                                                  JSON, empty messages, wrong types)
Checks at the end (exit status 1 if any fails): zero errors on valid requests; every bad
request answered 4xx; every KV slot free and the queue empty according to /metrics; the RSS
of each rank at the end not more than --rss-growth (default 1.25x) of its value after warm-up.
Prints a JSON summary (counts, latency percentiles, RSS per rank at start and end, CPU seconds
per rank during the load, KV slots free at the end).
"""

import _venv  # the project's Python environment (Scripts/venv.sh)
_venv.use("test")

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import openai

from _run import mpirun_prefix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOTS = 4  # serve --parallel: KV slots (sequences at once)
PROMPTS = ["Tell me about the sea.", "Write a haiku about rain.", "What is 2 + 2?", "Name three colours.",
           "Describe a cat in one sentence.", "Why is the sky blue?", "Give me a recipe idea.", "Say hello."]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=60):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def rank_pids(mpirun_pid):
    """The gemma-node processes under mpirun (children or grandchildren)."""
    out = subprocess.run(["ps", "-eo", "pid,ppid,comm"], capture_output=True, text=True).stdout.split("\n")[1:]
    rows = [r.split() for r in out if r.strip()]
    children = {}
    for pid, ppid, comm in ((int(r[0]), int(r[1]), r[2]) for r in rows if len(r) >= 3):
        children.setdefault(ppid, []).append((pid, comm))
    found, stack = [], [mpirun_pid]
    while stack:
        for pid, comm in children.get(stack.pop(), []):
            if comm.startswith("gemma-node"):
                found.append(pid)
            stack.append(pid)
    return sorted(found)


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None


def cpu_seconds(pid):
    """User + system CPU time of a process so far (from /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def metric(text, name):
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "gemma-node"))
    ap.add_argument("--model", default=os.environ.get("GEMMA_NODE_MODEL"))
    ap.add_argument("--rss-growth", type=float, default=1.25)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if not args.model:
        sys.exit("soak: --model or GEMMA_NODE_MODEL is needed")

    port = free_port()
    cmd = mpirun_prefix(args.ranks) + [args.binary, "serve", "-m", args.model, "--host", "127.0.0.1",
                                       "--port", str(port), "--parallel", str(SLOTS), "--max-queue", "32", "-c", "1024"]
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"soak-{os.getpid()}.log"), "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if server.poll() is not None:
                sys.exit(f"soak: server exited with {server.returncode}; log {log.name}")
            try:
                if http("GET", base + "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            sys.exit("soak: server not ready after 300 s")

        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=300)
        lock = threading.Lock()
        counts = {"chat": 0, "stream": 0, "completion": 0, "abandoned": 0, "bad": 0}
        failures, bad_not_4xx, latencies = [], [], []
        stop_at = [0.0]

        def valid(kind, rng):
            prompt = rng.choice(PROMPTS)
            n = rng.randint(4, 48)
            t0 = time.time()
            if kind == "chat":
                r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}],
                                                   max_tokens=n, temperature=rng.choice([0, 0.7]))
                assert r.choices[0].finish_reason in ("stop", "length"), r
            elif kind == "stream":
                parts = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}],
                                                            max_tokens=n, stream=True))
                assert parts and parts[-1].choices[0].finish_reason in ("stop", "length"), parts[-1]
            elif kind == "completion":
                r = client.completions.create(model="m", prompt=prompt, max_tokens=n)
                assert r.choices[0].finish_reason in ("stop", "length"), r
            else:  # abandoned stream
                stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}],
                                                        max_tokens=200, stream=True)
                keep = rng.randint(2, 6)
                for i, _ in enumerate(stream):
                    if i + 1 >= keep:
                        break
                stream.close()
            return time.time() - t0

        def bad(rng):
            body, path = rng.choice([
                ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 9}, "/v1/chat/completions"),
                ({"model": "m", "messages": [], "max_tokens": 4}, "/v1/chat/completions"),
                ({"model": "m", "prompt": "x " * 50, "max_tokens": 100000}, "/v1/completions"),
                (b"{not json", "/v1/chat/completions"),
                ({"model": "m", "messages": "nope"}, "/v1/chat/completions"),
                ({"model": "m", "prompt": "x", "max_tokens": -5}, "/v1/completions"),
            ])
            status, text = http("POST", base + path, body)
            return status, text

        def worker(i):
            rng = random.Random(args.seed * 1000 + i)
            while time.time() < stop_at[0]:
                roll = rng.random()
                kind = ("chat" if roll < 0.30 else "stream" if roll < 0.55 else "completion" if roll < 0.70
                        else "abandoned" if roll < 0.80 else "bad")
                try:
                    if kind == "bad":
                        status, text = bad(rng)
                        if not 400 <= status < 500:
                            with lock:
                                bad_not_4xx.append((status, text[:200]))
                    else:
                        dt = valid(kind, rng)
                        with lock:
                            latencies.append(dt)
                    with lock:
                        counts[kind] += 1
                except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                    with lock:
                        failures.append(f"{kind}: {type(e).__name__}: {str(e)[:300]}")

        # Warm-up: one request of each valid kind, then the RSS baseline.
        stop_at[0] = time.time() + 1e9
        warm_rng = random.Random(0)
        for kind in ("chat", "stream", "completion"):
            valid(kind, warm_rng)
        pids = rank_pids(server.pid)
        rss_start = {p: rss_mib(p) for p in pids}
        cpu_start = {p: cpu_seconds(p) for p in pids}
        stop_at[0] = time.time() + args.minutes * 60
        t0 = time.time()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - t0
        # Abandoned streams are cancelled at the engine's next step; give it a moment to idle.
        metrics_text = ""
        for _ in range(60):
            metrics_text = http("GET", base + "/metrics")[1]
            if metric(metrics_text, "gemma_running_sequences") == 0 and metric(metrics_text, "gemma_queue_depth") == 0:
                break
            time.sleep(0.5)
        rss_end = {p: rss_mib(p) for p in pids}
        cpu_end = {p: cpu_seconds(p) for p in pids}
        running = metric(metrics_text, "gemma_running_sequences")
        queued = metric(metrics_text, "gemma_queue_depth")
        lat = sorted(latencies)
        pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None)
        growth = {p: (rss_end[p] / rss_start[p]) if rss_start.get(p) and rss_end.get(p) else None for p in pids}
        summary = {
            "minutes": round(elapsed / 60, 2), "ranks": args.ranks, "clients": args.clients, "binary": args.binary,
            "requests": counts, "valid_request_errors": len(failures), "bad_requests_not_4xx": len(bad_not_4xx),
            "latency_s": {"p50": pct(0.5), "p95": pct(0.95), "max": round(lat[-1], 3) if lat else None},
            "rss_mib_start": {str(p): round(v, 1) for p, v in rss_start.items() if v},
            "rss_mib_end": {str(p): round(v, 1) for p, v in rss_end.items() if v},
            "cpu_s_during_load": {str(p): round(cpu_end[p] - cpu_start[p], 1) for p in pids
                                  if cpu_start.get(p) is not None and cpu_end.get(p) is not None},
            "running_sequences_at_end": running, "queue_depth_at_end": queued,
            "kv_slots_free_at_end": None if running is None else SLOTS - int(running),
            "server_alive": server.poll() is None,
        }
        print(json.dumps(summary, indent=2))
        problems = []
        if failures:
            problems.append(f"{len(failures)} valid requests failed, e.g. {failures[:3]}")
        if bad_not_4xx:
            problems.append(f"{len(bad_not_4xx)} bad requests were not 4xx, e.g. {bad_not_4xx[:3]}")
        if running != 0 or queued != 0:
            problems.append(f"slots not free at the end: running {running}, queued {queued}")
        if not pids or any(g is None or g > args.rss_growth for g in growth.values()):
            problems.append(f"RSS growth per rank {growth} (limit {args.rss_growth}x)")
        if server.poll() is not None:
            problems.append(f"server exited with {server.returncode}")
        for p in problems:
            print("FAIL " + p, file=sys.stderr)
        return 1 if problems else 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
