#!/usr/bin/env python3
"""Greedy-generation reference from llama.cpp (via llama-cpp-python) on the default model,
committed as Tests/Fixtures/llamacpp/greedy_reference.json. The Swift real-model tests run
`gemma-node generate --temp 0` on the same prompts at 1, 2 and 4 ranks and compare.

  pip install llama-cpp-python            # 0.3.36 was used
  python3 Scripts/gen_llamacpp_reference.py [path/to/model.gguf]

Model path: argument, else $GEMMA_NODE_MODEL, else ~/.cache/gemma-node/gemma-3-270m-q4_k_m.gguf.
On a busy machine set OMP_WAIT_POLICY=PASSIVE: ggml's OpenMP barriers otherwise spin against
the other load and a run that takes a minute on a quiet box takes half an hour.

Greedy here means the argmax of the raw logits (ties to the lower id), no repetition
penalties, no sampling: the prompt is evaluated with the low-level `eval` (logits_all), then
one token at a time, picking the argmax ourselves. Generation does not stop at end-of-turn or
EOS: all 32 steps are recorded (a comparison stops where either side ends).

Per prompt: name, text, chat (true: `text` is the user message, wrapped in Gemma's chat
template before tokenizing), prompt_tokens, and
  last_prompt_top: the 20 largest logits at the last prompt position ({id, logit}),
  tokens: the 32 greedy tokens,
  steps: per generated token, top3 (ids, best first) and margin (top-1 minus top-2 logit),
  variants: llama.cpp against itself. The same prompt under settings that only change
    rounding (flash attention on; an f32 instead of f16 KV cache; the prompt evaluated one
    token at a time instead of in one batch): per variant the largest |logit difference| over
    the reference's top-5 ids at the last prompt position, its top-5 ids, and how many of the
    32 greedy tokens it shares with the reference before the first difference. This measures
    how far two correct int8-activation implementations of this model drift apart.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("bench")

import json
import os
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama, __version__ as llama_cpp_version

from _run import llama_without_extra_buffer_types

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures",
                   "llamacpp", "greedy_reference.json")
N_GENERATE = 32
TOP_LAST = 20

LONG_PROMPT = (
    "The history of the printing press begins in the fifteenth century, when Johannes "
    "Gutenberg, a goldsmith from Mainz, combined several existing technologies into a system "
    "that could produce books far faster than scribes. Movable metal type, cast in a hand mould "
    "from an alloy of lead, tin and antimony, could be arranged into pages, inked with an "
    "oil-based ink, and pressed onto paper with a screw press adapted from those used for wine "
    "and olive oil. Within fifty years presses had spread to more than two hundred cities "
    "across Europe, and millions of volumes had been printed. The consequences were enormous. "
    "Knowledge that had been locked in a few monastic libraries became available to merchants, "
    "students and craftsmen. Vernacular languages gained standard spellings. Scientists could "
    "share exact diagrams and tables, and errors could be corrected in later editions instead "
    "of multiplying with every copy. Religious reformers used pamphlets to spread their "
    "arguments, and governments soon learned to license and censor printers. Some historians "
    "argue that the scientific revolution itself would have been impossible without the press, "
    "because it allowed observations to accumulate and be checked by readers who never met the "
    "authors. In summary, the single most important effect of the printing press was"
)

PROMPTS = [
    ("plain_capital", "The capital of France is", False),
    ("plain_story", "Once upon a time, in a small village by the sea, there lived", False),
    ("plain_list", "Here are three tips for staying healthy:\n1.", False),
    ("code_python", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n", False),
    ("code_c", "#include <stdio.h>\n\nint main(void) {\n", False),
    ("numbers", "2, 4, 8, 16, 32, 64,", False),
    ("cjk", "日本の首都は東京です。中国の首都は", False),
    ("accented", "La tour Eiffel est située à Paris. Elle a été construite en", False),
    ("long_printing_press", LONG_PROMPT, False),
    ("markup_turns", "<start_of_turn>user\nWhat is the boiling point of water?<end_of_turn>\n"
                     "<start_of_turn>model\n", False),
    ("chat_poem", "Write a short poem about the moon.", True),
    ("chat_explain", "Explain in two sentences why the sky is blue.", True),
]


def chat_text(user):
    # Gemma's template (GEMMA_SPEC §6): <bos> is written by the template, so tokenizing it
    # with add_bos=False gives exactly one BOS.
    return "<bos><start_of_turn>user\n" + user.strip() + "<end_of_turn>\n<start_of_turn>model\n"


def load(path, **overrides):
    args = dict(model_path=path, n_ctx=1024, n_batch=1024, n_ubatch=1024, n_threads=2,
                n_threads_batch=2, logits_all=True, verbose=False, seed=0)
    args.update(overrides)
    return Llama(**args)


def greedy(llm, ids, one_by_one=False):
    """Last-prompt-position logits and the greedy run: (last logits, tokens, steps)."""
    llm.reset()
    if one_by_one:
        for t in ids:
            llm.eval([t])
    else:
        llm.eval(ids)
    last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    tokens, steps = [], []
    logits = last
    for _ in range(N_GENERATE):
        # Stable sort on the negated logits: ties go to the lower id (our engine's rule).
        order = np.argsort(-logits, kind="stable")[:3]
        tok = int(order[0])
        steps.append({"top3": [int(i) for i in order],
                      "margin": float(logits[order[0]] - logits[order[1]])})
        tokens.append(tok)
        llm.eval([tok])
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    return last, tokens, steps


def main():
    llama_without_extra_buffer_types()
    path = (sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get("GEMMA_NODE_MODEL") \
        or os.path.expanduser("~/.cache/gemma-node/gemma-3-270m-q4_k_m.gguf")
    llm = load(path)
    # GGML_TYPE_F32 = 0 for the KV cache (the default is f16).
    variants = {"flash_attention": (load(path, flash_attn=True), False),
                "kv_cache_f32": (load(path, type_k=0, type_v=0), False),
                "prompt_one_token_at_a_time": (llm, True)}
    entries = []
    for name, text, chat in PROMPTS:
        if chat:
            ids = llm.tokenize(chat_text(text).encode("utf-8"), add_bos=False, special=True)
        else:
            ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        assert len(ids) + N_GENERATE <= 1024
        last, tokens, steps = greedy(llm, ids)
        order = np.argsort(-last, kind="stable")[:TOP_LAST]
        last_top = [{"id": int(i), "logit": float(last[i])} for i in order]
        text_out = llm.detokenize(tokens).decode("utf-8", errors="replace")
        spread = {}
        for vname, (vllm, one_by_one) in variants.items():
            vlast, vtokens, _ = greedy(vllm, ids, one_by_one)
            shared = next((k for k in range(N_GENERATE) if vtokens[k] != tokens[k]), N_GENERATE)
            spread[vname] = {"max_abs_top5_logit_diff": float(max(abs(vlast[i] - last[i]) for i in order[:5])),
                             "top5": [int(i) for i in np.argsort(-vlast, kind="stable")[:5]],
                             "greedy_tokens_shared": shared}
        worst = max(v["max_abs_top5_logit_diff"] for v in spread.values())
        print(f"{name}: {len(ids)} prompt tokens -> {text_out!r}; llama.cpp variants drift up to {worst:.3f}",
              file=sys.stderr)
        entries.append({"name": name, "text": text, "chat": chat, "prompt_tokens": [int(i) for i in ids],
                        "last_prompt_top": last_top, "tokens": tokens, "steps": steps,
                        "detokenized": text_out, "variants": spread})
    doc = {
        "generator": "Scripts/gen_llamacpp_reference.py",
        "llama_cpp_python": llama_cpp_version,
        "model": os.path.basename(path),
        "n_threads": 2,
        "use_extra_bufts": False,
        "greedy": "argmax of raw logits, ties to the lower id, no penalties",
        "prompts": entries,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(entries)} prompts to {os.path.normpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
