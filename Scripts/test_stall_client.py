#!/usr/bin/env python3
"""Client side of the stuck-rank and disconnect tests (Tests/GemmaNodeTests/StuckRankMPITests.swift).

Standard library only. Every result is one line `RESULT <json>` on stdout; the Swift test
judges them.

  inflight   : starts one non-streaming and one streaming completion with a large max_tokens,
               prints `STARTED` once the stream has produced text (the test then stops or
               kills a rank), then polls /health until it is not 200 and reports it, and
               reports how each request ended (status and body / the stream's events).
  disconnect : sends a non-streaming completion on a raw socket, closes the socket once
               /metrics shows the sequence running, then polls /metrics until no sequence
               holds a KV slot and reports the gauge before and after.
"""
import argparse
import http.client
import json
import re
import socket
import sys
import threading
import time


def result(**fields):
    print("RESULT " + json.dumps(fields), flush=True)


def running_sequences(host, port):
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    m = re.search(r"^gemma_running_sequences (\d+)", body, re.M)
    return int(m.group(1)) if m else -1


def body_for(max_tokens, stream):
    return json.dumps({"model": "x", "prompt": "Once upon a time", "max_tokens": max_tokens,
                       "temperature": 0, "stream": stream})


def inflight(host, port, max_tokens):
    outcome = {}

    def plain():
        try:
            conn = http.client.HTTPConnection(host, port, timeout=120)
            conn.request("POST", "/v1/completions", body_for(max_tokens, False), {"Content-Type": "application/json"})
            r = conn.getresponse()
            outcome["plain"] = {"status": r.status, "body": r.read().decode(errors="replace")}
        except Exception as e:  # a dropped connection is an outcome too
            outcome["plain"] = {"status": -1, "body": repr(e)}

    started = threading.Event()

    def streamed():
        events = []
        try:
            conn = http.client.HTTPConnection(host, port, timeout=120)
            conn.request("POST", "/v1/completions", body_for(max_tokens, True), {"Content-Type": "application/json"})
            r = conn.getresponse()
            status = r.status
            for raw in r:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if len(events) >= 3:
                    started.set()
            outcome["stream"] = {"status": status, "events": events[-3:], "count": len(events)}
        except Exception as e:
            outcome["stream"] = {"status": -1, "events": events[-3:], "count": len(events), "error": repr(e)}
        started.set()

    threads = [threading.Thread(target=plain), threading.Thread(target=streamed)]
    for t in threads:
        t.start()
    started.wait(120)
    print("STARTED", flush=True)
    t0 = time.monotonic()
    health = None
    while time.monotonic() - t0 < 60:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/health")
            r = conn.getresponse()
            body = r.read().decode(errors="replace")
            if r.status != 200:
                health = {"status": r.status, "body": body, "after": round(time.monotonic() - t0, 2)}
                break
        except Exception as e:
            health = {"status": -1, "body": repr(e), "after": round(time.monotonic() - t0, 2)}
            break
        time.sleep(0.05)
    result(kind="health", **(health or {"status": 200, "body": "never changed"}))
    for t in threads:
        t.join(120)
    result(kind="plain", **outcome.get("plain", {"status": -2}))
    result(kind="stream", **outcome.get("stream", {"status": -2}))


def disconnect(host, port, max_tokens):
    before = running_sequences(host, port)
    s = socket.create_connection((host, port))
    body = body_for(max_tokens, False).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    t0 = time.monotonic()
    seen = 0
    while time.monotonic() - t0 < 30:
        seen = running_sequences(host, port)
        if seen > before:
            break
        time.sleep(0.05)
    s.close()
    closed = time.monotonic()
    after = seen
    while time.monotonic() - closed < 20:
        after = running_sequences(host, port)
        if after == before:
            break
        time.sleep(0.05)
    result(kind="disconnect", before=before, during=seen, after=after,
           freed_after=round(time.monotonic() - closed, 2))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["inflight", "disconnect"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--max-tokens", type=int, default=2000)
    a = p.parse_args()
    (inflight if a.mode == "inflight" else disconnect)(a.host, a.port, a.max_tokens)


if __name__ == "__main__":
    sys.exit(main())
