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

    @Test func bandwidthProbeReportsAPlausibleRate() {
        let pool = ThreadPool(threads: 2)
        let rate = measureReadBandwidth(bytes: 16 << 20, passes: 2, pool: pool)
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
