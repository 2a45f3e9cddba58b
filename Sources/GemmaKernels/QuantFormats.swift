// Scalar reference twins of every weight format: block dequantizers that reproduce
// `gguf.quants.dequantize` bit for bit (same f32 operations in the same order), an f32 dot
// product built on them, and the Q8_0 / Q4_0 quantizers used for quantize-on-load (bit-exact
// with `gguf.quants.quantize`). Speed is not the point here: the SIMD kernels in CKernels are
// tested against these.

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
        case let .unsupported(t): return "quantizing to \(t) is not supported (q8_0, q4_0, f16, bf16, f32 are)"
        case let .notBlockAligned(t, n): return "\(n) values are not a whole number of \(t) blocks of \(t.blockSize)"
        }
    }
}

/// Quantizes `count` floats to `type` (q8_0, q4_0, f16, bf16 or f32) into `out`, which must
/// hold `type.rowBytes(count)` bytes. Bit-exact with `gguf.quants.quantize`.
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

/// d = (value of largest magnitude) / -8, q = clamp(trunc(x / d + 8.5), 0, 15)
/// (ggml's quantize_row_q4_0_ref: the extreme value maps to q = 0 exactly).
func quantizeBlockQ4_0(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
    var amax: Float = 0, vmax: Float = 0
    for i in 0..<32 where abs(x[i]) > amax {
        amax = abs(x[i])
        vmax = x[i]
    }
    let d = vmax / -8
    let id: Float = d == 0 ? 0 : 1 / d
    out.storeBytes(of: Float16(d).bitPattern, toByteOffset: 0, as: UInt16.self)
    func q(_ v: Float) -> UInt8 {
        let t = (v * id + 8.5).rounded(.towardZero)
        if !(t >= 0) { return 0 }  // also NaN from a corrupt checkpoint
        return t > 15 ? 15 : UInt8(t)
    }
    for j in 0..<16 {
        out.storeBytes(of: q(x[j]) | q(x[j + 16]) << 4, toByteOffset: 2 + j, as: UInt8.self)
    }
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
