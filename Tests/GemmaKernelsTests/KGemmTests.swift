// The multi-token Q4_K/Q6_K paths of ck_matmul (ck_gemm_k.c at AVX-512, ck_gemm_avx2.c at AVX2: rows decoded once per matmul,
// 2+ tokens) against the one-token kernel ck_dot at the same level, per (row,
// token). Required: bit-identical outputs (batch invariance, issue 6), compared as Float bit
// patterns, for row counts that are not multiples of the four-row tile, token counts that are
// not multiples of the four-token pass, several threads and strided inputs/outputs.
import CKernels
import Foundation
import Testing
@testable import GemmaKernels
import GemmaTestSupport

@Suite struct KGemmTests {
    /// Activations with a large dynamic range across 32-value groups, some all-zero blocks
    /// (activation scale 0) and some constant-sign blocks, so the int32 lanes see extremes.
    static func activations(_ count: Int, rng: inout SplitMix64) -> [Float] {
        var x = (0..<count).map { _ in rng.normal() }
        var i = 0
        while i < count {
            let kind = rng.next() % 8
            for j in i..<min(i + 32, count) {
                switch kind {
                case 0: x[j] = 0
                case 1: x[j] = abs(x[j]) * 1e3
                case 2: x[j] *= 1e-4
                case 3: x[j] = -abs(x[j])
                default: break
                }
            }
            i += 32
        }
        return x
    }

    @Test(arguments: [WeightType.q4_K, .q6_K], [KernelLevel.avx2, .avx512])
    func multiTokenEqualsOneTokenKernel(_ type: WeightType, _ level: KernelLevel) throws {
        guard level.isSupported else { return }
        var rng = SplitMix64(seed: 0x6b67 + UInt64(type.rawValue))
        // 12288 columns: a row decodes to 27 KiB, more than the tile budget (one row per tile).
        for (rows, cols) in [(53, 1024), (6, 256), (3, 2048), (17, 768), (5, 12288)] {
            let m = try WeightMatrix(type: type, rows: rows, cols: cols)
            var rowBytes: [[UInt8]] = []
            for r in 0..<rows {
                let bytes = randomRow(type, cols: cols, rng: &rng)
                rowBytes.append(bytes)
                bytes.withUnsafeBytes { m.storage.pointer.advanced(by: r * m.rowBytes).copyMemory(from: $0.baseAddress!, byteCount: m.rowBytes) }
            }
            for tokens in Array(1...9) + [33] {
                let xStride = cols + 7, yStride = rows + 2
                let x = Self.activations(tokens * xStride, rng: &rng)
                // The one-token kernel, token by token (what a decode step computes).
                var want = [Float](repeating: 0, count: tokens * rows)
                for t in 0..<tokens {
                    let xt = Array(x[t * xStride..<t * xStride + cols])
                    for r in 0..<rows { want[t * rows + r] = DotCase(w: rowBytes[r], x: xt, type: type).kernel(level) }
                }
                for threads in [1, 2, 3] {
                    let pool = ThreadPool(threads: threads)
                    var y = [Float](repeating: .nan, count: tokens * yStride)
                    x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { matmul(m, x: xp.baseAddress!, xStride: xStride, tokens: tokens, y: $0.baseAddress!, yStride: yStride, pool: pool, level: level) }
                    }
                    var bad = 0, firstBad = ""
                    for t in 0..<tokens {
                        for r in 0..<rows where y[t * yStride + r].bitPattern != want[t * rows + r].bitPattern {
                            if bad == 0 { firstBad = "token \(t) row \(r): \(y[t * yStride + r]) vs \(want[t * rows + r])" }
                            bad += 1
                        }
                    }
                    #expect(bad == 0, "\(type) \(rows)x\(cols) tokens \(tokens) threads \(threads): \(bad) outputs differ, first \(firstBad)")
                    // Padding between strided outputs is untouched.
                    for t in 0..<tokens { #expect(y[t * yStride + rows].isNaN && y[t * yStride + rows + 1].isNaN) }
                }
            }
        }
    }

    /// The expected values are not vacuous: the one-token kernel agrees with the Swift twin
    /// within the activation-rounding bound (KernelTests' tolerance, see its header), and a
    /// different token's activations give different outputs.
    @Test(arguments: [WeightType.q4_K, .q6_K], [KernelLevel.avx2, .avx512])
    func oneTokenKernelIsTheReference(_ type: WeightType, _ level: KernelLevel) {
        guard level.isSupported else { return }
        var rng = SplitMix64(seed: 0x6b68 + UInt64(type.rawValue))
        let cols = 1024
        let w = randomRow(type, cols: cols, rng: &rng)
        let x0 = Self.activations(cols, rng: &rng), x1 = Self.activations(cols, rng: &rng)
        let c0 = DotCase(w: w, x: x0, type: type), c1 = DotCase(w: w, x: x1, type: type)
        let (s, qb) = c0.bounds()
        #expect(abs(Double(c0.kernel(level)) - Double(c0.reference())) <= qb + 3e-4 * s)
        #expect(c0.kernel(level) != c1.kernel(level))
    }
}
