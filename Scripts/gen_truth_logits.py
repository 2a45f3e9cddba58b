#!/usr/bin/env python3
"""The "truth" distribution of a text for `gemma-node perplexity --kl-base`, and llama.cpp against it.

Truth: transformers (float32, eager attention) on the weights of a GGUF dequantized to float32
(`check_real_model_hf.convert`, the same dequantization gguf-py does and gemma-node reproduces
bit for bit), over the text cut into chunks of --ctx tokens, BOS first, every position but a
chunk's last scored. The file is written in gemma-node's base format (GNLOGITS version 1,
Sources/GemmaEngine/LogitsBase.swift): per position the log-normaliser, the next token's
log-prob and the top --top log-probs.

With --llamacpp, llama.cpp (llama-cpp-python, logits of every position, 1 thread by default)
runs the same tokens, and the script prints its perplexity and KL(truth || llama.cpp) both over
the full vocabulary and from the top-K file's view (top K + merged tail, what gemma-node
computes), which measures the error of the compact format. --per-token writes llama.cpp's
per-position KL (the format of gemma-node's --per-token).

    python3 Scripts/gen_truth_logits.py --ctx 1024 --out /tmp/truth.gnlogits --llamacpp
    python3 Scripts/gen_truth_logits.py --ctx 128 --chunks 1 --out Tests/Fixtures/fidelity/truth_c128.gnlogits

Needs: the fixtures group (torch, transformers, gguf), llama-cpp-python for --llamacpp.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("fixtures")

import argparse, json, math, os, struct, sys
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
MAGIC = b"GNLOGITS"


def write_base(path, vocab, top, ctx, chunks, tokens, records):
    """records: (logZ, target_logprob, log_tail_mass, ids[top], logprobs[top]) per scored position."""
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<6I", 1, vocab, top, ctx, chunks, 0))
        f.write(np.asarray(tokens, dtype="<u4").tobytes())
        for logz, target, tail, ids, lps in records:
            rec = np.empty(2 * top, dtype="<u4")
            rec[0::2] = ids
            rec[1::2] = np.asarray(lps, dtype="<f4").view("<u4")
            f.write(struct.pack("<fff", logz, target, tail) + rec.tobytes())


def read_base(path):
    raw = open(path, "rb").read()
    assert raw[:8] == MAGIC, f"{path}: not a GNLOGITS file"
    version, vocab, top, ctx, chunks, _ = struct.unpack("<6I", raw[8:32])
    assert version == 1
    tokens = np.frombuffer(raw, dtype="<u4", count=ctx * chunks, offset=32).astype(np.int64)
    rec = np.frombuffer(raw, dtype="<u4", offset=32 + 4 * ctx * chunks).reshape(chunks * (ctx - 1), 3 + 2 * top)
    return dict(vocab=vocab, top=top, ctx=ctx, chunks=chunks, tokens=tokens.reshape(chunks, ctx),
                logz=rec[:, 0].view("<f4").astype(np.float64), target=rec[:, 1].view("<f4").astype(np.float64),
                logtail=rec[:, 2].view("<f4").astype(np.float64),
                ids=rec[:, 3::2].astype(np.int64), logprobs=rec[:, 4::2].view("<f4").astype(np.float64))


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def topk_kl(base_ids, base_lp, base_logtail, lq):
    """KL(base || q) from the base's top K plus the merged tail, as gemma-node computes it."""
    rows = np.arange(len(base_ids))[:, None]
    p = np.exp(base_lp)
    q_top = lq[rows, base_ids]
    kl = (p * (base_lp - q_top)).sum(axis=1)
    p_tail = np.exp(base_logtail)
    q_tail = np.clip(1 - np.exp(q_top).sum(axis=1), np.finfo(np.float64).tiny, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.where(p_tail > 0, p_tail * np.log(p_tail / q_tail), 0.0)
    # + 1 - sum p: zero for exact probabilities; cancels the first-order effect of f32 rounding.
    return kl + tail + 1 - p.sum(axis=1) - p_tail


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=_venv.default_model())
    ap.add_argument("--text", default=os.path.join(HERE, "..", "Tests", "Fixtures", "fidelity", "declaration.txt"))
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--chunks", type=int, default=0, help="at most this many chunks (0 = all whole chunks)")
    ap.add_argument("--top", type=int, default=32)
    ap.add_argument("--out", required=True)
    ap.add_argument("--workdir", default=os.path.expanduser("~/.cache/gemma-node/gemma-3-270m-f32-truth"))
    ap.add_argument("--llamacpp", action="store_true", help="also measure llama.cpp against the truth")
    ap.add_argument("--llamacpp-threads", type=int, default=1)
    ap.add_argument("--per-token", help="llama.cpp's per-position KL, tab-separated like gemma-node's --per-token")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from check_real_model_hf import convert
    torch.set_num_threads(int(os.environ.get("TRUTH_THREADS", "2")))
    if not os.path.exists(os.path.join(args.workdir, "model.safetensors")):
        convert(args.model, args.workdir, dtype="F32")
    tok = AutoTokenizer.from_pretrained(os.path.dirname(args.model), gguf_file=os.path.basename(args.model))
    text = open(args.text, encoding="utf-8").read()
    ids = tok.encode(text, add_special_tokens=False)
    body = args.ctx - 1
    n = len(ids) // body if not args.chunks else min(args.chunks, len(ids) // body)
    if n < 1:
        sys.exit(f"{args.text} gives {len(ids)} tokens, fewer than one chunk of {args.ctx} needs")
    chunks = [[2] + ids[c * body:(c + 1) * body] for c in range(n)]
    model = AutoModelForCausalLM.from_pretrained(args.workdir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    vocab = model.config.vocab_size
    records, truth_lp = [], []
    for chunk in chunks:
        with torch.no_grad():
            logits = model(torch.tensor([chunk])).logits[0, :-1].numpy()
        lp = log_softmax(logits)
        logz = logits.astype(np.float64)[:, :1] - lp[:, :1]
        full_order = np.argsort(-lp, axis=1, kind="stable")
        order = full_order[:, :args.top]
        rows = np.arange(len(lp))[:, None]
        rest = lp[rows, full_order[:, args.top:]]
        if rest.shape[1]:
            m = rest.max(axis=1)
            logtail = m + np.log(np.exp(rest - m[:, None]).sum(axis=1))
        else:
            logtail = np.full(len(lp), -np.inf)
        for p in range(len(chunk) - 1):
            records.append((float(logz[p, 0]), float(lp[p, chunk[p + 1]]), float(logtail[p]), order[p], lp[p, order[p]]))
        truth_lp.append(lp)
    write_base(args.out, vocab, args.top, args.ctx, n, [t for c in chunks for t in c], records)
    nll = -np.array([r[1] for r in records])
    size = os.path.getsize(args.out)
    print(f"truth: {len(records)} positions ({n} chunk(s) of {args.ctx}), perplexity {math.exp(nll.mean()):.4f}; "
          f"{args.out}: {size} bytes ({(size - 32 - 4 * n * args.ctx) / len(records):.0f} per position)")

    if args.llamacpp:
        from llama_cpp import Llama
        llm = Llama(model_path=args.model, n_ctx=args.ctx, n_batch=512, n_threads=args.llamacpp_threads,
                    logits_all=True, verbose=False)
        base = read_base(args.out)
        full_kl, top_kl, agree, diff10, lnll = [], [], [], [], []
        for c, chunk in enumerate(chunks):
            llm.reset()
            llm.eval(chunk)
            logits = np.array(llm.scores[:len(chunk) - 1], dtype=np.float64)
            lq = log_softmax(logits)
            lp = truth_lp[c]
            sl = slice(c * body, (c + 1) * body)
            full_kl.append((np.exp(lp) * (lp - lq)).sum(axis=1))
            top_kl.append(topk_kl(base["ids"][sl], base["logprobs"][sl], base["logtail"][sl], lq))
            agree.append(logits.argmax(axis=1) == base["ids"][sl, 0])
            rows = np.arange(body)[:, None]
            ten = base["ids"][sl, :10]
            diff10.append(np.abs(logits[rows, ten] - (base["logprobs"][sl, :10] + base["logz"][sl, None])).mean(axis=1))
            lnll.append(-lq[np.arange(body), np.array(chunk[1:])])
        full_kl, top_kl = np.concatenate(full_kl), np.concatenate(top_kl)
        lnll = np.concatenate(lnll)
        print(json.dumps({"engine": "llama.cpp (llama-cpp-python %s, %d thread(s))" % (__import__("llama_cpp").__version__, args.llamacpp_threads),
                          "positions": int(len(full_kl)), "perplexity": math.exp(lnll.mean()),
                          "kl_mean": float(full_kl.mean()), "kl_max": float(full_kl.max()),
                          "kl_mean_topk_view": float(top_kl.mean()), "kl_max_topk_view": float(top_kl.max()),
                          "topk_view_max_abs_error": float(np.abs(full_kl - top_kl).max()),
                          "top1_agreement": float(np.concatenate(agree).mean()),
                          "top10_abs_logit_diff": float(np.concatenate(diff10).mean())}))
        if args.per_token:
            with open(args.per_token, "w") as f:
                for i, k in enumerate(full_kl):
                    c, p = divmod(i, body)
                    f.write(f"{c}\t{p}\t{chunks[c][p + 1]}\t{lnll[i]:.6f}\t{k:.6e}\t{int(np.concatenate(agree)[i])}\n")


if __name__ == "__main__":
    main()
