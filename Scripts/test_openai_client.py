#!/usr/bin/env python3
"""Drives a running `gemma-node serve` with the official `openai` package and checks it.

Run by Tests/GemmaNodeTests/ServerTests.swift against `mpirun -n 2 gemma-node serve ...`
(started with --api-key, --parallel 8, --max-queue 16), or by hand:

    Scripts/test_openai_client.py --base-url http://127.0.0.1:8080 --api-key KEY --match MODEL_NAME

Checks: /health and /v1/models; chat and text completions, streaming and not (greedy: the
streamed text equals the non-streamed one); logprobs and top_logprobs in OpenAI's chat and
legacy completions shapes (at temperature 0 the chosen token is the most likely; streamed equal
non-streamed; before temperature; > 20 is a 400 naming the field); 16 concurrent streaming clients each equal to its
prompt's solo answer; stop strings; errors 400 (malformed, bad parameter, context overflow with
the numbers), 401, 413, 429; a client that disconnects frees its slot; the idle server's CPU
across all ranks (read from /proc) stays under 10% of a core; structured output
(`response_format` json_object and a nested json_schema with object/array/enum/integer, at
temperatures 0 to 2 and several seeds, streaming and not: every output parsed with json.loads
and validated with jsonschema; an unsupported keyword and a too-small max_tokens are 400s);
tool calls (a named tool_choice and "required" over two functions at several temperatures and
seeds, streamed and not: finish_reason "tool_calls" and arguments that json.loads and validate
with jsonschema against the function's parameters; greedy streamed call equals non-streamed;
a follow-up with the assistant's tool_calls and a role "tool" result; tool_choice "none" gives
content; an unsupported keyword in a forced function's parameters is a 400 naming it);
prefix caching (a second chat with the same long system prompt reports it in
usage.prompt_tokens_details.cached_tokens and /metrics, with the same answer). Prints one line per check and
'N passed, N failed' at the end; exit status 1 if any failed.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("test")

import argparse
import concurrent.futures
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

import jsonschema
import openai

RESULTS = {"passed": 0, "failed": 0}


def check(name, condition, detail=""):
    if condition:
        RESULTS["passed"] += 1
        print(f"ok   {name}", flush=True)
    else:
        RESULTS["failed"] += 1
        print(f"FAIL {name} {detail}", flush=True)
    return condition


def http(method, url, body=None, headers=None, timeout=60):
    """Plain HTTP (no retries): returns (status, parsed JSON or text)."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        raw = e.read().decode()
        status = e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def rank_pids(match):
    """PIDs of the gemma-node processes whose arguments include `match` (all ranks; not mpirun)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            exe = os.path.basename(os.readlink(f"/proc/{entry}/exe"))
        except OSError:
            continue
        if exe == "gemma-node" and b"serve" in argv and match.encode() in argv:
            pids.append(int(entry))
    return pids


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 (1-based); after the ")" split they are 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(base, name):
    status, text = http("GET", f"{base}/metrics")
    m = re.search(rf"^{re.escape(name)} (\S+)$", text if isinstance(text, str) else "", re.M)
    return float(m.group(1)) if m else None


PROMPTS = [
    "What is the capital of France?",
    "Name three colors.",
    "Count from one to five.",
    "What is two plus two?",
    "Say hello in Spanish.",
    "What color is the sky?",
    "Name a large animal.",
    "What is water made of?",
]


# Nested object, array of enums with item bounds, integer, number, boolean: every keyword of
# the subset that a short answer can show.
PET_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "minItems": 1, "maxItems": 3},
        "pet": {
            "type": "object",
            "properties": {"kind": {"enum": ["cat", "dog"]}, "legs": {"type": "integer"}, "weight": {"type": "number"}},
            "required": ["kind", "legs"],
            "additionalProperties": False,
        },
        "happy": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "pet"],
    "additionalProperties": False,
}


def structured_text(client, model, stream, **kw):
    """Content and finish_reason of one chat request, streamed or not."""
    if not stream:
        r = client.chat.completions.create(model=model, **kw)
        return r.choices[0].message.content, r.choices[0].finish_reason
    parts, finish = [], None
    for chunk in client.chat.completions.create(model=model, stream=True, **kw):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(parts), finish


def structured_output(client, model):
    ask = [{"role": "user", "content": "Describe a person and their pet as JSON."}]
    # JSON mode: any object, at several temperatures and seeds, streamed and not.
    for temperature, seed, stream in [(0, 1, False), (0, 1, True), (0.8, 5, True), (1.6, 6, False)]:
        text, finish = structured_text(client, model, stream, messages=ask, max_tokens=40, temperature=temperature, seed=seed,
                                       response_format={"type": "json_object"})
        try:
            ok = isinstance(json.loads(text), dict)
        except ValueError:
            ok = False
        check(f"json_object T={temperature} seed={seed} stream={stream} parses as an object ({finish})",
              ok and finish in ("stop", "length"), repr(text))
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": PET_SCHEMA}}
    greedy = {}
    for temperature, seed, stream in [(0, 1, False), (0, 1, True), (1.0, 2, True), (1.5, 3, False), (2.0, 4, True)]:
        text, finish = structured_text(client, model, stream, messages=ask, max_tokens=120, temperature=temperature, seed=seed,
                                       response_format=fmt)
        try:
            jsonschema.validate(json.loads(text), PET_SCHEMA)
            ok, detail = True, ""
        except (ValueError, jsonschema.ValidationError) as e:
            ok, detail = False, f"{e}: {text!r}"
        check(f"json_schema T={temperature} seed={seed} stream={stream} parses and validates ({finish})",
              ok and finish in ("stop", "length"), detail)
        if temperature == 0:
            greedy[stream] = text
    check("json_schema greedy stream equals non-stream", greedy.get(True) == greedy.get(False), str(greedy))
    comp = client.completions.create(model=model, prompt="A JSON object describing a city:", max_tokens=30, temperature=0.9, seed=8,
                                     extra_body={"response_format": {"type": "json_object"}})  # not in the legacy signature
    try:
        ok = isinstance(json.loads(comp.choices[0].text), dict)
    except ValueError:
        ok = False
    check("completions json_object parses as an object", ok, repr(comp.choices[0].text))
    for body, param, word in [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "a+"}}}, "response_format", "pattern"),
        (fmt, "max_tokens", "too small"),
    ]:
        try:
            client.chat.completions.create(model=model, messages=ask, max_tokens=8, response_format=body)
            check(f"response_format refusal names {word}", False, "accepted")
        except openai.BadRequestError as e:
            check(f"response_format refusal names {word}", e.body.get("param") == param and word in e.body.get("message", ""), str(e.body))


SYSTEM_SENTENCES = [
    "You are a careful assistant for a small library.",
    "Answer in one short sentence unless asked for more.",
    "The library opens at nine and closes at five on weekdays.",
    "Books may be borrowed for three weeks and renewed once.",
    "Late returns cost ten cents a day, up to the price of the book.",
    "The reading room on the second floor is kept quiet at all times.",
]


def prefix_cache(client, model, base, n):
    """Two chats sharing a long system prompt: the second reuses its KV entries (prefix cache,
    on by default), usage.prompt_tokens_details.cached_tokens says how many, /metrics counts
    them, and the answer equals the same request's answer computed again (greedy)."""
    system = f"Session {time.time_ns()}. " + " ".join(SYSTEM_SENTENCES * 5)
    def ask(question, stream=False):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        if not stream:
            r = client.chat.completions.create(model=model, messages=messages, max_tokens=n, temperature=0)
            return r.choices[0].message.content, r.usage
        text, usage = "", None
        for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=n, temperature=0,
                                                    stream=True, stream_options={"include_usage": True}):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage
        return text, usage
    before = metric(base, "gemma_prompt_tokens_cached_total") or 0
    _, first = ask("When does the library open?")
    second_text, second = ask("How long can I keep a book?")
    again_text, again = ask("How long can I keep a book?", stream=True)
    cached = [u.prompt_tokens_details.cached_tokens if u and u.prompt_tokens_details else None for u in (first, second, again)]
    # The first shares only the chat template's opening tokens with earlier requests; the second
    # the whole system prompt (all but the few tokens of its question and turn markers); the
    # third its whole prompt but the last token, which is always computed for its logits.
    check("prefix cache: a new system prompt is computed", cached[0] is not None and cached[0] < 8, str(cached))
    check("prefix cache: the shared system prompt is reused",
          cached[1] is not None and first.prompt_tokens * 0.85 < cached[1] < second.prompt_tokens, f"{cached} {first.prompt_tokens}")
    check("prefix cache: the same prompt again reuses all but its last token (streamed usage)",
          again is not None and cached[2] == again.prompt_tokens - 1, f"{cached} {again}")
    check("prefix cache: same answer when reused", again_text == second_text, f"{again_text!r} vs {second_text!r}")
    after = metric(base, "gemma_prompt_tokens_cached_total") or 0
    check("prefix cache: /metrics counts the reused tokens", after - before >= sum(c or 0 for c in cached), f"{before} -> {after}")


WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}, "days": {"type": "integer"}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time in a time zone", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}


def tool_call_answer(client, model, stream, **kw):
    """(content, [(id, name, arguments)], finish_reason) of one chat request; a stream is
    accumulated from its deltas as OpenAI's client documents (by index, arguments appended)."""
    if not stream:
        r = client.chat.completions.create(model=model, **kw)
        m = r.choices[0].message
        return m.content, [(c.id, c.function.name, c.function.arguments) for c in (m.tool_calls or [])], r.choices[0].finish_reason
    content, calls, finish = None, {}, None
    for chunk in client.chat.completions.create(model=model, stream=True, **kw):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        if d.content:
            content = (content or "") + d.content
        for c in d.tool_calls or []:
            e = calls.setdefault(c.index, {"id": None, "name": None, "arguments": ""})
            e["id"] = c.id or e["id"]
            if c.function:
                e["name"] = c.function.name or e["name"]
                e["arguments"] += c.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    return content, [(e["id"], e["name"], e["arguments"]) for _, e in sorted(calls.items())], finish


def valid_call(call):
    _, name, arguments = call
    try:
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])
        return True, ""
    except (KeyError, ValueError, jsonschema.ValidationError) as e:
        return False, f"{e}: {call!r}"


def tool_calls(client, model):
    ask = [{"role": "user", "content": "What is the weather in Paris today?"}]
    named = {"type": "function", "function": {"name": "get_weather"}}
    greedy = {}
    for choice, temperature, seed, stream in [(named, 0, 1, False), (named, 0, 1, True), (named, 1.0, 2, True), (named, 1.6, 3, False),
                                              ("required", 0.8, 4, True), ("required", 1.3, 5, False)]:
        content, calls, finish = tool_call_answer(client, model, stream, messages=ask, tools=TOOLS, tool_choice=choice, max_tokens=100,
                                                  temperature=temperature, seed=seed)
        label = "named" if choice is named else choice
        ok, detail = valid_call(calls[0]) if len(calls) == 1 else (False, f"{len(calls)} calls")
        if choice is named:
            ok = ok and calls[0][1] == "get_weather"
        check(f"tool_choice {label} T={temperature} seed={seed} stream={stream}: one call, arguments validate ({finish})",
              ok and finish == "tool_calls" and calls[0][0], detail or repr((content, calls)))
        if temperature == 0:
            greedy[stream] = [c[1:] for c in calls]
    check("tool call greedy stream equals non-stream", greedy.get(True) == greedy.get(False), str(greedy))
    # The official client's own stream accumulation (chat.completions.stream) rebuilds the call.
    with client.chat.completions.stream(model=model, messages=ask, tools=TOOLS, tool_choice=named, max_tokens=100, temperature=0) as s:
        for _ in s:
            pass
        final = s.get_final_completion().choices[0]
    got = [(t.function.name, t.function.arguments) for t in final.message.tool_calls or []]
    check("official stream helper accumulates the call", final.finish_reason == "tool_calls" and got == greedy.get(False), repr(got))
    # A follow-up with the call and its result (role "tool").
    first = client.chat.completions.create(model=model, messages=ask, tools=TOOLS, tool_choice=named, max_tokens=100, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    history = ask + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call.id, "type": "function",
                                                                 "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})},
    ]
    r = client.chat.completions.create(model=model, messages=history, tools=TOOLS, max_tokens=12, temperature=0)
    c = r.choices[0]
    ok = c.finish_reason in ("stop", "length") and isinstance(c.message.content, str) or c.finish_reason == "tool_calls" and all(valid_call((t.id, t.function.name, t.function.arguments))[0] for t in c.message.tool_calls)
    check(f"follow-up with a role tool result is answered ({c.finish_reason})", ok and r.usage.prompt_tokens > first.usage.prompt_tokens, repr(c.message))
    content, calls, finish = tool_call_answer(client, model, False, messages=ask, tools=TOOLS, tool_choice="none", max_tokens=12, temperature=0)
    check(f"tool_choice none gives content ({finish})", not calls and finish in ("stop", "length") and isinstance(content, str), repr((content, calls)))
    bad = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}}}]
    try:
        client.chat.completions.create(model=model, messages=ask, tools=bad, tool_choice="required", max_tokens=8)
        check("forced call with an unsupported keyword is refused", False, "accepted")
    except openai.BadRequestError as e:
        check("forced call with an unsupported keyword is refused naming it", e.body.get("param") == "tools" and "pattern" in e.body.get("message", ""), str(e.body))


def gemma4_tools(client, model):
    """`--only gemma4-tools`: a tiny Gemma 4 model (random weights, a 256-id tokenizer) behind
    the server. Forced calls must still parse and validate; thinking requests answer without
    any marker in content or reasoning_content."""
    ask = [{"role": "user", "content": "Time?"}]
    # No description and no additionalProperties: the model's context is 256 tokens and this
    # tokenizer writes most text a byte per token.
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}]
    for choice, temperature, seed, stream in [({"type": "function", "function": {"name": "get_time"}}, 0, 1, False),
                                              ("required", 0, 1, True), ("required", 1.0, 2, False), ("required", 1.8, 3, True)]:
        content, calls, finish = tool_call_answer(client, model, stream, messages=ask, tools=tools, tool_choice=choice, max_tokens=48,
                                                  temperature=temperature, seed=seed)
        ok, detail = valid_call(calls[0]) if len(calls) == 1 else (False, f"{len(calls)} calls")
        check(f"gemma4 tool_choice {'named' if isinstance(choice, dict) else choice} T={temperature} seed={seed} stream={stream}: "
              f"the call validates ({finish})", ok and finish == "tool_calls" and calls[0][1] == "get_time", detail or repr((content, calls)))
    for effort, stream in [("high", False), ("high", True), (None, False)]:
        kw = {"reasoning_effort": effort} if effort else {}
        if not stream:
            r = client.chat.completions.create(model=model, messages=ask, max_tokens=24, temperature=1.0, seed=7, **kw)
            m = r.choices[0].message
            texts = [m.content or "", getattr(m, "reasoning_content", None) or ""]
        else:
            texts = ["", ""]
            for chunk in client.chat.completions.create(model=model, messages=ask, max_tokens=24, temperature=1.0, seed=7, stream=True, **kw):
                if chunk.choices:
                    d = chunk.choices[0].delta
                    texts[0] += d.content or ""
                    texts[1] += getattr(d, "reasoning_content", None) or ""
        check(f"gemma4 reasoning_effort={effort} stream={stream}: no marker in content or reasoning",
              not any(m in t for t in texts for m in ("<|", "|>")), repr(texts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True, help="http://HOST:PORT")
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--match", required=True, help="an argument of the serve command line (e.g. its --model-name), to find the rank processes in /proc")
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--distinct", type=int, default=4, help="distinct prompts among the concurrent clients")
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    ap.add_argument("--only", choices=["gemma4-tools"], help="run only these checks")
    args = ap.parse_args()
    base = args.base_url.rstrip("/")
    client = openai.OpenAI(base_url=base + "/v1", api_key=args.api_key, max_retries=0, timeout=300)
    n = args.max_tokens
    if args.only == "gemma4-tools":
        gemma4_tools(client, client.models.list().data[0].id)
        print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
        return 1 if RESULTS["failed"] else 0

    status, health = http("GET", f"{base}/health")
    check("health is ready", status == 200 and health.get("status") == "ok", f"{status} {health}")
    model = client.models.list().data[0].id
    check("models lists one model", bool(model), model)

    # Chat and completion, streaming and not; greedy so both must agree.
    messages = [{"role": "user", "content": PROMPTS[0]}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=n, temperature=0)
    text = chat.choices[0].message.content
    check("chat returns text", isinstance(text, str) and len(text) > 0, repr(text))
    check("chat finish_reason", chat.choices[0].finish_reason in ("stop", "length"), chat.choices[0].finish_reason)
    u = chat.usage
    check("chat usage", u.prompt_tokens > 5 and 0 < u.completion_tokens <= n and u.total_tokens == u.prompt_tokens + u.completion_tokens,
          str(u))
    streamed = ""
    finish = None
    chunks = 0
    for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=n, temperature=0, stream=True):
        chunks += 1
        if chunk.choices:
            streamed += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    check("chat stream equals non-stream", streamed == text, f"{streamed!r} vs {text!r}")
    check("chat stream has several chunks and a finish_reason", chunks >= 3 and finish == chat.choices[0].finish_reason,
          f"{chunks} {finish}")

    comp = client.completions.create(model=model, prompt="The capital of France is", max_tokens=n, temperature=0)
    ctext = comp.choices[0].text
    check("completion returns text", len(ctext) > 0 and comp.usage.completion_tokens > 0, repr(ctext))
    cstream = "".join(c.choices[0].text for c in
                      client.completions.create(model=model, prompt="The capital of France is", max_tokens=n, temperature=0,
                                                stream=True) if c.choices)
    check("completion stream equals non-stream", cstream == ctext, f"{cstream!r} vs {ctext!r}")

    # Log-probabilities (of the model's distribution, before temperature): at temperature 0 the
    # chosen token is the most likely one, so its logprob equals the first alternative's.
    lp = client.chat.completions.create(model=model, messages=messages, max_tokens=n, temperature=0, logprobs=True, top_logprobs=5)
    content = lp.choices[0].logprobs.content if lp.choices[0].logprobs else None
    check("chat logprobs: one entry per token, text unchanged",
          content is not None and len(content) == lp.usage.completion_tokens and lp.choices[0].message.content == text,
          f"{lp.choices[0].logprobs!r}")
    if content:
        # 1e-9: the server sends the same double for both (one computation); only JSON printing
        # and parsing stand between them, which round-trips doubles exactly.
        greedy_top = all(len(e.top_logprobs) == 5 and abs(e.logprob - e.top_logprobs[0].logprob) < 1e-9
                         and e.token == e.top_logprobs[0].token for e in content)
        check("chat logprobs: temperature 0 chose the most likely token", greedy_top, str(content[:2]))
        ordered = all(all(a.logprob >= b.logprob for a, b in zip(e.top_logprobs, e.top_logprobs[1:]))
                      and all(t.logprob <= 0 for t in e.top_logprobs)
                      and sum(2.718281828459045 ** t.logprob for t in e.top_logprobs) <= 1 + 1e-9 for e in content)
        check("chat logprobs: alternatives sorted, <= 0, total probability <= 1", ordered, str(content[:2]))
        check("chat logprobs: bytes spell the token",
              all(bytes(e.bytes).decode("utf-8", "replace") == e.token for e in content), str(content[:2]))
    slp = []
    for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=n, temperature=0, logprobs=True,
                                                top_logprobs=5, stream=True):
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            slp += chunk.choices[0].logprobs.content
    check("chat logprobs streamed equal non-streamed",
          content is not None and [(e.token, e.logprob) for e in slp] == [(e.token, e.logprob) for e in content],
          f"{len(slp)} vs {len(content or [])}")
    # Sampling settings do not change the distribution the logprobs describe: the first token's
    # alternatives are the same at temperature 0 and 1.5 (same prompt, same first position).
    hot = client.chat.completions.create(model=model, messages=messages, max_tokens=1, temperature=1.5, seed=7, logprobs=True,
                                         top_logprobs=5)
    if content:
        check("logprobs are before temperature",
              [(t.token, t.logprob) for t in hot.choices[0].logprobs.content[0].top_logprobs]
              == [(t.token, t.logprob) for t in content[0].top_logprobs], str(hot.choices[0].logprobs.content[0]))
    clp = client.completions.create(model=model, prompt="The capital of France is", max_tokens=n, temperature=0, logprobs=3)
    legacy = clp.choices[0].logprobs
    check("completion logprobs: legacy shape",
          legacy is not None and len(legacy.tokens) == len(legacy.token_logprobs) == len(legacy.top_logprobs)
          == len(legacy.text_offset) == clp.usage.completion_tokens and clp.choices[0].text == ctext
          and all(len(d) <= 3 and abs(max(d.values()) - v) < 1e-9 for d, v in zip(legacy.top_logprobs, legacy.token_logprobs)),
          repr(legacy))
    cslp = []
    for c in client.completions.create(model=model, prompt="The capital of France is", max_tokens=n, temperature=0, logprobs=3,
                                       stream=True):
        if c.choices and c.choices[0].logprobs:
            cslp += c.choices[0].logprobs.token_logprobs
    check("completion logprobs streamed equal non-streamed", legacy is not None and cslp == legacy.token_logprobs,
          f"{cslp} vs {legacy and legacy.token_logprobs}")
    for body, param in ((dict(logprobs=True, top_logprobs=21), "top_logprobs"), (dict(top_logprobs=2), "top_logprobs")):
        try:
            client.chat.completions.create(model=model, messages=messages, max_tokens=2, **body)
            check(f"chat {body} is 400", False, "accepted")
        except openai.BadRequestError as e:
            check(f"chat {body} is 400 naming {param}", e.body.get("param") == param, str(e.body))
    try:
        client.completions.create(model=model, prompt="x", max_tokens=2, logprobs=21)
        check("completion logprobs=21 is 400", False, "accepted")
    except openai.BadRequestError as e:
        check("completion logprobs=21 is 400 naming logprobs", e.body.get("param") == "logprobs", str(e.body))

    # A stop string cuts the text before it.
    if len(ctext.strip()) >= 4:
        word = ctext.strip()[2:4]
        cut = client.completions.create(model=model, prompt="The capital of France is", max_tokens=n, temperature=0, stop=[word])
        check("stop string", cut.choices[0].text == ctext[:ctext.index(word)] and cut.choices[0].finish_reason == "stop",
              f"{cut.choices[0].text!r} {cut.choices[0].finish_reason}")

    # Seeded sampling is reproducible.
    s1 = client.completions.create(model=model, prompt="Once upon a time", max_tokens=n, temperature=1.0, top_p=0.9, seed=42)
    s2 = client.completions.create(model=model, prompt="Once upon a time", max_tokens=n, temperature=1.0, top_p=0.9, seed=42)
    check("same seed same text", s1.choices[0].text == s2.choices[0].text)

    # Solo answers, then 16 concurrent streaming clients must each reproduce theirs.
    distinct = PROMPTS[: min(len(PROMPTS), args.clients, args.distinct)]
    solo = {}
    for p in distinct:
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": p}], max_tokens=n, temperature=0)
        solo[p] = r.choices[0].message.content

    def stream_one(i):
        p = distinct[i % len(distinct)]
        out = ""
        for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": p}], max_tokens=n,
                                                    temperature=0, stream=True):
            if chunk.choices:
                out += chunk.choices[0].delta.content or ""
        return p, out

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        outs = list(pool.map(stream_one, range(args.clients)))
    elapsed = time.time() - t0
    wrong = [(p, o, solo[p]) for p, o in outs if o != solo[p]]
    check(f"{args.clients} concurrent streams equal their solo answers ({elapsed:.1f} s)", not wrong and len(outs) == args.clients,
          str(wrong[:2]))
    check("different prompts gave different answers", len(set(solo.values())) > 1, str(solo))
    batch_hist = metric(base, "gemma_batch_sequences_sum")
    steps = metric(base, "gemma_batch_sequences_count")
    check("steps batched several sequences", batch_hist is not None and steps and batch_hist / steps > 1.5,
          f"{batch_hist} / {steps}")

    # Errors, each answered as OpenAI JSON; the server stays up.
    auth = {"Authorization": f"Bearer {args.api_key}"}
    status, body = http("POST", f"{base}/v1/chat/completions", b"{not json", auth)
    check("malformed body is 400", status == 400 and "error" in body, f"{status} {body}")
    status, body = http("POST", f"{base}/v1/chat/completions", {"messages": messages, "temperature": 7}, auth)
    check("bad temperature is 400", status == 400 and body["error"]["param"] == "temperature", f"{status} {body}")
    try:
        openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).chat.completions.create(model=model, messages=messages)
        check("wrong key is 401", False, "no error")
    except openai.AuthenticationError as e:
        check("wrong key is 401", e.status_code == 401)
    status, body = http("POST", f"{base}/v1/completions", {"prompt": "hi"})
    check("missing key is 401", status == 401, f"{status}")
    status, body = http("POST", f"{base}/v1/completions", b'{"prompt": "' + b"a" * (2 << 20) + b'"}', auth)
    check("oversized body is 413", status == 413, f"{status}")
    try:
        client.completions.create(model=model, prompt="hello " * 50, max_tokens=10 ** 6)
        check("context overflow is 400", False, "no error")
    except openai.BadRequestError as e:
        msg = str(e)
        check("context overflow is 400 with the numbers", e.status_code == 400 and "maximum context length is" in msg
              and re.search(r"\(\d+ in the prompt, 1000000 for the completion\)", msg) is not None, msg)

    # Queue full: more simultaneous requests than slots + queue get 429.
    def raw_completion(_):
        return http("POST", f"{base}/v1/completions", {"prompt": "Tell me a story", "max_tokens": 4, "temperature": 0}, auth)[0]

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(raw_completion, range(40)))
    check("queue full is 429 (others 200)", 429 in codes and 200 in codes and set(codes) <= {200, 429},
          str(sorted(set((c, codes.count(c)) for c in codes))))

    # A client that goes away mid-stream frees its slot.
    host, port = base.split("//")[1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(120)
    body = json.dumps({"model": model, "prompt": "Write a long essay about the sea.", "max_tokens": 500, "stream": True}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {args.api_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    got = b""
    deadline = time.time() + 120
    try:
        while got.count(b"data: ") < 3 and time.time() < deadline and not got.startswith(b"HTTP/1.1 4"):
            got += sock.recv(4096)
    except socket.timeout:
        pass
    running_before = metric(base, "gemma_running_sequences")
    sock.close()
    freed = False
    deadline = time.time() + 30
    while time.time() < deadline:
        if metric(base, "gemma_running_sequences") == 0:
            freed = True
            break
        time.sleep(0.2)
    check("disconnect frees the slot", running_before == 1 and freed, f"running before {running_before}; {got[:300]!r}")

    status, health = http("GET", f"{base}/health")
    after = client.chat.completions.create(model=model, messages=messages, max_tokens=n, temperature=0)
    check("still serving after errors", status == 200 and after.choices[0].message.content == text)

    structured_output(client, model)
    prefix_cache(client, model, base, n)
    tool_calls(client, model)

    # Idle CPU of all ranks.
    pids = rank_pids(args.match)
    check("found every rank process", len(pids) >= 2, str(pids))
    time.sleep(1.0)
    before = {p: cpu_seconds(p) for p in pids}
    t0 = time.time()
    time.sleep(args.idle_seconds)
    used = sum(cpu_seconds(p) - before[p] for p in pids)
    share = used / (time.time() - t0)
    check(f"idle CPU across {len(pids)} ranks < 10% of a core ({share * 100:.1f}%)", share < 0.10)

    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
