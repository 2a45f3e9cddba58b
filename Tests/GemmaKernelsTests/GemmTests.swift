// The prefill GEMM path of ck_matmul (Q8_0/Q5_0 rows decoded once per matmul, AVX-512 VNNI,
// 8+ tokens, columns a multiple of 64) against per-(row, token) ck_dot at the same level.
// Tolerance as MatmulTests: the integer sums are exact (sum((a+128) w) - 128 sum(w) = sum(a w))
// and only the f32 summation order differs: 3e-4 S (see KernelTests.swift).
import Testing
@testable import GemmaKernels

@Suite struct GemmTests {
    @Test(arguments: [WeightType.q8_0, .q5_0])
    func gemmEqualsPerRowDots(_ type: WeightType) throws {
        guard KernelLevel.avx512.isSupported else { return }
        var rng = SplitMix(seed: 7 + UInt64(type.rawValue))
        for cols in [640, 128] {
            let rows = 53
            let m = try WeightMatrix(type: type, rows: rows, cols: cols)
            for r in 0..<rows {
                let bytes = randomRow(type, cols: cols, rng: &rng)
                bytes.withUnsafeBytes { m.storage.pointer.advanced(by: r * m.rowBytes).copyMemory(from: $0.baseAddress!, byteCount: m.rowBytes) }
            }
            for tokens in [8, 13] {
                let xStride = cols + 3, yStride = rows + 2
                let x = (0..<tokens * xStride).map { _ in rng.normal() }
                for threads in [1, 2, 3] {
                    let pool = ThreadPool(threads: threads)
                    var y = [Float](repeating: .nan, count: tokens * yStride)
                    x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { matmul(m, x: xp.baseAddress!, xStride: xStride, tokens: tokens, y: $0.baseAddress!, yStride: yStride, pool: pool, level: .avx512) }
                    }
                    var bad = 0, worst = 0.0
                    for t in 0..<tokens {
                        let xt = Array(x[t * xStride..<t * xStride + cols])
                        for r in 0..<rows {
                            let w = Array(UnsafeRawBufferPointer(start: m.row(r), count: m.rowBytes))
                            let c = DotCase(w: w, x: xt, type: type)
                            let want = c.kernel(.avx512), got = y[t * yStride + r]
                            let err = abs(Double(got) - Double(want)) / c.bounds().s
                            worst = max(worst, err.isNaN ? .infinity : err)
                            if !(err <= 3e-4) { bad += 1 }
                        }
                    }
                    #expect(bad == 0, "\(type) cols \(cols) tokens \(tokens) threads \(threads): \(bad) outputs differ (worst \(worst) S)")
                    #expect(y[rows].isNaN)  // padding between strided outputs untouched
                }
            }
        }
    }
}
