// The C attention kernel (portable, AVX2, AVX-512) against its Swift twin on random heads,
// ring-buffer wrap-around, soft-capping, and a run shifted by one position that must fail.
//
// Tolerance. Scores: each dot product of d terms is summed in a different order by the vector
// paths, worst case |error| <= d * 2^-24 * sum_i |q_i k_i| (per ordering, so twice that between
// two orderings), times `scale`. A score error delta moves each softmax weight by a relative
// factor of at most exp(2 delta) - 1; the normalising sum and the weighted sum of `count`
// values add at most 2 * count * 2^-24 relative. So
//   |out_C - out_ref| <= (exp(2 deltaMax) - 1 + 4 count 2^-24) * max|v| (+ 1e-6 absolute slack).
import Foundation
import Testing
@testable import GemmaKernels
import GemmaTestSupport

@Suite struct AttentionTests {
    struct Head {
        var q: [Float], keys: [Float], values: [Float]
        let d: Int, rowStride: Int, capacity: Int
    }

    static func makeHead(d: Int, kvHeads: Int, capacity: Int, seed: UInt64) -> Head {
        var rng = SplitMix64(seed: seed)
        let n = capacity * kvHeads * d
        return Head(q: (0..<d).map { _ in rng.normal() }, keys: (0..<n).map { _ in rng.normal() },
                    values: (0..<n).map { _ in rng.normal() }, d: d, rowStride: kvHeads * d, capacity: capacity)
    }

    static func run(_ h: Head, head: Int, first: Int, last: Int, scale: Float, softcap: Float?, level: KernelLevel) throws -> [Float] {
        var scores = [Float](repeating: .nan, count: last - first + 1)
        var out = [Float](repeating: .nan, count: h.d)
        try h.q.withUnsafeBufferPointer { q in
            try h.keys.withUnsafeBufferPointer { k in
                try h.values.withUnsafeBufferPointer { v in
                    try scores.withUnsafeMutableBufferPointer { s in
                        try out.withUnsafeMutableBufferPointer { o in
                            try attentionHead(q: q.baseAddress!, keys: k.baseAddress! + head * h.d, values: v.baseAddress! + head * h.d,
                                              headDim: h.d, rowStride: h.rowStride, capacity: h.capacity, first: first, last: last,
                                              scale: scale, softcap: softcap, scores: s.baseAddress!, out: o.baseAddress!, level: level)
                        }
                    }
                }
            }
        }
        return out
    }

    /// The bound in the file comment for this head and run.
    static func tolerance(_ h: Head, head: Int, first: Int, last: Int, scale: Float) -> Float {
        var deltaMax: Float = 0
        var vMax: Float = 0
        for p in first...last {
            let row = (p % h.capacity) * h.rowStride + head * h.d
            var s: Float = 0
            for i in 0..<h.d { s += abs(h.q[i] * h.keys[row + i]); vMax = max(vMax, abs(h.values[row + i])) }
            deltaMax = max(deltaMax, 2 * Float(h.d) * 0x1p-24 * s * scale)
        }
        let count = Float(last - first + 1)
        return (expf(2 * deltaMax) - 1 + 4 * count * 0x1p-24) * vMax + 1e-6
    }

    static var levels: [KernelLevel] { [.scalar, .avx2, .avx512, .neon].filter(\.isSupported) }

    @Test(arguments: [(256, 1, 64, 0, 40), (256, 2, 600, 100, 611), (128, 4, 37, 0, 0), (72, 1, 530, 30, 540), (24, 3, 9, 5, 13)])
    func matchesSwiftTwin(_ c: (d: Int, kvHeads: Int, capacity: Int, first: Int, last: Int)) throws {
        let h = Self.makeHead(d: c.d, kvHeads: c.kvHeads, capacity: c.capacity, seed: UInt64(c.d * 31 + c.capacity))
        let scale = 1 / Float(c.d).squareRoot()
        for head in 0..<c.kvHeads {
            for softcap in [nil, Float(50)] as [Float?] {
                let ref = try Self.run(h, head: head, first: c.first, last: c.last, scale: scale, softcap: softcap, level: .reference)
                let tol = Self.tolerance(h, head: head, first: c.first, last: c.last, scale: scale)
                for level in Self.levels {
                    let got = try Self.run(h, head: head, first: c.first, last: c.last, scale: scale, softcap: softcap, level: level)
                    let err = zip(got, ref).map { abs($0 - $1) }.max() ?? .nan
                    #expect(err <= tol, "level \(level) head \(head) softcap \(String(describing: softcap)): error \(err) > \(tol)")
                }
            }
        }
    }

    /// A run off by one position (or with keys and values of another head) differs by far more
    /// than the tolerance: the comparison above can fail.
    @Test func detectsWrongRun() throws {
        let h = Self.makeHead(d: 256, kvHeads: 2, capacity: 64, seed: 9)
        let scale: Float = 1 / 16
        let ref = try Self.run(h, head: 0, first: 3, last: 40, scale: scale, softcap: nil, level: .reference)
        let tol = Self.tolerance(h, head: 0, first: 3, last: 40, scale: scale)
        let shifted = try Self.run(h, head: 0, first: 4, last: 40, scale: scale, softcap: nil, level: Kernels.best)
        let otherHead = try Self.run(h, head: 1, first: 3, last: 40, scale: scale, softcap: nil, level: Kernels.best)
        #expect((zip(shifted, ref).map { abs($0 - $1) }.max() ?? 0) > 10 * tol)
        #expect((zip(otherHead, ref).map { abs($0 - $1) }.max() ?? 0) > 10 * tol)
    }

    @Test func refusesBadRuns() {
        let h = Self.makeHead(d: 8, kvHeads: 1, capacity: 4, seed: 1)
        #expect(throws: AttentionKernelError.self) { try Self.run(h, head: 0, first: 0, last: 4, scale: 1, softcap: nil, level: .scalar) }
        #expect(throws: AttentionKernelError.self) { try Self.run(h, head: 0, first: 3, last: 2, scale: 1, softcap: nil, level: .scalar) }
    }

    @Test func bandwidthProbeReportsAPlausibleRate() throws {
        let pool = ThreadPool(threads: 2)
        var calls = 0  // bench passes a barrier here: once per timed pass, so ranks stream together
        let rate = try measureReadBandwidth(bytes: 16 << 20, passes: 2, pool: pool, beforePass: { calls += 1 })
        #expect(calls == 2)
        // Anything from a slow emulated core to a cache-resident burst: 100 MB/s ... 10 TB/s.
        #expect(rate > 1e8 && rate < 1e13, "\(rate) B/s")
    }
}

/// The MLP activation: every level against the Swift twin over a wide range of inputs.
/// Tolerance: the twin and the kernels compute 0.5 z (1 + tanh y) and z / (1 + e^(-2y)), equal
/// in exact arithmetic; each evaluates a handful of f32 operations (a libm call of <= 1 ulp or a
/// polynomial exp with < 2e-8 relative truncation) so they differ by at most ~8 ulp of the
/// result: 1e-6 relative (8.4 ulp) plus 1e-30 absolute slack for results that underflow.
/// For negative z the twin's 1 + tanh y cancels: tanh y is near -1 and rounded to 2^-24 absolute,
/// so the twin itself is only accurate to 0.5 |z u| 2^-24 (x2 for the rounding of 1 + tanh):
/// add 1.2e-7 |z u| absolute. (The kernels' z / (1 + e^(-2y)) does not cancel.)
@Suite struct GeluTests {
    @Test func matchesSwiftTwin() {
        var rng = SplitMix64(seed: 42)
        var z: [Float] = (0..<4099).map { _ in rng.normal() * 4 }
        z += [0, -0.0, 1e-20, -1e-20, 10, -10, 30, -30, 80, -80, 200, -200, 1e30, -1e30]
        let u: [Float] = z.indices.map { _ in rng.normal() }
        var ref = z
        ref.withUnsafeMutableBufferPointer { g in u.withUnsafeBufferPointer { geluMul(g.baseAddress!, $0.baseAddress!, count: g.count, level: .reference) } }
        for level in [KernelLevel.scalar, .avx2, .avx512, .neon].filter(\.isSupported) {
            var got = z
            got.withUnsafeMutableBufferPointer { g in u.withUnsafeBufferPointer { geluMul(g.baseAddress!, $0.baseAddress!, count: g.count, level: level) } }
            for i in z.indices {
                let err = abs(got[i] - ref[i])
                let tol: Float = 1e-6 * abs(ref[i]) + 1.2e-7 * abs(z[i] * u[i]) + 1e-30
                #expect(err <= tol, "level \(level) z \(z[i]) u \(u[i]): \(got[i]) vs \(ref[i])")
            }
        }
    }

    /// An element's result does not depend on its position or the buffer length (the vector
    /// tails use the same formula): batch invariance.
    @Test func positionIndependent() {
        var rng = SplitMix64(seed: 8)
        let z: [Float] = (0..<37).map { _ in rng.normal() * 3 }, u: [Float] = (0..<37).map { _ in rng.normal() }
        for level in [KernelLevel.scalar, .avx2, .avx512, .neon].filter(\.isSupported) {
            var whole = z
            whole.withUnsafeMutableBufferPointer { g in u.withUnsafeBufferPointer { geluMul(g.baseAddress!, $0.baseAddress!, count: 37, level: level) } }
            for i in 0..<37 {
                var one = [z[i]]
                one.withUnsafeMutableBufferPointer { g in u.withUnsafeBufferPointer { geluMul(g.baseAddress!, $0.baseAddress! + i, count: 1, level: level) } }
                #expect(one[0].bitPattern == whole[i].bitPattern, "level \(level) element \(i)")
            }
        }
    }

    /// A wrong constant (0.04 instead of 0.044715) is caught by the same bound.
    @Test func detectsWrongFormula() {
        let z: [Float] = [-2, -1, 0.5, 1.5, 3]
        for (x, reference) in z.map({ ($0, 0.5 * $0 * (1 + tanhf(0.7978845608028654 * ($0 + 0.04 * $0 * $0 * $0)))) }) {
            var g = [x]
            let u: [Float] = [1]
            g.withUnsafeMutableBufferPointer { gp in u.withUnsafeBufferPointer { geluMul(gp.baseAddress!, $0.baseAddress!, count: 1, level: Kernels.best) } }
            if abs(x) > 0.6 { #expect(abs(g[0] - reference) > 1e-6 * abs(reference)) }
        }
    }
}

/// The attention kernel on f16 and q8_0 cache rows (`--kv-type`): every SIMD level against the
/// portable C twin, and every level against the Swift twin run on the same rows converted to
/// f32 (what the kernels must compute: f32 attention over the stored values). Rows are made by
/// `KVCacheType.store` from random f32 heads, so ring wrap-around, several KV heads per row
/// stride and soft-capping are covered as for f32.
///
/// Tolerance: the file comment's bound, computed from the converted values (the kernels read
/// exactly those). The dot products differ only in summation order (q8_0's kernels multiply by
/// the block scale after summing a block, the Swift twin per value: one more rounding of at
/// most 2^-24 relative per term, inside the d * 2^-24 term already allowed per ordering).
@Suite struct StoredKVAttentionTests {
    struct Rows {
        var q: [Float]
        var keys: [UInt8], values: [UInt8]
        /// The stored rows converted back to f32 (same layout, headDim floats per head row).
        var keysF: [Float], valuesF: [Float]
        let d: Int, kvHeads: Int, capacity: Int, rowBytes: Int
    }

    static func makeRows(_ type: KVCacheType, d: Int, kvHeads: Int, capacity: Int, seed: UInt64) -> Rows {
        var rng = SplitMix64(seed: seed)
        let rows = capacity * kvHeads, rb = type.bytes(values: d)
        let kf: [Float] = (0..<(rows * d)).map { _ in rng.normal() }
        let vf: [Float] = (0..<(rows * d)).map { _ in rng.normal() }
        var k = [UInt8](repeating: 0, count: rows * rb), v = k
        var kb = [Float](repeating: 0, count: rows * d), vb = kb
        for r in 0..<rows {
            kf.withUnsafeBufferPointer { x in k.withUnsafeMutableBytes { type.store(x.baseAddress! + r * d, count: d, into: $0.baseAddress! + r * rb) } }
            vf.withUnsafeBufferPointer { x in v.withUnsafeMutableBytes { type.store(x.baseAddress! + r * d, count: d, into: $0.baseAddress! + r * rb) } }
            k.withUnsafeBytes { b in kb.withUnsafeMutableBufferPointer { type.load(b.baseAddress! + r * rb, count: d, into: $0.baseAddress! + r * d) } }
            v.withUnsafeBytes { b in vb.withUnsafeMutableBufferPointer { type.load(b.baseAddress! + r * rb, count: d, into: $0.baseAddress! + r * d) } }
        }
        return Rows(q: (0..<d).map { _ in rng.normal() }, keys: k, values: v, keysF: kb, valuesF: vb,
                    d: d, kvHeads: kvHeads, capacity: capacity, rowBytes: rb)
    }

    static func run(_ type: KVCacheType, _ h: Rows, head: Int, first: Int, last: Int, scale: Float, softcap: Float?,
                    level: KernelLevel) throws -> [Float] {
        var scores = [Float](repeating: .nan, count: last - first + 1)
        var out = [Float](repeating: .nan, count: h.d)
        try h.keys.withUnsafeBytes { k in
            try h.values.withUnsafeBytes { v in
                try attentionHead(q: h.q, keys: k.baseAddress! + head * h.rowBytes, values: v.baseAddress! + head * h.rowBytes,
                                  kvType: type, headDim: h.d, rowBytes: h.kvHeads * h.rowBytes, capacity: h.capacity,
                                  first: first, last: last, scale: scale, softcap: softcap, scores: &scores, out: &out, level: level)
            }
        }
        return out
    }

    static func tolerance(_ h: Rows, head: Int, first: Int, last: Int, scale: Float) -> Float {
        let asF32 = AttentionTests.Head(q: h.q, keys: h.keysF, values: h.valuesF, d: h.d, rowStride: h.kvHeads * h.d, capacity: h.capacity)
        return AttentionTests.tolerance(asF32, head: head, first: first, last: last, scale: scale)
    }

    // (type, d, kvHeads, capacity, first, last): q8_0 needs d a multiple of 32; f16 also runs
    // head dims with vector tails (72, 24).
    static let cases: [(KVCacheType, Int, Int, Int, Int, Int)] = [
        (.f16, 256, 1, 64, 0, 40), (.f16, 256, 2, 600, 100, 611), (.f16, 72, 1, 530, 30, 540), (.f16, 24, 3, 9, 5, 13),
        (.q8_0, 256, 1, 64, 0, 40), (.q8_0, 256, 2, 600, 100, 611), (.q8_0, 128, 4, 37, 0, 0), (.q8_0, 32, 3, 9, 5, 13),
        (.f32, 256, 2, 600, 100, 611),
    ]

    @Test(arguments: Self.cases.indices)
    func everyLevelMatchesTheTwins(_ index: Int) throws {
        let (type, d, kvHeads, capacity, first, last) = Self.cases[index]
        let h = Self.makeRows(type, d: d, kvHeads: kvHeads, capacity: capacity, seed: UInt64(index * 977 + d))
        let scale = 1 / Float(d).squareRoot()
        for head in 0..<kvHeads {
            for softcap in [nil, Float(50)] as [Float?] {
                let tol = Self.tolerance(h, head: head, first: first, last: last, scale: scale)
                let reference = try Self.run(type, h, head: head, first: first, last: last, scale: scale, softcap: softcap, level: .reference)
                let scalar = try Self.run(type, h, head: head, first: first, last: last, scale: scale, softcap: softcap, level: .scalar)
                for level in AttentionTests.levels {
                    let got = try Self.run(type, h, head: head, first: first, last: last, scale: scale, softcap: softcap, level: level)
                    let vsScalar = zip(got, scalar).map { abs($0 - $1) }.max() ?? .nan
                    let vsReference = zip(got, reference).map { abs($0 - $1) }.max() ?? .nan
                    #expect(vsScalar <= tol, "\(type) level \(level) head \(head): \(vsScalar) from the C twin > \(tol)")
                    #expect(vsReference <= tol, "\(type) level \(level) head \(head): \(vsReference) from f32 math > \(tol)")
                }
            }
        }
    }

    /// Reading the wrong type's rows (f16 bytes as q8_0 blocks) is far outside the bound: the
    /// comparison can fail.
    @Test func detectsAMisreadType() throws {
        let h = Self.makeRows(.q8_0, d: 256, kvHeads: 1, capacity: 64, seed: 5)
        let tol = Self.tolerance(h, head: 0, first: 0, last: 31, scale: 1 / 16)
        let right = try Self.run(.q8_0, h, head: 0, first: 0, last: 31, scale: 1 / 16, softcap: nil, level: Kernels.best)
        // The same bytes read as f16 rows of 136 values (34 bytes per 32 values -> 272 bytes).
        var scores = [Float](repeating: 0, count: 32), out = [Float](repeating: 0, count: 136)
        let q = Array(h.q.prefix(136))
        try h.keys.withUnsafeBytes { k in
            try h.values.withUnsafeBytes { v in
                try attentionHead(q: q, keys: k.baseAddress!, values: v.baseAddress!, kvType: .f16, headDim: 136, rowBytes: 272,
                                  capacity: 64, first: 0, last: 31, scale: 1 / 16, softcap: nil, scores: &scores, out: &out, level: Kernels.best)
            }
        }
        let diff = zip(out, right.prefix(136)).map { abs($0 - $1) }.filter { !$0.isNaN }.max() ?? .infinity
        #expect(diff > 10 * tol || out.contains { !$0.isFinite })
    }

    @Test func refusesAHeadDimQ8_0CannotHold() {
        var scores = [Float](repeating: 0, count: 4), out = [Float](repeating: 0, count: 24)
        let q = [Float](repeating: 1, count: 24), row = [UInt8](repeating: 0, count: 4 * 100)
        #expect(throws: AttentionKernelError.badRow(type: .q8_0, headDim: 24, rowBytes: 100)) {
            try row.withUnsafeBytes { r in
                try attentionHead(q: q, keys: r.baseAddress!, values: r.baseAddress!, kvType: .q8_0, headDim: 24, rowBytes: 100,
                                  capacity: 4, first: 0, last: 3, scale: 1, softcap: nil, scores: &scores, out: &out, level: .scalar)
            }
        }
    }
}

/// Cache rows read back: f16 within 2^-11 relative (round to nearest of an 11-bit significand:
/// half a unit in the last place is 2^-11 of the leading bit) for normal halves (|x| >= 2^-14),
/// within 2^-25 absolute below that (half the subnormal step 2^-24), saturated at +-65504.
/// q8_0 within half a quantization step per block: q = rint(x / d) with d the stored f16 scale,
/// and |x / d| <= 127 (1 + 2^-11) < 127.5 so the clamp never bites; x / d is computed with
/// 2^-24 relative error (<= 127.1 * 2^-24 < 1e-5 absolute in q units) and d * q is exact in f32
/// (an 8-bit times an 11-bit significand), so |x - d q| <= d (1/2 + 1e-5). A block whose scale
/// is an f16 subnormal (max|x| < 127 * 2^-14) gets d rounded by up to 2^-25 absolute, which can
/// push |x / d| past 127.5: then the clamp costs at most 127 * 2^-25 more.
@Suite struct KVRowRoundTripTests {
    @Test func f16WithinHalfAnUlp() {
        var rng = SplitMix64(seed: 11)
        var x: [Float] = (0..<4096).map { i in rng.normal() * powf(2, Float(i % 40 - 24)) }
        x += [0, -0.0, 65504, -65504, 65519, 1e6, -1e9, 6.1e-5, 3e-8, 1e-12]
        var row = [UInt8](repeating: 0, count: KVCacheType.f16.bytes(values: x.count))
        var back = [Float](repeating: .nan, count: x.count)
        row.withUnsafeMutableBytes { KVCacheType.f16.store(x, count: x.count, into: $0.baseAddress!) }
        row.withUnsafeBytes { KVCacheType.f16.load($0.baseAddress!, count: x.count, into: &back) }
        var worstRelative: Float = 0
        for (a, b) in zip(x, back) {
            if abs(a) > 65504 {
                #expect(b == (a > 0 ? 65504 : -65504), "\(a) saturates, got \(b)")
            } else if abs(a) >= 0x1p-14 {
                let rel = abs(a - b) / abs(a)
                worstRelative = max(worstRelative, rel)
                #expect(rel <= 0x1p-11, "\(a) -> \(b)")
            } else {
                #expect(abs(a - b) <= 0x1p-25, "\(a) -> \(b)")
            }
        }
        // The bound is nearly reached (a store that kept f32 would show 0; a truncating one 2^-10).
        #expect(worstRelative > 0x1p-12, "worst relative error \(worstRelative)")
    }

    @Test func q8_0WithinHalfAStep() {
        var rng = SplitMix64(seed: 12)
        let blocks = 256
        var x: [Float] = []
        for b in 0..<blocks {
            let scale = powf(2, Float(b % 24 - 16))   // down to 2^-16: some f16-subnormal scales
            x += (0..<32).map { _ in rng.normal() * scale }
        }
        x.replaceSubrange(0..<32, with: [Float](repeating: 0, count: 32))   // an all-zero block
        var row = [UInt8](repeating: 0, count: KVCacheType.q8_0.bytes(values: x.count))
        var back = [Float](repeating: .nan, count: x.count)
        row.withUnsafeMutableBytes { KVCacheType.q8_0.store(x, count: x.count, into: $0.baseAddress!) }
        row.withUnsafeBytes { KVCacheType.q8_0.load($0.baseAddress!, count: x.count, into: &back) }
        #expect(row.count == blocks * 34)
        var worstSteps = 0.0
        for b in 0..<blocks {
            // The stored scale (the block's first two bytes, little-endian f16).
            let d = Double(Float(Float16(bitPattern: UInt16(row[34 * b]) | UInt16(row[34 * b + 1]) << 8)))
            let amax = x[(32 * b)..<(32 * b + 32)].map { Double(abs($0)) }.max()!
            #expect(abs(d - amax / 127) <= amax / 127 * 0x1p-11 + 0x1p-25, "block \(b): scale \(d) for max \(amax)")
            for j in (32 * b)..<(32 * b + 32) {
                let err = abs(Double(x[j]) - Double(back[j]))
                let bound = d * (0.5 + 1e-5) + (d < 0x1p-14 ? 127 * 0x1p-25 : 0)
                #expect(err <= bound, "block \(b) value \(x[j]) -> \(back[j]) (step \(d))")
                if d >= 0x1p-14 { worstSteps = max(worstSteps, err / d) }
            }
        }
        #expect(back[0..<32].allSatisfy { $0 == 0 })
        // Rounding, not truncation: the worst error is close to half a step, never a whole one.
        #expect(worstSteps > 0.45 && worstSteps <= 0.5 + 1e-5, "worst error \(worstSteps) steps")
    }
}
