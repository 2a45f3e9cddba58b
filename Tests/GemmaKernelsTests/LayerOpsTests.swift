// The per-layer ops (LayerOps.swift) against the formulas evaluated in Float64.
//
// Tolerances: each op is a few f32 operations per element on values of order 1-10, so the
// f32 result is within a few ulps of the f64 one. RMSNorm sums n squares in f32 (relative
// error <= n * 2^-24 on the sum, ~6e-5 for n = 1024, halved by the square root) and then
// multiplies twice: 1e-4 relative plus 1e-6 absolute bounds it. RoPE, softcap, residual and
// scale are 1-3 operations: 1e-5 relative (with cosf/sinf/tanhf accurate to ~1 ulp).
import Foundation
import Testing
import GemmaKernels
import GemmaTestSupport

@Suite struct LayerOpsTests {
    static func randoms(_ n: Int, seed: UInt64, scale: Float = 3) -> [Float] {
        var g = SplitMix64(seed: seed)
        return (0..<n).map { _ in (Float(g.next() >> 40) / Float(1 << 24) * 2 - 1) * scale }
    }

    static func close(_ a: Float, _ b: Double, rel: Double, abs absTol: Double = 1e-6) -> Bool {
        Swift.abs(Double(a) - b) <= rel * Swift.abs(b) + absTol
    }

    @Test(arguments: [(1, 8), (3, 640), (5, 1024), (2, 7)])
    func rmsNormMatchesFormula(rows: Int, width n: Int) {
        let x = Self.randoms(rows * n, seed: 1), w = Self.randoms(n, seed: 2, scale: 1)
        var y = [Float](repeating: 0, count: rows * n), yu = y
        let eps: Float = 1e-6
        rmsNorm(x, rows: rows, width: n, weight: w, eps: eps, into: &y)
        rmsNorm(x, rows: rows, width: n, weight: nil, eps: eps, into: &yu)
        for r in 0..<rows {
            let row = x[(r * n)..<((r + 1) * n)].map(Double.init)
            let inv = 1 / ((row.reduce(0) { $0 + $1 * $1 } / Double(n)) + Double(eps)).squareRoot()
            for i in 0..<n {
                #expect(Self.close(y[r * n + i], row[i] * inv * Double(w[i]), rel: 1e-4), "row \(r) i \(i)")
                #expect(Self.close(yu[r * n + i], row[i] * inv, rel: 1e-4), "unweighted row \(r) i \(i)")
            }
        }
    }

    /// The plain loop rmsNorm was before its rows' sums were interleaved and its scaling
    /// vectorised: one row at a time, one element at a time.
    static func rmsNormRowByRow(_ x: [Float], rows: Int, width n: Int, weight w: [Float]?, eps: Float) -> [Float] {
        var y = [Float](repeating: 0, count: rows * n)
        for r in 0..<rows {
            var ss: Float = 0
            for i in 0..<n { ss += x[r * n + i] * x[r * n + i] }
            let inv = 1 / (ss / Float(n) + eps).squareRoot()
            for i in 0..<n { y[r * n + i] = w.map { x[r * n + i] * inv * $0[i] } ?? x[r * n + i] * inv }
        }
        return y
    }

    /// Four rows at a time with eight-lane scaling must give the plain loop's bits (each row's
    /// sum is still one sequential chain, each element still two roundings), which the
    /// row-wise split over threads also relies on; 7 rows = one block and a tail, widths with
    /// and without an eight-lane tail, weighted and not, out of place and in place.
    @Test(arguments: [640, 256, 7, 20])
    func rmsNormEqualsThePlainLoop(width n: Int) {
        let rows = 7
        let x = Self.randoms(rows * n, seed: 5), w = Self.randoms(n, seed: 6, scale: 1)
        for weight in [w, nil] {
            let expected = Self.rmsNormRowByRow(x, rows: rows, width: n, weight: weight, eps: 1e-6)
            var out = [Float](repeating: 0, count: rows * n), inPlace = x
            rmsNorm(x, rows: rows, width: n, weight: weight, eps: 1e-6, into: &out)
            inPlace.withUnsafeMutableBufferPointer { p in
                rmsNorm(p.baseAddress!, rows: rows, width: n, weight: weight, eps: 1e-6, into: p.baseAddress!)
            }
            #expect(out == expected && inPlace == expected, "width \(n), weighted \(weight != nil)")
        }
    }

    @Test func rmsNormInPlaceEqualsOutOfPlace() {
        let x = Self.randoms(3 * 64, seed: 3), w = Self.randoms(64, seed: 4)
        var out = [Float](repeating: 0, count: x.count), inPlace = x
        rmsNorm(x, rows: 3, width: 64, weight: w, eps: 1e-6, into: &out)
        inPlace.withUnsafeMutableBufferPointer { p in
            rmsNorm(p.baseAddress!, rows: 3, width: 64, weight: w, eps: 1e-6, into: p.baseAddress!)
        }
        #expect(out == inPlace)
    }

    @Test(arguments: [(2, 3, 8), (1, 4, 256), (3, 1, 64)])
    func ropeRotatesPairsByTheTableAngles(tokens t: Int, heads: Int, headDim d: Int) {
        let half = d / 2
        let positions = (0..<t).map { 7 + 13 * $0 }
        let inv = (0..<half).map { Float(1 / pow(10000.0, Double(2 * $0) / Double(d))) }
        var cos = [Float](repeating: 0, count: t * half), sin = cos
        ropeTable(positions: positions, inverseFrequencies: inv, cos: &cos, sin: &sin)
        let x = Self.randoms(t * heads * d, seed: 5)
        var y = x
        applyRope(&y, cos: cos, sin: sin, tokens: t, heads: heads, headDim: d)
        for i in 0..<t {
            for h in 0..<heads {
                for j in 0..<half {
                    let angle = Double(positions[i]) * Double(inv[j])
                    let a = Double(x[(i * heads + h) * d + j]), b = Double(x[(i * heads + h) * d + j + half])
                    // Angle rounding: f32 position * f32 frequency is exact to 2^-24 relative,
                    // i.e. up to ~3e-5 rad at angle 400; bound the error by |angle| * 1e-7.
                    let tol = 1e-5 + abs(angle) * 1e-7 * (abs(a) + abs(b))
                    #expect(abs(Double(y[(i * heads + h) * d + j]) - (a * Foundation.cos(angle) - b * Foundation.sin(angle))) <= tol)
                    #expect(abs(Double(y[(i * heads + h) * d + j + half]) - (b * Foundation.cos(angle) + a * Foundation.sin(angle))) <= tol)
                }
            }
        }
        // A zero frequency leaves its pair alone (Gemma 4's proportional RoPE).
        var z = x
        let zeros = [Float](repeating: 0, count: half)
        var c1 = [Float](repeating: 0, count: t * half), s1 = c1
        ropeTable(positions: positions, inverseFrequencies: zeros, cos: &c1, sin: &s1)
        applyRope(&z, cos: c1, sin: s1, tokens: t, heads: heads, headDim: d)
        #expect(z == x)
    }

    /// Soft-cap at every level against tanh in Float64. The SIMD levels compute
    /// 2 / (1 + e^(-2x)) - 1: near x = 0 the subtraction from 1 leaves ~2-4 ulp(1) absolute,
    /// so their bound is cap * 6e-7 absolute (1.8e-5 on a logit for cap 30, against the
    /// goldens' 1e-3) plus 1e-6 relative; the reference (libm tanhf) keeps 1e-5 relative. A
    /// tail shorter than a vector gives the same bits as the element inside a full one.
    @Test(arguments: [KernelLevel.reference, .scalar, .avx2, .avx512, .neon])
    func softcapAtEveryLevel(_ level: KernelLevel) {
        guard level == .reference || level.isSupported else { return }
        var v = Self.randoms(1000, seed: 6, scale: 100)
        v += [0, -0.0, 1e-20, -1e-20, 1e-3, -1e-3, 5e3, -5e3, 1e30, -1e30]
        let original = v
        v.withUnsafeMutableBufferPointer { softcap($0, cap: 30, level: level) }
        for (a, b) in zip(v, original) {
            let want = 30 * tanh(Double(b) / 30)
            if level == .reference || level == .scalar || level == .neon {
                #expect(Self.close(a, want, rel: 1e-5), "\(level) \(b): \(a) vs \(want)")
            } else {
                #expect(abs(Double(a) - want) <= 30 * 6e-7 + 1e-6 * abs(want), "\(level) \(b): \(a) vs \(want)")
            }
            #expect(abs(a) <= 30)
        }
        for i in [0, 3, 7, 15, 999] {
            var one = [original[i]]
            one.withUnsafeMutableBufferPointer { softcap($0, cap: 30, level: level) }
            #expect(one[0].bitPattern == v[i].bitPattern, "\(level) element \(i)")
        }
        // The same values capped at 20 instead of 30 are caught by the same bound.
        var w: [Float] = [2, 15, -40]
        w.withUnsafeMutableBufferPointer { softcap($0, cap: 20, level: level) }
        for (a, b) in zip(w, [Float(2), 15, -40]) { #expect(abs(Double(a) - 30 * tanh(Double(b) / 30)) > 1e-3) }
    }

    @Test func softcapResidualAndScale() {
        var v = Self.randoms(1000, seed: 6, scale: 100)
        let original = v
        v.withUnsafeMutableBufferPointer { softcap($0, cap: 30) }
        for (a, b) in zip(v, original) {
            #expect(abs(Double(a) - 30 * tanh(Double(b) / 30)) <= 30 * 6e-7 + 1e-6 * abs(30 * tanh(Double(b) / 30)))
            #expect(abs(a) <= 30)
        }
        var x = Self.randoms(100, seed: 7)
        let b = Self.randoms(100, seed: 8), x0 = x
        addResidual(b, into: &x, count: 100)
        #expect(x == zip(x0, b).map { $0 + $1 })
        scale(&x, by: 0.5, count: 100)
        #expect(x == zip(x0, b).map { ($0 + $1) * 0.5 })
    }
}
