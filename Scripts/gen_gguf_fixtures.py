#!/usr/bin/env python3
"""Writes the small GGUF fixtures of Tests/Fixtures/gguf/ with the `gguf` Python package
(the writer llama.cpp's converters use), so the Swift reader is checked against an
independent implementation of the format.

  python3 Scripts/gen_gguf_fixtures.py            # rewrites the fixtures

Files:
  types_v3.gguf      every metadata value type (incl. nested arrays), tensors of
                     F32 / F16 / Q8_0 / Q4_K / Q6_K and one of a type the engine cannot read
                     (IQ4_NL), default alignment 32.
  types_v2.gguf      the same bytes with the version field patched to 2 (v2 and v3 share the
                     layout; the writer only emits v3).
  align64_v3.gguf    general.alignment = 64, two F32 tensors.
  expected.json      what the Swift test must read back (tensor data checksums included).
"""

import _venv  # runs this script under the project's Python environment (Scripts/venv.sh)
_venv.use("bench")

import json
import os
import sys

import numpy as np
import gguf
from gguf import GGUFWriter, GGMLQuantizationType as T

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "gguf")


def raw_tensor(w, name, qtype, ne, rng):
    """Adds a tensor of `qtype` with GGML dims `ne` (fastest first) filled with random block
    bytes: the reader only moves bytes, so their meaning does not matter here."""
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    assert ne[0] % block == 0
    # uint8 data in numpy order (slowest first), the last axis in bytes: the writer derives
    # the element dims from it.
    shape = list(reversed(ne[1:])) + [ne[0] // block * nbytes]
    data = rng.integers(0, 256, size=shape, dtype=np.uint8)
    w.add_tensor(name, data, raw_dtype=qtype)
    return data.tobytes()


def write_types(path):
    rng = np.random.default_rng(1234)
    w = GGUFWriter(path, arch="testarch")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool_true", True)
    w.add_bool("t.bool_false", False)
    w.add_string("t.string", "héllo ▁ wörld 🙂")
    # add_string / add_array skip empty values; add_key_value writes them.
    w.add_key_value("t.empty_string", "", gguf.GGUFValueType.STRING)
    w.add_uint64("t.u64", 18000000000000000000)
    w.add_int64("t.i64", -9000000000000000000)
    w.add_float64("t.f64", -2.25)
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_f32", [0.5, -1.25])
    w.add_array("t.arr_str", ["a", "", "▁▁", "<0x0A>"])
    w.add_array("t.arr_bool", [True, False, True])
    w.add_array("t.arr_nested", [[1, 2], [3], [4, 5, 6]])
    w.add_array("t.arr_u8", np.array([7, 255], dtype=np.uint8).tolist())
    w.add_key_value("t.arr_u64", [1, 2 ** 63], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT64)
    w.add_uint32("testarch.block_count", 2)

    sums = {}
    f32 = np.arange(12, dtype=np.float32).reshape(3, 4)          # ne = [4, 3]
    w.add_tensor("f32", f32)
    sums["f32"] = f32.tobytes()
    f16 = (np.arange(64, dtype=np.float16) / 8).reshape(2, 32)  # ne = [32, 2]
    w.add_tensor("f16", f16)
    sums["f16"] = f16.tobytes()
    sums["q8_0"] = raw_tensor(w, "q8_0", T.Q8_0, [64, 3], rng)
    sums["q4_k"] = raw_tensor(w, "q4_k", T.Q4_K, [512, 2], rng)
    sums["q6_k"] = raw_tensor(w, "q6_k", T.Q6_K, [256, 2, 2], rng)
    sums["iq4_nl"] = raw_tensor(w, "iq4_nl", T.IQ4_NL, [32, 1], rng)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {k: fnv1a64(v) for k, v in sums.items()}


def fnv1a64(data):
    """FNV-1a 64-bit (easy to recompute in the Swift test without a crypto library)."""
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def write_align64(path):
    w = GGUFWriter(path, arch="testarch")
    w.add_custom_alignment(64)
    a = np.arange(5, dtype=np.float32)        # 20 bytes: the next tensor must be padded to 64
    b = -np.arange(6, dtype=np.float32).reshape(2, 3)
    w.add_tensor("a", a)
    w.add_tensor("b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    os.makedirs(OUT, exist_ok=True)
    v3 = os.path.join(OUT, "types_v3.gguf")
    sums = write_types(v3)
    data = bytearray(open(v3, "rb").read())
    assert data[4:8] == (3).to_bytes(4, "little")
    data[4:8] = (2).to_bytes(4, "little")
    open(os.path.join(OUT, "types_v2.gguf"), "wb").write(bytes(data))
    write_align64(os.path.join(OUT, "align64_v3.gguf"))

    # Read back with gguf's own reader: the expectations come from it, not from this script.
    r = gguf.GGUFReader(v3)
    tensors = {}
    for t in r.tensors:
        tensors[t.name] = {
            "dims": [int(x) for x in t.shape],
            "type": int(t.tensor_type),
            "offset": int(t.data_offset) - int(r.data_offset) if hasattr(r, "data_offset") else None,
            "fnv1a64": sums[t.name],
        }
    ra = gguf.GGUFReader(os.path.join(OUT, "align64_v3.gguf"))
    expected = {
        "types_v3": {"tensor_count": len(r.tensors), "kv_count": len(r.fields), "tensors": tensors,
                     "keys": list(r.fields.keys())},
        "align64_v3": {"tensors": {t.name: {"dims": [int(x) for x in t.shape],
                                            "abs_offset": int(t.data_offset)} for t in ra.tensors}},
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
    for n in sorted(os.listdir(OUT)):
        print(n, os.path.getsize(os.path.join(OUT, n)))


if __name__ == "__main__":
    sys.exit(main())
