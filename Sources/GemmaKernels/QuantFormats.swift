// Scalar reference twins of every weight format: block dequantizers that reproduce
// `gguf.quants.dequantize` bit for bit (same f32 operations in the same order), an f32 dot
// product built on them, and the Q8_0 / Q4_0 quantizers used for quantize-on-load (bit-exact
// with `gguf.quants.quantize`), plus Q5_0 / Q4_K / Q6_K quantizers for writing synthetic GGUF
// files (valid blocks with a plain min/max or absmax scale search, not llama.cpp's iterative
// one, so not bit-exact with it). Speed is not the point here: the SIMD kernels in CKernels
// are tested against these.

/// Dequantizes `count` values of `type` starting at `src`. `count` must be a whole number of
/// blocks (a programming-error precondition: callers validate sizes from files with
/// `WeightType.rowBytes(_:)`, which returns nil otherwise, and `WeightMatrix` guarantees it).
public func dequantize(_ type: WeightType, _ src: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
    let bs = type.blockSize
    precondition(count % bs == 0, "count must be a whole number of blocks")
    switch type {
    case .f32:
        for i in 0..<count { out[i] = src.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
    case .f16:
        for i in 0..<count { out[i] = halfToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
    case .bf16:
        for i in 0..<count { out[i] = bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
    default:
        for b in 0..<count / bs {
            QuantBlock.dequantize(type, src + b * type.bytesPerBlock, into: out + b * bs)
        }
    }
}

/// bfloat16 bits -> float (the 16 bits are the high half of an f32).
@inline(__always)
public func bf16ToFloat(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

/// float -> bfloat16 bits, rounding to nearest even, NaN kept quiet (as ggml and gguf do).
@inline(__always)
public func floatToBF16(_ f: Float) -> UInt16 {
    let n = f.bitPattern
    if n & 0x7fff_ffff > 0x7f80_0000 { return UInt16((n & 0xffff_0000 | 64 << 16) >> 16) }
    return UInt16(truncatingIfNeeded: (UInt64(n) + UInt64(0x7fff + ((n >> 16) & 1))) >> 16)
}

/// Per-block scalar code, one case per GGML block format (GEMMA_SPEC.md 7.2).
enum QuantBlock {
    @inline(__always)
    static func f16(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        halfToFloat(p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    /// 6-bit scale and min of sub-block j of a Q4_K/Q5_K block (`s` = the 12 scale bytes).
    @inline(__always)
    static func kScaleMin(_ s: UnsafeRawPointer, _ j: Int) -> (Float, Float) {
        let b = { (i: Int) -> UInt8 in s.load(fromByteOffset: i, as: UInt8.self) }
        if j < 4 { return (Float(b(j) & 63), Float(b(j + 4) & 63)) }
        let sc = (b(j + 4) & 0xF) | ((b(j - 4) >> 6) << 4)
        let m = (b(j + 4) >> 4) | ((b(j) >> 6) << 4)
        return (Float(sc), Float(m))
    }

    static func dequantize(_ type: WeightType, _ p: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>) {
        let u8 = { (i: Int) -> UInt8 in p.load(fromByteOffset: i, as: UInt8.self) }
        switch type {
        case .q8_0:
            let d = f16(p, 0)
            for i in 0..<32 { y[i] = Float(Int8(bitPattern: u8(2 + i))) * d }
        case .q4_0:
            let d = f16(p, 0)
            for j in 0..<16 {
                y[j] = d * Float(Int(u8(2 + j) & 0xF) - 8)
                y[j + 16] = d * Float(Int(u8(2 + j) >> 4) - 8)
            }
        case .q4_1:
            let d = f16(p, 0), m = f16(p, 2)
            for j in 0..<16 {
                y[j] = d * Float(u8(4 + j) & 0xF) + m
                y[j + 16] = d * Float(u8(4 + j) >> 4) + m
            }
        case .q5_0, .q5_1:
            let hasMin = type == .q5_1
            let d = f16(p, 0), m: Float = hasMin ? f16(p, 2) : 0
            let qhOff = hasMin ? 4 : 2
            let qh = p.loadUnaligned(fromByteOffset: qhOff, as: UInt32.self)
            for j in 0..<16 {
                let b = u8(qhOff + 4 + j)
                let lo = Int(b & 0xF) | Int((qh >> UInt32(j)) & 1) << 4
                let hi = Int(b >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
                if hasMin {
                    y[j] = d * Float(lo) + m
                    y[j + 16] = d * Float(hi) + m
                } else {
                    y[j] = d * Float(lo - 16)
                    y[j + 16] = d * Float(hi - 16)
                }
            }
        case .q4_K, .q5_K:
            let d = f16(p, 0), dmin = f16(p, 2)
            let scales = p + 4
            let hasHigh = type == .q5_K
            let qh = p + 16                       // [32] fifth bits (Q5_K only)
            let qs = p + (hasHigh ? 48 : 16)      // [128] nibbles
            for j in 0..<8 {
                let (sc, mn) = kScaleMin(scales, j)
                let dl = d * sc, ml = dmin * mn   // rounded to f32 first, as gguf does
                let shift = UInt8(4 * (j & 1))
                for l in 0..<32 {
                    var q = (qs.load(fromByteOffset: 32 * (j / 2) + l, as: UInt8.self) >> shift) & 0xF
                    if hasHigh { q |= ((qh.load(fromByteOffset: l, as: UInt8.self) >> UInt8(j)) & 1) << 4 }
                    y[32 * j + l] = dl * Float(q) - ml
                }
            }
        case .q6_K:
            let d = f16(p, 208)
            for h in 0..<2 {
                let ql = p + 64 * h, qh = p + 128 + 32 * h
                let out = y + 128 * h
                for l in 0..<32 {
                    let a = ql.load(fromByteOffset: l, as: UInt8.self)
                    let b = ql.load(fromByteOffset: l + 32, as: UInt8.self)
                    let hb = qh.load(fromByteOffset: l, as: UInt8.self)
                    let q0 = Int((a & 0xF) | (hb & 3) << 4) - 32
                    let q1 = Int((b & 0xF) | ((hb >> 2) & 3) << 4) - 32
                    let q2 = Int((a >> 4) | ((hb >> 4) & 3) << 4) - 32
                    let q3 = Int((b >> 4) | ((hb >> 6) & 3) << 4) - 32
                    for k in 0..<4 {
                        let q = k == 0 ? q0 : k == 1 ? q1 : k == 2 ? q2 : q3
                        let pos = l + 32 * k
                        let sc = Float(Int8(bitPattern: p.load(fromByteOffset: 192 + 8 * h + pos / 16, as: UInt8.self)))
                        out[pos] = (d * sc) * Float(q)
                    }
                }
            }
        case .f32, .f16, .bf16:
            preconditionFailure("plain float types are not block formats")
        }
    }
}

/// Reference dot product of `count` values of `type` at `w` with f32 `x`: dequantizes block by
/// block and accumulates in Double, so it is the "true" value the fast kernels are held to.
public func referenceDot(_ type: WeightType, _ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
    let bs = type.blockSize == 1 ? 256 : type.blockSize
    let chunkBytes = type.blockSize == 1 ? 256 * type.bytesPerBlock : type.bytesPerBlock
    return withUnsafeTemporaryAllocation(of: Float.self, capacity: 256) { tmp in
        let t = tmp.baseAddress!
        var acc = 0.0
        var i = 0
        var chunk = 0
        while i < count {
            let n = min(bs, count - i)
            dequantize(type, w + chunk * chunkBytes, count: n, into: t)
            for j in 0..<n { acc += Double(t[j]) * Double(x[i + j]) }
            i += n
            chunk += 1
        }
        return Float(acc)
    }
}

/// Errors of the quantizers.
public enum QuantizeError: Error, CustomStringConvertible, Equatable {
    case unsupported(WeightType)
    case notBlockAligned(WeightType, Int)

    public var description: String {
        switch self {
        case let .unsupported(t): return "quantizing to \(t) is not supported (q8_0, q4_0, q5_0, q4_K, q6_K, f16, bf16, f32 are)"
        case let .notBlockAligned(t, n): return "\(n) values are not a whole number of \(t) blocks of \(t.blockSize)"
        }
    }
}

/// Quantizes `count` floats to `type` (q8_0, q4_0, q5_0, q4_K, q6_K, f16, bf16 or f32) into
/// /// `out`, which must hold `type.rowBytes(count)` bytes. Bit-exact with `gguf.quants.quantize`
/// for q8_0, q4_0 and the float types; q5_0 follows ggml's reference rounding; q4_K and q6_K use
/// a simpler scale choice than llama.cpp (valid blocks, a larger error).
public func quantize(_ type: WeightType, _ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer) throws {
    guard count % type.blockSize == 0 else { throw QuantizeError.notBlockAligned(type, count) }
    switch type {
    case .f32:
        out.copyMemory(from: x, byteCount: 4 * count)
    case .f16:
        for i in 0..<count { out.storeBytes(of: Float16(x[i]).bitPattern, toByteOffset: 2 * i, as: UInt16.self) }
    case .bf16:
        for i in 0..<count { out.storeBytes(of: floatToBF16(x[i]), toByteOffset: 2 * i, as: UInt16.self) }
    case .q8_0:
        for b in 0..<count / 32 { quantizeBlockQ8_0(x + 32 * b, out + 34 * b) }
    case .q4_0:
        for b in 0..<count / 32 { quantizeBlockQ4_0(x + 32 * b, out + 18 * b) }
    case .q5_0:
        for b in 0..<count / 32 { quantizeBlockQ5_0(x + 32 * b, out + 22 * b) }
    case .q4_K:
        for b in 0..<count / 256 { quantizeBlockQ4_K(x + 256 * b, out + 144 * b) }
    case .q6_K:
        for b in 0..<count / 256 { quantizeBlockQ6_K(x + 256 * b, out + 210 * b) }
    default:
        throw QuantizeError.unsupported(type)
    }
}

/// d = max|x| / 127, q = round-half-away(x / d) (ggml's quantize_row_q8_0_ref).
func quantizeBlockQ8_0(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
    var amax: Float = 0
    for i in 0..<32 { amax = max(amax, abs(x[i])) }
    let d = amax / 127
    let id: Float = d == 0 ? 0 : 1 / d
    out.storeBytes(of: Float16(d).bitPattern, toByteOffset: 0, as: UInt16.self)
    for i in 0..<32 {
        let q = (x[i] * id).rounded(.toNearestOrAwayFromZero)
        // NaN/inf inputs (a corrupt checkpoint) must not trap: they become 0.
        let c: Int8 = q.isFinite ? Int8(min(127, max(-127, q))) : 0
        out.storeBytes(of: c, toByteOffset: 2 + i, as: Int8.self)
    }
}

/// The value of largest magnitude among x[0..<32], sign kept (the first one on ties): the
/// legacy 32-value formats scale by it so the extreme value lands on a level exactly.
@inline(__always)
func largestMagnitude32(_ x: UnsafePointer<Float>) -> Float {
    var amax: Float = 0, vmax: Float = 0
    for i in 0..<32 where abs(x[i]) > amax {
        amax = abs(x[i])
        vmax = x[i]
    }
    return vmax
}

/// trunc(v * id + bias) clamped to 0...maxLevel (bias = zero level + 0.5, so truncation
/// rounds); NaN (a corrupt checkpoint) gives 0.
@inline(__always)
func offsetLevel(_ v: Float, _ id: Float, bias: Float, maxLevel: Float) -> UInt32 {
    let t = (v * id + bias).rounded(.towardZero)
    if !(t >= 0) { return 0 }
    return t > maxLevel ? UInt32(maxLevel) : UInt32(t)
}

/// d = (value of largest magnitude) / -8, q = clamp(trunc(x / d + 8.5), 0, 15)
/// (ggml's quantize_row_q4_0_ref: the extreme value maps to q = 0 exactly).
func quantizeBlockQ4_0(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
    let d = largestMagnitude32(x) / -8
    let id: Float = d == 0 ? 0 : 1 / d
    out.storeBytes(of: Float16(d).bitPattern, toByteOffset: 0, as: UInt16.self)
    func q(_ v: Float) -> UInt8 { UInt8(offsetLevel(v, id, bias: 8.5, maxLevel: 15)) }
    for j in 0..<16 {
        out.storeBytes(of: q(x[j]) | q(x[j + 16]) << 4, toByteOffset: 2 + j, as: UInt8.self)
    }
}

/// d = (value of largest magnitude) / -16, q = min(31, trunc(x / d + 16.5)), the fifth bits
/// gathered in a 32-bit word (ggml's quantize_row_q5_0_ref).
func quantizeBlockQ5_0(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
    let d = largestMagnitude32(x) / -16
    let id: Float = d == 0 ? 0 : 1 / d
    out.storeBytes(of: Float16(d).bitPattern, toByteOffset: 0, as: UInt16.self)
    func q(_ v: Float) -> UInt32 { offsetLevel(v, id, bias: 16.5, maxLevel: 31) }
    var qh: UInt32 = 0
    for j in 0..<16 {
        let lo = q(x[j]), hi = q(x[j + 16])
        out.storeBytes(of: UInt8(lo & 0xF) | UInt8(hi & 0xF) << 4, toByteOffset: 6 + j, as: UInt8.self)
        qh |= ((lo & 0x10) >> 4) << UInt32(j)
        qh |= ((hi & 0x10) >> 4) << UInt32(j + 16)
    }
    out.storeBytes(of: qh, toByteOffset: 2, as: UInt32.self)
}

/// Q4_K: 8 sub-blocks of 32 values, each y = d*sc*q - dmin*m with q in 0...15. Per sub-block
/// the scale is (max - min) / 15 and the offset -min (min clamped to <= 0); the 8 scales and
/// 8 offsets are then quantized to 6 bits against the block's d and dmin (largest / 63).
func quantizeBlockQ4_K(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
    var scales = [Float](repeating: 0, count: 8), mins = [Float](repeating: 0, count: 8)
    for j in 0..<8 {
        var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
        for l in 0..<32 { let v = x[32 * j + l].isFinite ? x[32 * j + l] : 0; lo = min(lo, v); hi = max(hi, v) }
        lo = min(lo, 0)
        scales[j] = (hi - lo) / 15
        mins[j] = -lo
    }
    let maxScale = scales.max() ?? 0, maxMin = mins.max() ?? 0
    let d = Float(Float16(maxScale / 63)), dmin = Float(Float16(maxMin / 63))
    var ls = [UInt8](repeating: 0, count: 8), lm = [UInt8](repeating: 0, count: 8)
    for j in 0..<8 {
        ls[j] = d > 0 ? UInt8(min(63, max(0, (scales[j] / d).rounded()))) : 0
        lm[j] = dmin > 0 ? UInt8(min(63, max(0, (mins[j] / dmin).rounded()))) : 0
    }
    out.storeBytes(of: Float16(d).bitPattern, toByteOffset: 0, as: UInt16.self)
    out.storeBytes(of: Float16(dmin).bitPattern, toByteOffset: 2, as: UInt16.self)
    var packed = [UInt8](repeating: 0, count: 12)
    for j in 0..<8 {
        if j < 4 {
            packed[j] = ls[j]
            packed[j + 4] = lm[j]
        } else {
            packed[j + 4] = (ls[j] & 0xF) | (lm[j] & 0xF) << 4
            packed[j - 4] |= (ls[j] >> 4) << 6
            packed[j] |= (lm[j] >> 4) << 6
        }
    }
    for i in 0..<12 { out.storeBytes(of: packed[i], toByteOffset: 4 + i, as: UInt8.self) }
    var q = [UInt8](repeating: 0, count: 256)
    for j in 0..<8 {
        let dl = d * Float(ls[j]), ml = dmin * Float(lm[j])
        let inv: Float = dl == 0 ? 0 : 1 / dl
        for l in 0..<32 {
            let v = x[32 * j + l].isFinite ? x[32 * j + l] : 0
            let t = ((v + ml) * inv).rounded()
            q[32 * j + l] = t >= 15 ? 15 : t > 0 ? UInt8(t) : 0
        }
    }
    for j in 0..<4 {
        for l in 0..<32 {
            out.storeBytes(of: q[64 * j + l] | q[64 * j + 32 + l] << 4, toByteOffset: 16 + 32 * j + l, as: UInt8.self)
        }
    }
}

/// Q6_K: 16 sub-blocks of 16 values, y = d*sc*q with q in -32...31 and sc an int8. Per
/// sub-block the scale is (value of largest magnitude) / -32 (so that value maps to -32
/// exactly, as ggml's absmax choice does); the 16 scales are quantized to int8 against
/// d = (largest scale magnitude) / 127.
func quantizeBlockQ6_K(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
    var scales = [Float](repeating: 0, count: 16)
    var maxAbs: Float = 0
    for j in 0..<16 {
        var amax: Float = 0, vmax: Float = 0
        for l in 0..<16 where x[16 * j + l].isFinite && abs(x[16 * j + l]) > amax {
            amax = abs(x[16 * j + l])
            vmax = x[16 * j + l]
        }
        scales[j] = vmax / -32
        maxAbs = max(maxAbs, abs(scales[j]))
    }
    let d = Float(Float16(maxAbs / 127))
    var sc = [Int8](repeating: 0, count: 16)
    for j in 0..<16 { sc[j] = d > 0 ? Int8(min(127, max(-127, (scales[j] / d).rounded()))) : 0 }
    var q = [UInt8](repeating: 32, count: 256)
    for j in 0..<16 {
        let dl = d * Float(sc[j])
        let inv: Float = dl == 0 ? 0 : 1 / dl
        for l in 0..<16 {
            let v = x[16 * j + l].isFinite ? x[16 * j + l] : 0
            let t = (v * inv).rounded()
            q[16 * j + l] = UInt8(Int(t < -32 ? -32 : t > 31 ? 31 : t) + 32)
        }
    }
    for h in 0..<2 {
        let base = 128 * h
        for l in 0..<32 {
            let q0 = q[base + l], q1 = q[base + l + 32], q2 = q[base + l + 64], q3 = q[base + l + 96]
            out.storeBytes(of: (q0 & 0xF) | (q2 & 0xF) << 4, toByteOffset: 64 * h + l, as: UInt8.self)
            out.storeBytes(of: (q1 & 0xF) | (q3 & 0xF) << 4, toByteOffset: 64 * h + l + 32, as: UInt8.self)
            out.storeBytes(of: (q0 >> 4) | (q1 >> 4) << 2 | (q2 >> 4) << 4 | (q3 >> 4) << 6, toByteOffset: 128 + 32 * h + l, as: UInt8.self)
        }
    }
    for j in 0..<16 { out.storeBytes(of: sc[j], toByteOffset: 192 + j, as: Int8.self) }
    out.storeBytes(of: Float16(d).bitPattern, toByteOffset: 208, as: UInt16.self)
}

extension WeightMatrix {
    /// Builds a matrix of `type` (q8_0, q4_0, f16, bf16, f32) from row-major f32 values
    /// `[rows, cols]`: quantize-on-load for safetensors weights (`--quant`).
    public static func quantizing(_ values: UnsafeBufferPointer<Float>, rows: Int, cols: Int, to type: WeightType) throws -> WeightMatrix {
        guard values.count == rows * cols else { throw KernelError.shapeMismatch(expected: rows * cols, got: values.count) }
        let m = try WeightMatrix(type: type, rows: rows, cols: cols)
        guard let base = values.baseAddress else { return m }
        for r in 0..<rows {
            try quantize(type, base + r * cols, count: cols, into: m.storage.pointer + r * m.rowBytes)
        }
        return m
    }
}
