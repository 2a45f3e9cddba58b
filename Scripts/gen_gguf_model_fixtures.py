#!/usr/bin/env python3
"""Writes tiny Gemma 1/2/3 *models* as GGUF files (Tests/Fixtures/gguf_models/), laid out the
way llama.cpp's converter lays them out, with reference logits from transformers.

Each is built from one of the Hugging Face fixtures in Tests/Fixtures/hf (gen_hf_fixtures.py):
  gemma1_mqa.gguf        general.architecture gemma,  F32 + F16 tensors
  gemma2_softcap.gguf    gemma2, soft-caps and a 4-token window, F32
  gemma3_pattern_q8.gguf gemma3, 5:1 layer pattern, linear RoPE x8 on global layers, no
                         rope.freq_base_swa (the loader must default it to 10000, as for the real
                         270M file), matrices Q8_0 (the embedding too), norms F32
What the converter does and this script copies (GEMMA_SPEC §4.3, A1.1, A1.2): tensor names
token_embd / blk.N.attn_q ... / output_norm, GGML dims [in, out], every `*norm.weight` stored
with +1 added, no query_pre_attn_scalar key (readers use head_dim), soft-caps written only when
set, `output.weight` absent when tied.

The reference: transformers (float32, eager) on the same weights the GGUF holds, i.e. with
query_pre_attn_scalar set to head_dim (the GGUF cannot say otherwise) and, for the Q8_0 file,
every quantized matrix replaced by its dequantized values. expected.json holds the logits at
every prompt position and 16 greedy tokens.

One more entry, "gemma3_pattern_quant_q8_0", is the reference for quantize-on-load
(`--quant q8_0` on the safetensors fixture gemma3_pattern): transformers with the fixture's own
config and every matrix round-tripped through gguf's Q8_0 quantizer.

  python3 Scripts/gen_gguf_model_fixtures.py
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("fixtures")

import json
import os

import numpy as np
import torch
import gguf
from gguf import GGUFWriter, GGMLQuantizationType as Q
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
HF = os.path.join(HERE, "..", "Tests", "Fixtures", "hf")
OUT = os.path.join(HERE, "..", "Tests", "Fixtures", "gguf_models")
NEW_TOKENS = 16

torch.set_num_threads(1)

# HF name (after "model.") -> GGUF name, per architecture.
def gguf_name(hf, arch):
    if hf == "embed_tokens.weight":
        return "token_embd.weight"
    if hf == "norm.weight":
        return "output_norm.weight"
    parts = hf.split(".")
    assert parts[0] == "layers", hf
    i, rest = parts[1], ".".join(parts[2:])
    table = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight" if arch == "gemma" else "post_attention_norm.weight",
        "pre_feedforward_layernorm.weight": "ffn_norm.weight",
        "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    return f"blk.{i}.{table[rest]}"


def build(src, dst, arch, qtype_of):
    model = AutoModelForCausalLM.from_pretrained(os.path.join(HF, src), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    cfg = model.config
    with open(os.path.join(HF, src, "expected.json")) as f:
        prompt = json.load(f)["prompt_tokens"]

    w = GGUFWriter(os.path.join(OUT, dst), arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    rope = cfg.rope_parameters
    if arch == "gemma3":
        full = rope["full_attention"]
        w.add_rope_freq_base(full["rope_theta"])
        if full.get("rope_type") == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(full["factor"])
        assert rope["sliding_attention"]["rope_theta"] == 10000.0  # the default a reader must apply
    else:
        w.add_rope_freq_base(rope["rope_theta"])
    if arch in ("gemma2", "gemma3"):
        w.add_sliding_window(cfg.sliding_window)
    if arch == "gemma2":
        w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)

    # The model transformers will run: same weights as the file holds.
    if arch in ("gemma2", "gemma3"):
        cfg.query_pre_attn_scalar = cfg.head_dim
    state = model.model.state_dict() if hasattr(model, "model") else model.state_dict()
    types = {}
    with torch.no_grad():
        for name, t in state.items():
            a = t.detach().float().numpy()
            g = gguf_name(name, arch)
            if name.endswith("norm.weight"):
                w.add_tensor(g, (a + 1.0).astype(np.float32))  # the converter bakes in the +1
                types[g] = "F32"
                continue
            q = qtype_of(g)
            if q == Q.F32:
                w.add_tensor(g, a.astype(np.float32))
            elif q == Q.F16:
                w.add_tensor(g, a.astype(np.float16))
                t.copy_(torch.from_numpy(a.astype(np.float16).astype(np.float32)))
            else:
                packed = gguf.quants.quantize(a, q)
                w.add_tensor(g, packed, raw_dtype=q)
                t.copy_(torch.from_numpy(gguf.quants.dequantize(packed, q).reshape(a.shape)))
            types[g] = q.name
    # The attention scale is read when the layers run, so the override above takes effect.
    for layer in model.model.layers:
        if arch != "gemma":
            layer.self_attn.scaling = cfg.query_pre_attn_scalar ** -0.5
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt]), use_cache=False).logits[0].float()
        ids = list(prompt)
        greedy = []
        for _ in range(NEW_TOKENS):
            nxt = int(model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].argmax())
            greedy.append(nxt)
            ids.append(nxt)
    return {
        "file": dst,
        "source_fixture": src,
        "architecture": arch,
        "tensor_types": types,
        "prompt_tokens": prompt,
        "logits": [[round(float(x), 6) for x in row] for row in logits],
        "greedy_tokens": greedy,
    }


def quantized_reference(src):
    model = AutoModelForCausalLM.from_pretrained(os.path.join(HF, src), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with open(os.path.join(HF, src, "expected.json")) as f:
        prompt = json.load(f)["prompt_tokens"]
    with torch.no_grad():
        for name, t in model.model.state_dict().items():
            if name.endswith("norm.weight"):
                continue
            a = t.detach().float().numpy()
            t.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(a, Q.Q8_0), Q.Q8_0).reshape(a.shape)))
        logits = model(input_ids=torch.tensor([prompt]), use_cache=False).logits[0].float()
    return {"source_fixture": src, "quantize": "q8_0", "prompt_tokens": prompt,
            "logits": [[round(float(x), 6) for x in row] for row in logits]}


def main():
    os.makedirs(OUT, exist_ok=True)
    out = {}
    out["gemma1_mqa"] = build("gemma1_mqa", "gemma1_mqa.gguf", "gemma",
                              lambda g: Q.F16 if ("ffn_" in g or "attn_output" in g) else Q.F32)
    out["gemma2_softcap"] = build("gemma2_softcap", "gemma2_softcap.gguf", "gemma2", lambda g: Q.F32)
    out["gemma3_pattern_q8"] = build("gemma3_pattern", "gemma3_pattern_q8.gguf", "gemma3", lambda g: Q.Q8_0)
    out["gemma3_pattern_quant_q8_0"] = quantized_reference("gemma3_pattern")
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
    for k, v in out.items():
        if "file" not in v:
            continue
        print(k, v["file"], os.path.getsize(os.path.join(OUT, v["file"])), "bytes; greedy", v["greedy_tokens"])


if __name__ == "__main__":
    main()
