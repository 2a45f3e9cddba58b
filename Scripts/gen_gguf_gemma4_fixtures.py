#!/usr/bin/env python3
"""Writes the three Gemma 4 Hugging Face fixtures (Tests/Fixtures/hf/gemma4_*) as GGUF files
(Tests/Fixtures/gguf_gemma4/*.gguf), laid out as llama.cpp's converter lays Gemma 4 out
(GEMMA_SPEC §4.3, A1.3): general.architecture gemma4, tensor names per gguf 0.19.0
(per_layer_token_embd, blk.N.inp_gate / proj / post_norm, blk.N.layer_output_scale,
ffn_gate_inp(.scale), ffn_gate_up_exps, ffn_down_exps(.scale), pre_ffw_norm_2, post_ffw_norm_1/2),
norms NOT offset (Gemma 4 stores the multiplier), no k/v tensors in KV-shared layers, no attn_v in
K = V full layers, rope_freqs.weight = 1.0 for the rotated pairs then 1e30, and the metadata keys
of A1.3: per-layer head_count_kv / feed_forward_length arrays where layers differ, key_length
(full-layer head dim) and key_length_swa, a per-layer bool sliding_window_pattern (true =
sliding), shared_kv_layers, embedding_length_per_layer_input, expert_* counts,
rope.freq_base(_swa), final_logit_softcapping.

All tensors are F32, i.e. exactly the weights of the HF fixture: the reference outputs are that
fixture's expected.json (transformers), so the test checks the GGUF mapping, not quantization.

  python3 Scripts/gen_gguf_gemma4_fixtures.py
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("bench")

import json
import os
import sys

import numpy as np
import gguf
from gguf import GGUFWriter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reference_forward import load_model  # noqa: E402  (its own small safetensors reader)

HF = os.path.join(HERE, "..", "Tests", "Fixtures", "hf")
OUT = os.path.join(HERE, "..", "Tests", "Fixtures", "gguf_gemma4")

LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
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
    "layer_scalar": "layer_output_scale.weight",
    "per_layer_input_gate.weight": "inp_gate.weight",
    "per_layer_projection.weight": "proj.weight",
    "post_per_layer_input_norm.weight": "post_norm.weight",
    "router.proj.weight": "ffn_gate_inp.weight",
    "router.scale": "ffn_gate_inp.scale",
    "router.per_expert_scale": "ffn_down_exps.scale",
    "experts.gate_up_proj": "ffn_gate_up_exps.weight",
    "experts.down_proj": "ffn_down_exps.weight",
    "pre_feedforward_layernorm_2.weight": "pre_ffw_norm_2.weight",
    "post_feedforward_layernorm_1.weight": "post_ffw_norm_1.weight",
    "post_feedforward_layernorm_2.weight": "post_ffw_norm_2.weight",
}
TOP = {
    "embed_tokens.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "embed_tokens_per_layer.weight": "per_layer_token_embd.weight",
    "per_layer_model_projection.weight": "per_layer_model_proj.weight",
    "per_layer_projection_norm.weight": "per_layer_proj_norm.weight",
}


def convert(name):
    tc, w = load_model(os.path.join(HF, name))
    L, H, nq = tc["num_hidden_layers"], tc["hidden_size"], tc["num_attention_heads"]
    types = tc["layer_types"]
    plc = {int(k): v for k, v in (tc.get("per_layer_config") or {}).items()}
    head_dim = [plc.get(i, {}).get("head_dim", tc["head_dim"]) for i in range(L)]
    kv = [plc.get(i, {}).get("num_key_value_heads", tc["num_key_value_heads"]) for i in range(L)]
    first_shared = L - (tc.get("num_kv_shared_layers") or 0)
    ffn = [tc["intermediate_size"] * (2 if tc.get("use_double_wide_mlp") and i >= first_shared else 1) for i in range(L)]
    full = types.index("full_attention")
    swa = types.index("sliding_attention")

    out = GGUFWriter(os.path.join(OUT, name + ".gguf"), "gemma4")
    out.add_context_length(tc["max_position_embeddings"])
    out.add_embedding_length(H)
    out.add_block_count(L)
    out.add_feed_forward_length(ffn if len(set(ffn)) > 1 else ffn[0])
    out.add_head_count(nq)
    out.add_head_count_kv(kv if len(set(kv)) > 1 else kv[0])
    out.add_key_length(head_dim[full])
    out.add_value_length(head_dim[full])
    out.add_key_length_swa(head_dim[swa])
    out.add_value_length_swa(head_dim[swa])
    out.add_layer_norm_rms_eps(tc["rms_norm_eps"])
    rp = tc["rope_parameters"]
    out.add_rope_freq_base(rp["full_attention"]["rope_theta"])
    out.add_rope_freq_base_swa(rp["sliding_attention"]["rope_theta"])
    out.add_rope_dimension_count(head_dim[full])
    out.add_rope_dimension_count_swa(head_dim[swa])
    out.add_sliding_window(tc["sliding_window"])
    out.add_sliding_window_pattern([t == "sliding_attention" for t in types])
    out.add_shared_kv_layers(tc.get("num_kv_shared_layers") or 0)
    out.add_embedding_length_per_layer_input(tc.get("hidden_size_per_layer_input") or 0)
    out.add_final_logit_softcapping(tc["final_logit_softcapping"])
    if tc.get("enable_moe_block"):
        out.add_expert_count(tc["num_experts"])
        out.add_expert_used_count(tc["top_k_experts"])
        out.add_expert_feed_forward_length(tc["moe_intermediate_size"])
    out.add_bos_token_id(2)
    out.add_eos_token_id(1)

    # Proportional RoPE as per-pair frequency divisors over the whole full-layer head.
    n_rot = int(rp["full_attention"].get("partial_rotary_factor", 1.0) * head_dim[full] // 2)
    freqs = np.full(head_dim[full] // 2, 1e30, dtype=np.float32)
    freqs[:n_rot] = 1.0
    out.add_tensor("rope_freqs.weight", freqs)

    for hf, a in sorted(w.items()):
        if hf in TOP:
            g = TOP[hf]
        else:
            parts = hf.split(".")
            assert parts[0] == "layers", hf
            g = f"blk.{parts[1]}.{LAYER['.'.join(parts[2:])]}"
        out.add_tensor(g, np.ascontiguousarray(a.astype(np.float32)))
    out.write_header_to_file()
    out.write_kv_data_to_file()
    out.write_tensors_to_file()
    out.close()
    print(f"{name}.gguf: {len(w) + 1} tensors, {os.path.getsize(os.path.join(OUT, name + '.gguf'))} bytes")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for n in ["gemma4_e_style", "gemma4_dense_keqv", "gemma4_moe"]:
        convert(n)
