#!/usr/bin/env python3
"""Independent check of our GGUF reading at real model dimensions: the last-position logits of
gemma-node and of llama.cpp (llama-cpp-python) on the same file and the same prompt, for
synthetic real-size models (`gemma-node synth`) beside the real default model as the yardstick
("about as closely as on the real 270M model").

    Scripts/crosscheck_llamacpp.py [--gemma-node BIN] [--ranks 1,2] MODEL.gguf [MODEL.gguf ...]

The default model is always included first. The prompt is a fixed English sentence tokenized
by llama.cpp (the synthetic files carry the default model's tokenizer), with BOS.

Per model and rank count: max |logit difference| over the whole vocabulary, the RMS difference
relative to the RMS of llama.cpp's logits, whether the top-1 ids agree, how many of llama.cpp's
top-10 ids are in ours, and KL(llama.cpp || ours) of the softmax distributions in nats. Both
programs quantize activations to 8 bits for their quantized matmuls (in different places and
block layouts), so they are not expected to agree exactly; the real model's row says how far
two correct implementations drift on a trained model. A model llama.cpp cannot load (e.g. an
architecture its vendored version does not know) is reported as such, not skipped silently.
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("bench")

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

from _run import llama_without_extra_buffer_types, mpirun_prefix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "The history of the printing press begins in the fifteenth century, when a goldsmith from Mainz"


def llama_last_logits(path):
    llm = Llama(model_path=path, n_ctx=256, n_batch=256, n_ubatch=256, n_threads=2, n_threads_batch=2,
                logits_all=True, verbose=False, seed=0)
    ids = llm.tokenize(PROMPT.encode(), add_bos=True, special=False)
    llm.reset()
    llm.eval(ids)
    last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
    return ids, last


def ours_last_logits(binary, path, ids, ranks):
    cmd = [binary, "logits", "-m", path, "--tokens", ",".join(map(str, ids)), "-t", "1", "-c", "256"]
    if ranks > 1:
        cmd = mpirun_prefix(ranks) + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"crosscheck: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    out = json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])
    return np.array(out["positions"][-1]["logits"], dtype=np.float64)


def compare(ref, ours):
    n = min(len(ref), len(ours))
    ref, ours = ref[:n], ours[:n]
    d = ours - ref
    def logsoftmax(x):
        m = x.max()
        return x - m - np.log(np.exp(x - m).sum())
    lp, lq = logsoftmax(ref), logsoftmax(ours)
    top10 = set(np.argsort(-ref, kind="stable")[:10])
    return {
        "max_abs": float(np.abs(d).max()),
        "rms_rel": float(np.sqrt((d ** 2).mean()) / np.sqrt((ref ** 2).mean())),
        "top1": bool(int(np.argmax(ref)) == int(np.argmax(ours))),
        "top10": len(top10 & set(np.argsort(-ours, kind="stable")[:10])),
        "kl": float((np.exp(lp) * (lp - lq)).sum()),
        "logit_rms": float(np.sqrt((ref ** 2).mean())),
        "logit_range": float(ref.max() - ref.min()),
        # How far llama.cpp's best logit leads its second: a different top-1 within a gap this
        # small is a near-tie, not a disagreement.
        "top1_gap": float(np.diff(np.sort(ref)[-2:])[0]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*")
    ap.add_argument("--gemma-node", default=os.path.join(ROOT, ".build", "release", "gemma-node"))
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    llama_without_extra_buffer_types()
    models = [_venv.default_model()] + a.models
    ranks = [int(r) for r in a.ranks.split(",")]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"llama-cpp-python {llama_cpp.__version__}, CPU {cpu}, prompt of {len(PROMPT)} characters")
    print("| model | ranks | max abs diff | RMS diff / RMS logit | top-1 | top-10 overlap | KL(llama.cpp, ours) nats | llama.cpp logit RMS, range | llama.cpp top-1 lead |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for m in models:
        name = os.path.basename(m)
        try:
            ids, ref = llama_last_logits(m)
        except Exception as e:  # an architecture the vendored llama.cpp does not know
            print(f"| {name} | - | llama.cpp could not load it: {type(e).__name__}: {e} | | | | | |")
            rows.append({"model": name, "llama_cpp_error": str(e)})
            continue
        for r in ranks:
            c = compare(ref, ours_last_logits(a.gemma_node, m, ids, r))
            rows.append({"model": name, "ranks": r, "prompt_tokens": len(ids), **c})
            print(f"| {name} | {r} | {c['max_abs']:.3f} | {c['rms_rel']:.4f} | {'same' if c['top1'] else 'DIFFERENT'} | "
                  f"{c['top10']}/10 | {c['kl']:.2e} | {c['logit_rms']:.2f}, {c['logit_range']:.1f} | {c['top1_gap']:.3f} |")
            sys.stdout.flush()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cpu": cpu, "llama_cpp_python": llama_cpp.__version__, "prompt": PROMPT, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
