#!/usr/bin/env python3
"""Reference token ids from llama.cpp (via llama-cpp-python) for the default model's
tokenizer, committed as Tests/Fixtures/tokenizer/llama_cpp_reference.json. The Swift tests
require identical ids for every string.

  pip install llama-cpp-python
  python3 Scripts/gen_tokenizer_reference.py [path/to/model.gguf]

Also writes tiny_tokenizer.json + tiny_tokenizer_expected.json (see write_tiny_hf_tokenizer).

Model path: argument, else $GEMMA_NODE_MODEL, else ~/.cache/gemma-node/gemma-3-270m-q4_k_m.gguf.
Each entry: text, ids (tokenize(text, add_bos=True, special=True)), ids_no_special
(add_bos=False, special=False: control markup stays text) and detokenized
(detokenize(ids) without special tokens).
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("fixtures")

import json
import os
import random
import sys

from llama_cpp import Llama, __version__ as llama_cpp_version

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures",
                   "tokenizer", "llama_cpp_reference.json")


def corpus():
    s = [
        "", " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", " \n", "\n ", "\r\n", "\r\n\r\n",
        "Hello", " Hello", "Hello ", "  Hello  ", "Hello world", "Hello, world!",
        "hello world", "HELLO WORLD", "Hello\nworld", "Hello\n\nworld", "Hello\tworld",
        "The quick brown fox jumps over the lazy dog.",
        "The capital of France is", "Once upon a time,", "Why is the sky blue?",
        "I can't believe it's not butter!", "Don't stop—won't stop.", "e.g. i.e. etc.",
        "Mr. Smith went to Washington D.C. on 4/5/2021 at 10:30am.",
        "user@example.com", "https://example.com/path?q=1&r=two#frag", "C:\\Users\\name\\file.txt",
        "1", "12", "123", "1234", "12345", "3.14159", "-42", "1,000,000", "1e-10", "0x1F",
        "2024-01-01T12:00:00Z", "$100.00", "100%", "42 is the answer", "Room 101, Floor 7",
        "pi ≈ 3.14", "a+b=c", "x^2 + y^2 = z^2", "∑_{i=1}^{n} i = n(n+1)/2", "α β γ δ ε",
        "café", "naïve", "résumé", "Zürich", "São Paulo", "El niño", "Ångström", "façade",
        "Crème brûlée", "Straße", "ﬁ ligature", "e\u0301 combining", "ä (precomposed) vs a\u0308",
        "Привет, мир!", "Ελληνικά", "עברית", "مرحبا بالعالم", "हिन्दी", "ภาษาไทย", "한국어 텍스트",
        "你好，世界！", "我爱自然语言处理。", "日本語のテキストです。", "東京タワー", "カタカナ", "ひらがな",
        "中文English混合text", "漢字かな交じり文", "𠀀𠀁 rare CJK", "🙂", "🙂🙂🙂", "Hello 🌍!",
        "👨‍👩‍👧‍👦 family", "🏳️‍🌈", "❤️", "👍🏽", "🇫🇷🇩🇪", "emoji at end 🎉", "🤖 robot",
        "\u200b zero width", "\u00a0non-breaking", "soft\u00adhyphen", "tab\there", "bell\x07",
        "\x00null", "\x7f del", "a\u2028b", "\ufeffBOM",
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
        "<bos>Hello", "<bos><bos>", "<eos>", "<pad><unk><mask>", "text<end_of_turn>more",
        "<start_of_turn>", "<end_of_turn>", "<start_of_turn>model", " <start_of_turn> ",
        "<start_of_turn >", "<start_of_turn", "start_of_turn>", "<<start_of_turn>>",
        "<unused0>", "<unused99>", "<unused6241>", "<unused6242>", "[multimodal]",
        "<start_of_image>", "<end_of_image>", "<table><tr><td>1</td></tr></table>",
        "<div class=\"x\">hi</div>", "<p>para</p>", "<br>", "</footer>", "<h1>Title</h1>",
        "<0x41>", "<0xFF>", "<0x0A>",
        "def f(x):\n    return x * 2\n",
        "for i in range(10):\n\tprint(i)\n",
        "int main(void) {\n  printf(\"hi\\n\");\n  return 0;\n}\n",
        "#include <stdio.h>\n", "if (a && b || !c) { x += 1; }", "let xs = [1, 2, 3].map { $0 * 2 }",
        "SELECT * FROM users WHERE id = 42;", "<?xml version=\"1.0\"?>", "{\"key\": [1, 2, {\"a\": null}]}",
        "fn main() { println!(\"{}\", 1); }", "const f = async (x) => await g(x);", "x = 1  # comment",
        "    indented four", "        indented eight", "\t\tdouble tab", "\t\t\t\t\tfive tabs",
        "mixed \t \t whitespace", "trailing spaces   ", "   leading spaces", "a b  c   d    e     f",
        "line1\nline2\nline3", "para1\n\n\npara2", "\n\n\n\n\n\n\n\n\n\n", " " * 31, " " * 32, " " * 40,
        "\n" * 31, "\n" * 32, "\n" * 45, "\t" * 31, "\t" * 33, " \n \n \n", "\n \n \n ",
        "a" * 100, "ab" * 60, "Supercalifragilisticexpialidocious",
        "Pneumonoultramicroscopicsilicovolcanoconiosis", "antidisestablishmentarianism",
        "Donaudampfschifffahrtsgesellschaftskapitän", "xqzjvkwpfh", "AAAAAAAAAAAAAAAAAAAAAAAA",
        "hello" * 30, "ThisIsCamelCaseIdentifier", "snake_case_identifier_name", "kebab-case-name",
        "...", "!!!", "???", "---", "___", "***", "~~~", "```python\nprint(1)\n```", "> quote",
        "- item\n- item2", "1. first\n2. second", "| a | b |\n|---|---|", "**bold** _it_",
        "¿Qué tal?", "¡Hola!", "«quotes»", "„German“", "‘single’ “double”", "…", "—", "–",
        "©®™", "°C", "½ ¼ ¾", "→ ← ↑ ↓", "✓ ✗", "★☆", "♠♣♥♦", "∞", "√2", "≠ ≤ ≥",
    ]
    rng = random.Random(20261129)
    words = ["the", "model", "token", "Gemma", "rank", "tensor", "parallel", "über", "日本",
             "🙂", "naïve", "42", "x", "\n", "\t", "  ", "<start_of_turn>", "<end_of_turn>",
             "def", "()", "{}", "ñ", "ß", "Ω", "中文", "—", "https://a.b", "0.5"]
    seps = [" ", "", "  ", "\n", "\t", " \n", "   "]
    while len(s) < 340:
        n = rng.randint(1, 12)
        s.append("".join(rng.choice(words) + rng.choice(seps) for _ in range(n)))
    # A long mixed document (the speed test also tokenizes it).
    para = ("Tensor parallelism splits each weight matrix across ranks. "
            "Die Gewichte werden aufgeteilt. 模型在多个进程上运行。 🙂\n\n"
            "    code_block(x, y)\n\tif x: return y\n")
    s.append(para * 20)
    s.append(("word " * 500).strip())
    seen, out = set(), []
    for t in s:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def main():
    path = (sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith('-') else os.environ.get("GEMMA_NODE_MODEL")
            or os.path.expanduser("~/.cache/gemma-node/gemma-3-270m-q4_k_m.gguf"))
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    entries = []
    for text in corpus():
        b = text.encode("utf-8")
        ids = llm.tokenize(b, add_bos=True, special=True)
        plain = llm.tokenize(b, add_bos=False, special=False)
        detok = llm.detokenize(ids).decode("utf-8", errors="replace")
        entries.append({"text": text, "ids": ids, "ids_no_special": plain, "detokenized": detok})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"generator": f"llama-cpp-python {llama_cpp_version}, Llama(vocab_only=True).tokenize",
                   "model": os.path.basename(path), "count": len(entries), "entries": entries},
                  f, ensure_ascii=False, indent=0)
    print(f"{len(entries)} strings -> {OUT} ({os.path.getsize(OUT)} bytes)")




def write_tiny_hf_tokenizer():
    """A small Gemma-style tokenizer.json (BPE with merges, byte fallback, "▁" normaliser,
    special and non-special added tokens, BOS post-processor) and the ids Hugging Face
    `tokenizers` gives for a few strings: checks the tokenizer.json path of the Swift code
    against the library that defines the format."""
    from tokenizers import Tokenizer, AddedToken, models, normalizers, decoders, processors
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    vocab = {s: i for i, s in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for c in "▁abcdefghijklmnopqrstuvwxyzTHé.,!\n":
        vocab.setdefault(c, len(vocab))
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("i", "n"), ("in", "g"), ("▁", "a"),
              ("e", "r"), ("▁", "w"), ("o", "r"), ("▁w", "or"), ("l", "d"), ("▁wor", "ld"),
              ("\n", "\n"), ("▁", "▁"), ("▁▁", "▁▁"), ("é", "t"), ("t", "h"), ("▁", "th")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.add_tokens([AddedToken("<b>", special=False, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    out_dir = os.path.dirname(OUT)
    tok.save(os.path.join(out_dir, "tiny_tokenizer.json"))
    texts = ["the", " the", "the weather", "hello world", "  the  world  ", "thing\n\nnew",
             "été", "Tété 🙂 ok", "<start_of_turn>user\nhi<end_of_turn>", "a<b>c", "", "   ",
             "xyz!", "ÿ", "the the the", "wworld world"]
    cases = [{"text": t, "ids": tok.encode(t).ids, "decoded": tok.decode(tok.encode(t).ids, skip_special_tokens=True)}
             for t in texts]
    with open(os.path.join(out_dir, "tiny_tokenizer_expected.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": "tokenizers " + __import__("tokenizers").__version__, "cases": cases}, f, ensure_ascii=False, indent=0)
    print(f"{len(cases)} tiny tokenizer.json cases")

    # The same vocabulary as a Gemma 4 style GGUF (tokenizer.ggml.model "gemma4" with a merge
    # list): the GGUF merges path must give the same ids as `tokenizers` did above.
    import gguf
    size = max(vocab.values()) + 2
    tokens = [""] * size
    types = [gguf.TokenType.UNUSED] * size
    for piece, i in vocab.items():
        tokens[i] = piece
        types[i] = gguf.TokenType.BYTE if piece.startswith("<0x") else gguf.TokenType.NORMAL
    for i, sp in enumerate(specials):
        types[vocab[sp]] = gguf.TokenType.CONTROL
    tokens[size - 1] = "<b>"
    types[size - 1] = gguf.TokenType.USER_DEFINED
    assert tok.token_to_id("<b>") == size - 1
    w = gguf.GGUFWriter(os.path.join(out_dir, "tiny_gemma4.gguf"), arch="gemma4")
    w.add_tokenizer_model("gemma4")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * size)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_transformers_reference(gguf_path):
    """transformers' own GGUF tokenizer path on the same corpus: ids committed as
    transformers_gguf_reference.json, and the converted tokenizer.json saved (not committed,
    33 MB) to ~/.cache/gemma-node/hf-tokenizer/ for the opt-in Swift test of the
    tokenizer.json loader on the real vocabulary (GEMMA_NODE_HF_TOKENIZER=that directory)."""
    from transformers import AutoTokenizer, __version__ as tv
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    save = os.path.expanduser("~/.cache/gemma-node/hf-tokenizer")
    tok.save_pretrained(save)
    entries = [{"text": t, "ids": tok(t)["input_ids"]} for t in corpus()]
    out = os.path.join(os.path.dirname(OUT), "transformers_gguf_reference.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"generator": f"transformers {tv} AutoTokenizer(gguf_file=...)", "entries": entries}, f, ensure_ascii=False, indent=0)
    print(f"{len(entries)} transformers ids -> {out}; tokenizer.json in {save}")


if __name__ == "__main__":
    main()
    write_tiny_hf_tokenizer()
    write_transformers_reference(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("GEMMA_NODE_MODEL")
                                 or os.path.expanduser("~/.cache/gemma-node/gemma-3-270m-q4_k_m.gguf"))
