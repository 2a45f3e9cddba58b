#!/usr/bin/env python3
"""Generate the golden Hugging Face fixtures under Tests/Fixtures/hf/.

Each fixture is a tiny random-weight Gemma model (Gemma 1, 2, 3, 3-multimodal, 4) saved with
`save_pretrained`, plus an `expected.json` holding float32 reference logits at every prompt
position, 16 greedy tokens, the logits of the last greedy step and the per-layer hidden states,
all computed by transformers (eager attention) from the directory as saved and re-loaded.

Deterministic: every fixture seeds torch from a fixed per-fixture seed, so running
`python3 Scripts/gen_hf_fixtures.py` again rewrites the same bytes (for the same torch and
transformers versions). `python3 Scripts/gen_hf_fixtures.py NAME ...` regenerates only those.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("fixtures")


import json
import math
import os
import shutil
import sys
import tempfile

import torch
import transformers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    Gemma4Config,
    Gemma4ForCausalLM,
    Gemma4ForConditionalGeneration,
    Gemma4TextConfig,
    Gemma4VisionConfig,
    GemmaConfig,
    GemmaForCausalLM,
    SiglipVisionConfig,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "hf")
VOCAB = 256
HIDDEN = 64
PROMPT_LEN = 16
NEW_TOKENS = 16
EOS = 1
# A greedy step whose top-2 logits are closer than this is considered a near-tie that an
# implementation with ~1e-5 float32 error could legitimately flip; such prompts are re-drawn.
MIN_GREEDY_MARGIN = 2e-3
# Same idea for the MoE router: the k-th and (k+1)-th expert probabilities must differ by this.
MIN_ROUTER_MARGIN = 1e-4
MIN_DISTINCT = 5

torch.set_num_threads(1)  # keep results independent of the machine's core count


# --------------------------------------------------------------------------------------------
# Weight randomisation


def randomise(model, seed, norm_style, post_norms, embed_std=0.05, final_norm=8.0, post_norm=2.0,
              out_gain=1.0, qk_gain=1.0, qk_norm=1.0):
    """Overwrite every stored parameter/buffer with random values.

    Why these scales: with tied embeddings and random weights, the logit of the token that is
    already in the residual stream is sqrt(H) times larger than the others unless the layer
    branches dominate the embedding, and then greedy decoding repeats one token forever. So the
    embedding is small (std 0.05), the branches are made large (post-norm multipliers ~2, or
    output-projection gain for Gemma 1 which has no post-norms), and the final norm multiplier
    (~8) brings the logits back to a spread of several units so the soft-caps are non-linear.

    Norm weights: norm_style "offset" (Gemma 1-3, multiplier 1 + w) stores w = multiplier - 1,
    "plain" (Gemma 4, multiplier w) stores the multiplier. Every norm gets N(0, 0.1)-sized noise
    around its mean (mean multiplier 1 for ordinary pre-norms, i.e. w ~ N(0, 0.1) for Gemma 1-3),
    so a (1 + w) vs w confusion or a missing norm changes the logits visibly.
    post_norms: names of the norms that scale a branch output (post_attention_layernorm in
    Gemma 2+, post_feedforward_layernorm*, post_per_layer_input_norm).
    """
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std + mean

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=g, dtype=torch.float32) * (hi - lo) + lo

    def norm_weight(shape, multiplier):
        stored_mean = multiplier - (1.0 if norm_style == "offset" else 0.0)
        return normal(shape, 0.1 * max(1.0, multiplier / 2), stored_mean)

    persistent = dict(model.state_dict(keep_vars=True))
    seen = set()
    with torch.no_grad():
        # lm_head.weight last: when tied it is the same tensor as embed_tokens and must keep the embedding init.
        for name in sorted(persistent, key=lambda n: (n.startswith("lm_head"), n)):
            t = persistent[name]
            if id(t) in seen or not t.is_floating_point():
                continue
            seen.add(id(t))
            shape = t.shape
            leaf = name.split(".")[-2] if name.endswith(".weight") else name.split(".")[-1]
            if "vision_tower" in name or "multi_modal_projector" in name:
                v = normal(shape, 0.02 if len(shape) >= 2 else 0.1, 1.0 if "norm" in leaf and len(shape) == 1 else 0.0)
            elif leaf in ("embed_tokens", "embed_tokens_per_layer"):
                v = normal(shape, embed_std if leaf == "embed_tokens" else 0.25)
            elif leaf == "layer_scalar":
                v = uniform(shape, 0.5, 1.5)
            elif name.endswith("router.scale"):
                v = normal(shape, 0.3, 1.0)
            elif name.endswith("router.per_expert_scale"):
                v = uniform(shape, 0.5, 1.5)
            elif name.endswith("router.proj.weight"):
                v = normal(shape, 2.0)  # router logits spread of ~2: decisive but non-trivial top-k
            elif "norm" in leaf and len(shape) == 1:
                if name in ("model.norm.weight", "model.language_model.norm.weight"):
                    v = norm_weight(shape, final_norm)
                elif leaf in post_norms:
                    v = norm_weight(shape, post_norm)
                elif leaf in ("q_norm", "k_norm"):
                    v = norm_weight(shape, qk_norm)
                else:
                    v = norm_weight(shape, 1.0)
            elif len(shape) >= 2:
                gain = 1.0
                if leaf in ("o_proj", "down_proj", "per_layer_projection"):
                    gain = out_gain
                elif leaf in ("q_proj", "k_proj"):
                    gain = qk_gain
                v = normal(shape, gain / math.sqrt(shape[-1]))
            else:
                v = normal(shape, 0.1)
            t.copy_(v.to(t.dtype))


# --------------------------------------------------------------------------------------------
# Reference computation


def fmt(x):
    """Shortest text that round-trips a float32 value."""
    return float(f"{float(x):.9g}")


def tolist(t, digits=9):
    return [float(f"{v:.{digits}g}") for v in t.detach().to(torch.float32).reshape(-1).tolist()]


def causal_lm(model):
    """The object whose forward maps input_ids -> logits (text path)."""
    return model


def full_forward(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    return out


def manual_greedy(model, prompt, n):
    """Greedy decoding by re-running the full forward each step (no KV cache)."""
    ids = list(prompt)
    margins = []
    last = None
    for _ in range(n):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].float()
        top2 = torch.topk(logits, 2).values
        margins.append(float(top2[0] - top2[1]))
        ids.append(int(torch.argmax(logits)))
        last = logits
    return ids[len(prompt):], last, min(margins)


def generate_greedy(model, prompt, n):
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False,
            max_new_tokens=n,
            min_new_tokens=0,
            eos_token_id=None,
            pad_token_id=0,
            repetition_penalty=1.0,
            top_k=None,
            top_p=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
    toks = out.sequences[0, len(prompt):].tolist()
    return toks, out.logits[-1][0].float()


def router_margin(model, ids):
    """Smallest gap between the k-th and (k+1)-th expert probability over all tokens/layers."""
    probs = []
    hooks = []
    for m in model.modules():
        if type(m).__name__ == "Gemma4TextRouter":
            k = m.config.top_k_experts
            hooks.append(m.register_forward_hook(lambda mod, inp, out, k=k: probs.append((out[0], k))))
    if not hooks:
        return None
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]), use_cache=False)
    for h in hooks:
        h.remove()
    gap = float("inf")
    for p, k in probs:
        s = torch.sort(p.float(), dim=-1, descending=True).values
        gap = min(gap, float((s[..., k - 1] - s[..., k]).min()))
    return gap


def decoder_parts(model):
    inner = model.model
    if hasattr(inner, "language_model"):
        inner = inner.language_model
    return inner.layers, inner.norm


def check_hidden_layout(model, prompt, out):
    """Pin down what output_hidden_states returns in this transformers version (README documents it):
    [0] scaled embeddings, [i] output of layer i-1 for i < L, [L] final-norm output of the last layer."""
    layers, norm = decoder_parts(model)
    captured = []
    hooks = [l.register_forward_hook(lambda mod, inp, o: captured.append(o[0] if isinstance(o, tuple) else o))
             for l in layers]
    with torch.no_grad():
        model(input_ids=torch.tensor([prompt]), use_cache=False)
        final = norm(captured[-1])
    for h in hooks:
        h.remove()
    hs = out.hidden_states
    L = len(layers)
    assert len(hs) == L + 1, f"expected {L + 1} hidden states, got {len(hs)}"
    for i in range(1, L):
        assert torch.equal(hs[i], captured[i - 1]), f"hidden_states[{i}] is not the output of layer {i - 1}"
    assert float((hs[L] - final).abs().max()) <= 1e-6, "hidden_states[L] is not norm(last layer output)"


def draw_prompt(seed):
    g = torch.Generator().manual_seed(seed)
    # BOS (2) then ids from 3..VOCAB-1: no pad/eos inside the prompt.
    return [2] + (torch.randint(3, VOCAB, (PROMPT_LEN - 1,), generator=g)).tolist()


# --------------------------------------------------------------------------------------------
# Fixture builder


def dir_size(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def build_fixture(spec):
    name = spec["name"]
    out_dir = os.path.join(ROOT, name)
    seed = spec["seed"]
    save_dtype = spec.get("dtype", torch.float32)
    cls = spec["cls"]

    for attempt in range(20):
        torch.manual_seed(seed + 1000 * attempt)
        model = cls(spec["config"]()).eval()
        randomise(model, seed + 1000 * attempt, spec["norm_style"], spec["post_norms"], **spec.get("init", {}))
        model = model.to(save_dtype)
        tmp = tempfile.mkdtemp(prefix=f"fixture-{name}-")
        save_kwargs = {"max_shard_size": spec["max_shard_size"]} if "max_shard_size" in spec else {}
        model.save_pretrained(tmp, **save_kwargs)

        # Reference: reload what was written, upcast to float32 (for bf16/f16 fixtures this uses
        # the ROUNDED weights), eager attention so soft-capping is applied exactly as specified.
        ref = cls.from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager").eval()
        ref_orig = model.to(torch.float32).eval()
        ref_orig.set_attn_implementation("eager")

        prompt = draw_prompt(seed + 7 + 1000 * attempt)
        out = full_forward(ref, prompt)
        logits = out.logits[0].float()
        greedy, last_logits, margin = manual_greedy(ref, prompt, NEW_TOKENS)
        rmargin = router_margin(ref, prompt + greedy)
        # A greedy run stuck on one or two tokens would barely exercise the KV cache: ask for variety.
        ok = (margin >= MIN_GREEDY_MARGIN and EOS not in greedy and len(set(greedy)) >= MIN_DISTINCT
              and (rmargin is None or rmargin >= MIN_ROUTER_MARGIN))
        if ok:
            break
        print(f"  {name}: attempt {attempt} rejected (greedy margin {margin:.2e}, router margin {rmargin}, "
              f"eos in greedy {EOS in greedy}, distinct {len(set(greedy))}); re-drawing weights and prompt")
        shutil.rmtree(tmp)
    else:
        raise RuntimeError(f"{name}: no acceptable draw in 20 attempts")

    # Self-checks ---------------------------------------------------------------------------
    if save_dtype == torch.float32:
        # The in-memory model and the re-loaded directory must give the same logits.
        with torch.no_grad():
            orig_logits = ref_orig(input_ids=torch.tensor([prompt]), use_cache=False).logits[0].float()
        reload_diff = float((orig_logits - logits).abs().max())
        reload_what = "logits"
        assert reload_diff <= 1e-5, f"{name}: reloaded logits differ from the in-memory model by {reload_diff}"
    else:
        # For bf16/f16 the in-memory model also holds rounded RoPE buffers, so compare weights instead:
        # the float32 reference must hold exactly the rounded values that were written.
        saved = model.state_dict()
        loaded = ref.state_dict()
        reload_diff = max(float((saved[k].float() - loaded[k]).abs().max()) for k in saved if k in loaded)
        reload_what = "weights"
        assert reload_diff == 0.0, f"{name}: re-loaded float32 weights differ from the saved ones by {reload_diff}"
    gen_tokens, gen_last = generate_greedy(ref, prompt, NEW_TOKENS)
    assert gen_tokens == greedy, f"{name}: generate {gen_tokens} != manual argmax loop {greedy}"
    gen_diff = float((gen_last - last_logits).abs().max())
    check_hidden_layout(ref, prompt, out)

    # Hidden states are for debugging only: 7 significant digits (relative error 5e-8) keep the files small.
    hidden = [[tolist(row, 7) for row in hs[0]] for hs in out.hidden_states]
    if spec.get("omit_hidden"):
        hidden = []  # derived fixture: see its notes for where the per-layer states are
    cap = spec.get("final_cap")
    # Logits before the final soft-cap: the final-norm output (last hidden state) times the tied head.
    head = ref.get_output_embeddings().weight.detach().float()
    precap = out.hidden_states[-1][0].detach().float() @ head.T
    stats = {
        "precap_logit_std": fmt(precap.std()),
        "precap_logit_absmax": fmt(precap.abs().max()),
        "logit_min": fmt(logits.min()),
        "logit_max": fmt(logits.max()),
        "logit_std": fmt(logits.std()),
        "min_greedy_top2_margin": fmt(margin),
    }
    if cap is None:
        assert float((precap - logits).abs().max()) <= 1e-4, f"{name}: logits are not final-norm output x head"
    else:
        assert float((cap * torch.tanh(precap / cap) - logits).abs().max()) <= 1e-4, f"{name}: soft-cap mismatch"
    if rmargin is not None:
        stats["min_router_topk_margin"] = fmt(rmargin)
    expected = {
        "name": name,
        "generation": spec["generation"],
        "dtype": {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[save_dtype],
        "prompt_tokens": prompt,
        "logits": [tolist(row) for row in logits],
        "greedy_tokens": greedy,
        "greedy_logits_last": tolist(last_logits),
        "hidden_states": hidden,
        "stats": stats,
        "notes": spec["notes"],
    }

    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    shutil.copytree(tmp, out_dir)
    shutil.rmtree(tmp)
    os.chmod(out_dir, 0o755)
    for f in os.listdir(out_dir):
        os.chmod(os.path.join(out_dir, f), 0o644)
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")

    files = sorted(os.listdir(out_dir))
    capinfo = (f", final cap {cap}: pre-cap std {float(precap.std()):.2f}, absmax {float(precap.abs().max()):.2f}; "
               f"share of |pre-cap| > cap/2: {float((precap.abs() > cap / 2).float().mean()):.2f}") if cap else ""
    print(f"{name}: files {files}, {dir_size(out_dir) / 1e6:.2f} MB")
    print(f"  logits range [{stats['logit_min']}, {stats['logit_max']}] std {stats['logit_std']}{capinfo}")
    print(f"  reload max|diff| ({reload_what}) {reload_diff:.3g}; generate() vs manual loop: tokens equal, last-logits max|diff| {gen_diff:.3g}")
    print(f"  greedy {greedy} (min top-2 margin {margin:.3g})" + (f", router margin {rmargin:.3g}" if rmargin is not None else ""))
    return out_dir


# --------------------------------------------------------------------------------------------
# Fixture specifications


def gemma1_mqa():
    return GemmaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=256, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
    )


def gemma2_softcap():
    return Gemma2Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
        sliding_window=4, attn_logit_softcapping=3.0, final_logit_softcapping=5.0,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        max_position_embeddings=256, rms_norm_eps=1e-6,
    )


def gemma3_text(num_layers=7, pattern=6):
    return Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
        sliding_window=5, sliding_window_pattern=pattern,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        max_position_embeddings=256, rms_norm_eps=1e-6,
    )


def gemma3_multimodal():
    vision = SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_channels=3, image_size=28, patch_size=14,
    )
    return Gemma3Config(
        text_config=gemma3_text(num_layers=2, pattern=2).to_dict(), vision_config=vision.to_dict(),
        mm_tokens_per_image=4, boi_token_index=253, eoi_token_index=254, image_token_index=255,
    )


# Gemma 4 fixtures use a 64-wide dense MLP (not 128) so that all fixtures together stay under 8 MB.
G4_INTERMEDIATE = 64


def gemma4_e_style():
    # Layers: S S F S S F. num_kv_shared_layers 2 -> layers 4 (sliding) and 5 (full) are consumers;
    # producers are the last sliding layer before 4 (layer 3) and the last full one (layer 2).
    return Gemma4TextConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=G4_INTERMEDIATE, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, global_head_dim=32,
        layer_types=["sliding_attention", "sliding_attention", "full_attention",
                     "sliding_attention", "sliding_attention", "full_attention"],
        sliding_window=5, final_logit_softcapping=5.0,
        vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=16,
        num_kv_shared_layers=2, use_double_wide_mlp=True,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
        },
        max_position_embeddings=256, rms_norm_eps=1e-6,
    )


def gemma4_dense_keqv():
    return Gemma4TextConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=G4_INTERMEDIATE, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
        attention_k_eq_v=True, num_global_key_value_heads=1,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        sliding_window=5, final_logit_softcapping=5.0, hidden_size_per_layer_input=0,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
        },
        max_position_embeddings=256, rms_norm_eps=1e-6,
    )


def gemma4_dense_keqv_multimodal():
    # Released Gemma 4 checkpoints (31B included) are Gemma4ForConditionalGeneration: decoder in
    # text_config, tensors under model.language_model.*, plus vision tensors to skip.
    vision = Gemma4VisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, head_dim=8, patch_size=4, pooling_kernel_size=2, position_embedding_size=64,
    )
    return Gemma4Config(
        text_config=gemma4_dense_keqv().to_dict(), vision_config=vision.to_dict(), audio_config=None,
        boi_token_id=250, eoi_token_id=251, image_token_id=252, boa_token_id=253, eoa_token_index=254,
        audio_token_id=255, video_token_id=249,
    )


def gemma4_moe():
    return Gemma4TextConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=G4_INTERMEDIATE, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        sliding_window=5, final_logit_softcapping=5.0, hidden_size_per_layer_input=0,
        enable_moe_block=True, num_experts=8, top_k_experts=2, moe_intermediate_size=16,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
        },
        max_position_embeddings=256, rms_norm_eps=1e-6,
    )


COMMON_NOTE = ("Random weights (every tensor, norms included). Reference logits computed by transformers "
               f"{transformers.__version__} / torch {torch.__version__.split('+')[0]} in float32 with eager attention "
               "from the saved directory re-loaded with from_pretrained. greedy_tokens: 16 argmax steps after the "
               "prompt, no EOS stop, no penalties; greedy_logits_last are the logits that chose the 16th token. "
               "hidden_states[0] = scaled embeddings, hidden_states[i] = output of layer i-1 (see README for the last entry).")

POST_G23 = ("post_attention_layernorm", "post_feedforward_layernorm")
POST_G4 = POST_G23 + ("post_feedforward_layernorm_1", "post_feedforward_layernorm_2", "post_per_layer_input_norm")

SPECS = [
    dict(name="gemma1_mqa", generation="gemma", cls=GemmaForCausalLM, config=gemma1_mqa, seed=101,
         norm_style="offset", post_norms=(), init=dict(out_gain=3.0, qk_gain=1.5),
         notes="Gemma 1: 3 layers, nq 4 / nkv 1 (MQA), head_dim 16, RoPE 10000 on all layers, "
               "scale 1/sqrt(head_dim), post_attention_layernorm is the pre-MLP norm. " + COMMON_NOTE),
    dict(name="gemma2_softcap", generation="gemma2", cls=Gemma2ForCausalLM, config=gemma2_softcap, seed=202,
         norm_style="offset", post_norms=POST_G23, init=dict(qk_gain=2.0), final_cap=5.0,
         notes="Gemma 2: 4 layers S,F,S,F, nq 4 / nkv 2, head_dim 16, query_pre_attn_scalar 24, sliding_window 4 "
               "(shorter than the 16-token prompt), attention softcap 3.0, final softcap 5.0. " + COMMON_NOTE),
    dict(name="gemma3_pattern", generation="gemma3", cls=Gemma3ForCausalLM, config=gemma3_text, seed=303,
         norm_style="offset", post_norms=POST_G23, init=dict(qk_norm=2.0),
         notes="Gemma 3 text: 7 layers S,S,S,S,S,F,S (pattern 6), nq 4 / nkv 2, head_dim 16, QK-norm, "
               "query_pre_attn_scalar 24, sliding_window 5, RoPE full: linear factor 8 theta 1e6, sliding: theta 1e4. "
               + COMMON_NOTE),
    dict(name="gemma3_bf16", generation="gemma3", cls=Gemma3ForCausalLM, config=gemma3_text, seed=303,
         norm_style="offset", post_norms=POST_G23, init=dict(qk_norm=2.0), dtype=torch.bfloat16, omit_hidden=True,
         notes="Same architecture (and same random draw) as gemma3_pattern, saved in bfloat16. Reference logits are "
               "computed in float32 FROM THE ROUNDED bf16 WEIGHTS (saved model re-loaded with dtype=float32). "
               "hidden_states omitted (empty) to keep the fixtures small: debug per layer with gemma3_pattern. "
               + COMMON_NOTE),
    dict(name="gemma3_f16", generation="gemma3", cls=Gemma3ForCausalLM, config=gemma3_text, seed=303,
         norm_style="offset", post_norms=POST_G23, init=dict(qk_norm=2.0), dtype=torch.float16, omit_hidden=True,
         notes="Same architecture (and same random draw) as gemma3_pattern, saved in float16. Reference logits are "
               "computed in float32 FROM THE ROUNDED f16 WEIGHTS (saved model re-loaded with dtype=float32). "
               "hidden_states omitted (empty) to keep the fixtures small: debug per layer with gemma3_pattern. "
               + COMMON_NOTE),
    dict(name="gemma3_sharded", generation="gemma3", cls=Gemma3ForCausalLM, config=gemma3_text, seed=303,
         norm_style="offset", post_norms=POST_G23, init=dict(qk_norm=2.0), max_shard_size="450KB", omit_hidden=True,
         notes="Identical weights to gemma3_pattern, saved with a small max_shard_size so there are several "
               "model-0000x-of-0000y.safetensors files and model.safetensors.index.json. Expected values equal "
               "gemma3_pattern's; hidden_states omitted (empty): they are the ones in gemma3_pattern. " + COMMON_NOTE),
    dict(name="gemma3_multimodal", generation="gemma3", cls=Gemma3ForConditionalGeneration,
         config=gemma3_multimodal, seed=606, norm_style="offset", post_norms=POST_G23, init=dict(qk_norm=2.0),
         notes="Gemma3ForConditionalGeneration built by transformers itself (no hand-crafting): config.json has "
               "model_type gemma3 with the decoder in text_config (2 layers S,F: sliding_window_pattern 2); text "
               "tensors are named model.language_model.*, plus model.vision_tower.* and model.multi_modal_projector.* "
               "tensors a text-only loader must skip. Reference from the text path (token ids only). " + COMMON_NOTE),
    dict(name="gemma4_e_style", generation="gemma4", cls=Gemma4ForCausalLM, config=gemma4_e_style, seed=404,
         norm_style="plain", post_norms=POST_G4, final_cap=5.0,
         notes="Gemma 4 E-style: 6 layers S,S,F,S,S,F; PLE (hidden_size_per_layer_input 16); num_kv_shared_layers 2 "
               "(layer 4 sliding reuses layer 3, layer 5 full reuses layer 2); use_double_wide_mlp (consumers have "
               "intermediate 128, others 64); sliding head_dim 16, full head_dim 32 (per_layer_config); nq 4, nkv 1; "
               "proportional RoPE 0.25 on full layers; final softcap 5.0; random layer_scalar. " + COMMON_NOTE),
    dict(name="gemma4_dense_keqv", generation="gemma4", cls=Gemma4ForConditionalGeneration,
         config=gemma4_dense_keqv_multimodal, seed=505,
         norm_style="plain", post_norms=POST_G4, final_cap=5.0,
         notes="Gemma 4 dense, 31B-style: 3 layers S,S,F; intermediate 64; attention_k_eq_v with num_global_key_value_heads 1 "
               "(full layers: 1 KV head of dim 32, no v_proj, V = raw K) vs nkv 2 of dim 16 on sliding layers; no PLE; "
               "final softcap 5.0. Saved as Gemma4ForConditionalGeneration like the released checkpoints: config.json has "
               "model_type gemma4 with the decoder in text_config (written with per_layer_config), text tensors are "
               "model.language_model.*, plus model.vision_tower.* and model.embed_vision.* tensors (tiny vision "
               "tower, no audio) that a text-only loader must skip. Reference from token ids only. " + COMMON_NOTE),
    dict(name="gemma4_moe", generation="gemma4", cls=Gemma4ForCausalLM, config=gemma4_moe, seed=707,
         norm_style="plain", post_norms=POST_G4, final_cap=5.0,
         notes="Gemma 4 MoE, 26B-A4B-style: 3 layers S,S,F; dense MLP (64) plus an 8-expert top-2 MoE block "
               "(moe_intermediate_size 16) in every layer; random router.scale, per_expert_scale, layer_scalar; no PLE; "
               "final softcap 5.0. " + COMMON_NOTE),
]


def main(argv):
    wanted = set(argv[1:])
    names = [s["name"] for s in SPECS]
    unknown = wanted - set(names)
    if unknown:
        sys.exit(f"unknown fixture(s) {sorted(unknown)}; known: {names}")
    os.makedirs(ROOT, exist_ok=True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for spec in SPECS:
        if not wanted or spec["name"] in wanted:
            build_fixture(spec)
    total = sum(dir_size(os.path.join(ROOT, d)) for d in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, d)))
    print(f"total size of all fixtures: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv)
