#!/usr/bin/env python3
"""Plain-numpy reference forward pass for the Gemma 1/2/3/4 text decoders.

Reads a Hugging Face model directory (config.json + one or many .safetensors, f32/f16/bf16)
with its own tiny safetensors parser, runs the full-sequence forward pass written from
GEMMA_SPEC.md (no torch, no transformers), and compares against a fixture's expected.json:
max |logit diff| at every position, greedy tokens, and per-layer hidden states (printing the
first layer that drifts). Meant for hunting mismatches in the Swift engine: every step is a
few lines of numpy that can be printed next to the Swift values.

    python3 Scripts/reference_forward.py                       # every fixture in Tests/Fixtures/hf
    python3 Scripts/reference_forward.py Tests/Fixtures/hf/gemma2_softcap [--f32]
    python3 Scripts/reference_forward.py --mutations   # which fixture catches which classic bug
    python3 Scripts/reference_forward.py --dump=2 Tests/Fixtures/hf/gemma4_e_style   # one layer's intermediates

Computes in float64 by default (so the diff to transformers' float32 output is transformers'
own rounding error), or in float32 with --f32 (closer to what the engine does).
Deliberately no KV cache: greedy decoding re-runs the full forward, which is slow but obvious.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("bench")


import json
import math
import os
import struct
import sys

import numpy as np

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "hf")
DT = np.float64
# --mutations: deliberately wrong variants (common bugs, GEMMA_SPEC.md §8) that the fixtures must catch.
MUT = None
# --dump=LAYER: intermediate values of one layer, to print next to the engine's own debug output.
TRACE_LAYER = None
TRACE = []


def tr(i, label, a):
    if TRACE_LAYER is not None and i == TRACE_LAYER:
        TRACE.append((label, a))


# --------------------------------------------------------------------------------------------
# Loading


def read_safetensors(path):
    """name -> float array (upcast from F32/F16/BF16). Format: u64 LE header length, JSON header
    {name: {dtype, shape, data_offsets:[begin, end)}} with offsets relative to the data area."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = memoryview(raw)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = data[b:e]
        dt = info["dtype"]
        if dt == "F32":
            a = np.frombuffer(buf, dtype="<f4")
        elif dt == "F16":
            a = np.frombuffer(buf, dtype="<f2")
        elif dt == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dt}")
        out[name] = a.reshape(info["shape"]).astype(DT)
    return out


PREFIXES = ("model.language_model.", "language_model.model.", "model.")
SKIP = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.embed_vision.",
        "model.audio_tower.", "model.embed_audio.")


def load_model(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    tc = cfg.get("text_config", cfg)
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    raw = {}
    for fn in files:
        raw.update(read_safetensors(os.path.join(d, fn)))
    w = {}
    for name, a in raw.items():
        if name.startswith(SKIP):
            continue
        for p in PREFIXES:
            if name.startswith(p):
                name = name[len(p):]
                break
        w[name] = a
    return tc, w


# --------------------------------------------------------------------------------------------
# Building blocks (GEMMA_SPEC.md §2)


def rms(x, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def gelu_tanh(z):
    return 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))


def inv_freq(params, d):
    """Inverse frequencies [d/2] for one layer type (default / linear / proportional)."""
    theta = params.get("rope_theta", 10000.0)
    kind = params.get("rope_type", "default")
    j = np.arange(d // 2, dtype=DT)
    inv = theta ** (-2.0 * j / d)
    if kind == "linear":
        if MUT != "no_rope_scaling":
            inv = inv / params["factor"]
    elif kind == "proportional":
        n = int(params.get("partial_rotary_factor", 1.0) * d // 2)
        if MUT == "proportional_exponent_2n":
            inv = theta ** (-2.0 * j / (2 * n))
        inv[n:] = 0.0  # exponent keeps the full head_dim; only the first n pairs rotate
        inv = inv / params.get("factor", 1.0)
    elif kind != "default":
        raise ValueError(f"rope_type {kind} not implemented here")
    return inv


def rope(x, inv):
    """x [T, heads, d], rotate-half pairing (j with j + d/2), positions 0..T-1."""
    T, _, d = x.shape
    ang = np.arange(T, dtype=DT)[:, None] * inv[None, :]  # [T, d/2]
    cos = np.concatenate([np.cos(ang), np.cos(ang)], -1)[:, None, :]
    sin = np.concatenate([np.sin(ang), np.sin(ang)], -1)[:, None, :]
    if MUT == "rope_adjacent":  # wrong pairing: (2j, 2j+1) instead of (j, j + d/2)
        c, s_ = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * c - b * s_, a * s_ + b * c
        return out
    rot = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1)
    return x * cos + rot * sin


def attention(q, k, v, scale, softcap, window):
    """q [T, nq, d], k/v [T, nkv, d] -> [T, nq*d]. GQA: query head h uses KV head h // (nq/nkv)."""
    T, nq, d = q.shape
    group = nq // k.shape[1]
    if MUT == "gqa_tiled":  # query head h -> KV head h % nkv instead of h // group
        k, v = np.tile(k, (1, group, 1)), np.tile(v, (1, group, 1))
    else:
        k = np.repeat(k, group, axis=1)
        v = np.repeat(v, group, axis=1)
    s = np.einsum("qhd,khd->hqk", q, k) * scale
    if softcap and MUT != "no_attn_softcap":
        s = softcap * np.tanh(s / softcap)
    qi = np.arange(T)[:, None]
    ki = np.arange(T)[None, :]
    allowed = ki <= qi
    if window and MUT != "no_sliding_window":
        allowed &= ki > qi - (window + (1 if MUT == "window_plus_one" else 0))
    s = np.where(allowed[None], s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", p, v).reshape(T, nq * d)


# --------------------------------------------------------------------------------------------
# Forward


def forward(tc, w, ids):
    """Returns (logits [T, V], hidden [L+1][T, H]) with the same hidden-state layout as the fixtures."""
    mt = tc["model_type"]
    gen = {"gemma": 1, "gemma2": 2, "gemma3_text": 3, "gemma4_text": 4}[mt]
    H = tc["hidden_size"]
    L = tc["num_hidden_layers"]
    nq = tc["num_attention_heads"]
    eps = tc.get("rms_norm_eps", 1e-6)
    E = w["embed_tokens.weight"]

    def norm(x, name):  # Gemma 1-3: (1 + w); Gemma 4: w
        g = w[name]
        plain = gen == 4
        if MUT == "norm_convention_swapped":  # w where (1 + w) is right and vice versa
            plain = not plain
        return rms(x, eps) * (g if plain else 1.0 + g)

    def lin(x, name):
        return x @ w[name].T

    if gen == 1:
        layer_types = ["full_attention"] * L
    elif "layer_types" in tc:
        layer_types = tc["layer_types"]
    elif gen == 2:
        layer_types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(L)]
    else:
        p = tc.get("sliding_window_pattern", 6)
        layer_types = ["sliding_attention" if (i + 1) % p else "full_attention" for i in range(L)]

    rp = tc.get("rope_parameters") or {"rope_type": "default", "rope_theta": tc.get("rope_theta", 10000.0)}
    per_type = rp if "full_attention" in rp or "sliding_attention" in rp else None

    x = E[ids] * (1.0 if MUT == "embed_unscaled" else math.sqrt(H))  # H = 64 in the fixtures: sqrt exact in every dtype
    hidden = [x]
    T = len(ids)

    # Gemma 4 per-layer inputs (§3.4.1)
    P = (tc.get("hidden_size_per_layer_input") or 0) if gen == 4 else 0
    if P:
        tok = (w["embed_tokens_per_layer.weight"][ids] * math.sqrt(P)).reshape(T, L, P)
        ctx = (x @ w["per_layer_model_projection.weight"].T) * H ** -0.5
        if MUT == "ple_no_context":
            ctx = np.zeros_like(ctx) + 0.0 * ctx
        ctx = rms(ctx.reshape(T, L, P), eps) * w["per_layer_projection_norm.weight"]
        ple = (ctx + tok) * 2 ** -0.5

    first_shared = L - (tc.get("num_kv_shared_layers") or 0) if gen == 4 else L
    producer = {}
    if gen == 4 and first_shared < L:
        for t in set(layer_types):
            producer[t] = max(i for i in range(first_shared) if layer_types[i] == t)
    kv_store = {}
    plc = tc.get("per_layer_config") or {}

    for i in range(L):
        t = layer_types[i]
        pre = f"layers.{i}."
        sliding = t == "sliding_attention"
        window = tc.get("sliding_window") if sliding and gen >= 2 else None
        nkv = tc["num_key_value_heads"]
        d = tc.get("head_dim") or H // nq
        if gen == 4 and t == "full_attention":
            over = plc.get(str(i), {}) if plc else {"head_dim": tc.get("global_head_dim", 512)}
            if not plc and tc.get("attention_k_eq_v") and tc.get("num_global_key_value_heads"):
                over["num_key_value_heads"] = tc["num_global_key_value_heads"]
            d = over.get("head_dim", d)
            nkv = over.get("num_key_value_heads", nkv)
        inv = inv_freq(per_type[t] if per_type else rp, d)

        tr(i, "layer input x", x)
        h = norm(x, pre + "input_layernorm.weight")
        tr(i, "input_layernorm(x)", h)
        q = lin(h, pre + "self_attn.q_proj.weight").reshape(T, nq, d)
        if gen >= 3:
            q = norm(q, pre + "self_attn.q_norm.weight")
        q = rope(q, inv)
        if gen == 4 and i >= first_shared:
            k, v = kv_store[i - first_shared if MUT == "kv_share_one_to_one" else producer[t]]
        else:
            k = lin(h, pre + "self_attn.k_proj.weight").reshape(T, nkv, d)
            vname = pre + "self_attn.v_proj.weight"
            v = lin(h, vname).reshape(T, nkv, d) if vname in w else k  # k_eq_v: V = raw K
            if gen >= 3:
                k = norm(k, pre + "self_attn.k_norm.weight")
            if gen == 4 and MUT != "no_v_norm":
                v = rms(v, eps)  # v_norm has no weight
            k = rope(k, inv)
            kv_store[i] = (k, v)
        tr(i, f"q after norm+rope [T, {nq}, {d}]", q)
        tr(i, f"k after norm+rope [T, {k.shape[1]}, {d}]" + (" (shared)" if gen == 4 and i >= first_shared else ""), k)
        tr(i, f"v [T, {v.shape[1]}, {d}]", v)
        if gen == 1 or MUT == "scale_head_dim":
            scale = d ** -0.5
        elif gen == 4:
            scale = 1.0
        else:
            scale = tc.get("query_pre_attn_scalar", 256) ** -0.5
        a = attention(q, k, v, scale, tc.get("attn_logit_softcapping") if gen in (2, 3) else None, window)
        tr(i, "attention output before o_proj", a)
        a = lin(a, pre + "self_attn.o_proj.weight")
        tr(i, "o_proj output", a)

        def mlp(z):
            g = gelu_tanh(lin(z, pre + "mlp.gate_proj.weight"))
            return lin(g * lin(z, pre + "mlp.up_proj.weight"), pre + "mlp.down_proj.weight")

        if gen == 1 and MUT == "gemma1_norm_as_post_attn":  # the Llama-naming trap, misread
            x = x + norm(a, pre + "post_attention_layernorm.weight")
            x = x + mlp(x)
        elif gen == 1:  # post_attention_layernorm is the pre-MLP norm in Gemma 1
            x = x + a
            x = x + mlp(norm(x, pre + "post_attention_layernorm.weight"))
        else:
            x = x + norm(a, pre + "post_attention_layernorm.weight")
            res = x
            m = mlp(norm(x, pre + "pre_feedforward_layernorm.weight"))
            if gen == 4 and tc.get("enable_moe_block"):
                m1 = norm(m, pre + "post_feedforward_layernorm_1.weight")
                r_in = norm(res, pre + "pre_feedforward_layernorm_2.weight") if MUT == "router_on_normed_input" else res
                z = rms(r_in, eps) * w[pre + "router.scale"] * H ** -0.5
                lg = z @ w[pre + "router.proj.weight"].T
                pr = np.exp(lg - lg.max(-1, keepdims=True))
                pr /= pr.sum(-1, keepdims=True)
                k_top = tc["top_k_experts"]
                idx = np.argsort(-pr, axis=-1, kind="stable")[:, :k_top]
                wt = np.take_along_axis(pr, idx, -1)
                # (Skipping this renormalisation would be invisible: post_feedforward_layernorm_2
                # normalises each token's expert sum, so a per-token factor cancels up to eps.)
                wt = wt / wt.sum(-1, keepdims=True)
                if MUT != "no_per_expert_scale":
                    wt = wt * w[pre + "router.per_expert_scale"][idx]
                e_in = norm(res, pre + "pre_feedforward_layernorm_2.weight")
                gu, dn = w[pre + "experts.gate_up_proj"], w[pre + "experts.down_proj"]
                Ie = dn.shape[-1]
                m2 = np.zeros_like(res)
                for tpos in range(T):
                    for s in range(k_top):
                        e = idx[tpos, s]
                        y = gu[e] @ e_in[tpos]
                        m2[tpos] += wt[tpos, s] * (dn[e] @ (gelu_tanh(y[:Ie]) * y[Ie:]))
                m = m1 + norm(m2, pre + "post_feedforward_layernorm_2.weight")
            x = res + norm(m, pre + "post_feedforward_layernorm.weight")
            if P:
                g = gelu_tanh(lin(x, pre + "per_layer_input_gate.weight")) * ple[:, i, :]
                x = x + norm(lin(g, pre + "per_layer_projection.weight"), pre + "post_per_layer_input_norm.weight")
            if gen == 4 and MUT != "no_layer_scalar":
                x = x * w[pre + "layer_scalar"]
        tr(i, "layer output", x)
        hidden.append(x)

    x = norm(x, "norm.weight")
    hidden[-1] = x  # fixture layout: the last entry is the final-norm output
    logits = x @ w.get("lm_head.weight", E).T
    cap = tc.get("final_logit_softcapping") if gen >= 2 else None
    if cap and MUT != "no_final_softcap":
        logits = cap * np.tanh(logits / cap)
    return logits, hidden


# --------------------------------------------------------------------------------------------
# Comparison against a fixture


def check(d):
    tc, w = load_model(d)
    with open(os.path.join(d, "expected.json")) as f:
        exp = json.load(f)
    ids = exp["prompt_tokens"]
    logits, hidden = forward(tc, w, ids)
    ref = np.array(exp["logits"])
    diff = float(np.abs(logits - ref).max())
    argmax_ok = bool((logits.argmax(-1) == ref.argmax(-1)).all())
    first_bad = None
    for li, hs in enumerate(exp["hidden_states"]):
        hd = float(np.abs(hidden[li] - np.array(hs)).max())
        if hd > 1e-3 * max(1.0, float(np.abs(np.array(hs)).max())) and first_bad is None:
            first_bad = (li, hd, hidden[li][0, :4], np.array(hs)[0, :4])
    seq = list(ids)
    for _ in range(len(exp["greedy_tokens"])):
        lg, _ = forward(tc, w, seq)
        seq.append(int(lg[-1].argmax()))
    greedy = seq[len(ids):]
    last_diff = float(np.abs(lg[-1] - np.array(exp["greedy_logits_last"])).max())
    ok = diff <= 1e-3 and last_diff <= 1e-3 and greedy == exp["greedy_tokens"] and first_bad is None
    print(f"{'OK  ' if ok else 'FAIL'} {exp['name']:<18} logits max|diff| {diff:.2e}  last greedy step {last_diff:.2e}  "
          f"greedy {'equal' if greedy == exp['greedy_tokens'] else 'DIFFERENT'}  per-position argmax "
          f"{'equal' if argmax_ok else 'DIFFERENT'}  hidden states checked {len(exp['hidden_states'])}")
    if first_bad:
        li, hd, mine, theirs = first_bad
        print(f"     first drifting hidden state [{li}] max|diff| {hd:.3g}: mine {mine} vs expected {theirs}")
    if greedy != exp["greedy_tokens"]:
        print(f"     greedy mine {greedy}\n     expected    {exp['greedy_tokens']}")
    return ok


MUTATIONS = ["norm_convention_swapped", "embed_unscaled", "rope_adjacent", "no_rope_scaling", "gqa_tiled",
             "no_attn_softcap", "no_final_softcap", "no_sliding_window", "window_plus_one", "scale_head_dim",
             "proportional_exponent_2n", "kv_share_one_to_one", "no_v_norm", "ple_no_context",
             "no_per_expert_scale", "router_on_normed_input", "no_layer_scalar", "gemma1_norm_as_post_attn"]


def mutation_table(dirs):
    """For every deliberate bug, the max logit diff it causes per fixture ('.' = below 1e-3,
    i.e. that fixture does not exercise the feature). Every bug must be caught by some fixture."""
    global MUT
    names = [os.path.basename(os.path.normpath(d)) for d in dirs]
    loaded = [(load_model(d), json.load(open(os.path.join(d, "expected.json")))) for d in dirs]
    print(f"{'mutation':<26}" + "".join(f"{n[:12]:>13}" for n in names))
    all_caught = True
    for m in MUTATIONS:
        MUT = m
        row, caught = [], False
        for (tc, w), exp in loaded:
            try:
                lg, _ = forward(tc, w, exp["prompt_tokens"])
            except ValueError:  # e.g. a consumer layer handed K/V of the wrong head_dim
                caught = True
                row.append(f"{'shape error':>13}")
                continue
            diff = float(np.abs(lg - np.array(exp["logits"])).max())
            caught |= diff > 1e-3
            row.append(f"{diff:13.2g}" if diff > 1e-3 else f"{'.':>13}")
        all_caught &= caught
        print(f"{m:<26}" + "".join(row) + ("" if caught else "   NOT CAUGHT"))
    MUT = None
    return all_caught


def main(argv):
    global DT
    args = [a for a in argv[1:] if not a.startswith("--")]
    if "--f32" in argv:
        DT = np.float32
    dirs = args or sorted(os.path.join(FIXTURES, n) for n in os.listdir(FIXTURES)
                          if os.path.isfile(os.path.join(FIXTURES, n, "expected.json")))
    dump = [a for a in argv if a.startswith("--dump=")]
    if dump:
        global TRACE_LAYER
        TRACE_LAYER = int(dump[0].split("=", 1)[1])
        for d in dirs:
            tc, w = load_model(d)
            ids = json.load(open(os.path.join(d, "expected.json")))["prompt_tokens"]
            TRACE.clear()
            forward(tc, w, ids)
            print(f"{os.path.basename(os.path.normpath(d))} layer {TRACE_LAYER}: first 4 values at positions 0 and {len(ids) - 1}")
            for label, a in TRACE:
                a = np.asarray(a).reshape(a.shape[0], -1)
                print(f"  {label:<40} {np.array2string(a[0, :4], precision=6)}  {np.array2string(a[-1, :4], precision=6)}")
        return 0
    if "--mutations" in argv:
        return 0 if mutation_table(dirs) else 1
    results = [check(d) for d in dirs]
    print(f"{sum(results)}/{len(results)} fixtures reproduced ({np.dtype(DT).name})")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
