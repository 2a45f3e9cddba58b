// The prefill GEMM paths of ck_matmul (Q8_0/Q5_0 rows decoded once per matmul: ck_gemm.c at AVX-512 VNNI, ck_gemm_avx2.c at AVX2,
// 2+ tokens, columns a multiple of 64) against per-(row, token) ck_dot at the same level.
// Required: bit-identical outputs (batch invariance, issue 6): the same int32 lane sums and the
// same float operations in the same order as the one-token kernel (see ck_gemm.c).
import Foundation
import Testing
@testable import GemmaKernels
import GemmaTestSupport

@Suite struct GemmTests {
    @Test(arguments: [WeightType.q8_0, .q5_0], [KernelLevel.avx2, .avx512])
    func gemmEqualsPerRowDots(_ type: WeightType, _ level: KernelLevel) throws {
        guard level.isSupported else { return }
        var rng = SplitMix64(seed: 7 + UInt64(type.rawValue))
        for cols in [640, 128, 192, 576, 96, 160] {  // 576 and 192: an odd number of block pairs; 96: fewer blocks than one AVX2 group of four; 96 and 160: an odd block count (AVX2 Q5_0's last block paired with zeros)
            let rows = 53
            let m = try WeightMatrix(type: type, rows: rows, cols: cols)
            for r in 0..<rows {
                let bytes = randomRow(type, cols: cols, rng: &rng)
                bytes.withUnsafeBytes { m.storage.pointer.advanced(by: r * m.rowBytes).copyMemory(from: $0.baseAddress!, byteCount: m.rowBytes) }
            }
            for tokens in [2, 3, 4, 5, 7, 8, 9, 13, 16, 33] {
                let xStride = cols + 3, yStride = rows + 2
                let x = (0..<tokens * xStride).map { _ in rng.normal() }
                for threads in [1, 2, 3] {
                    let pool = ThreadPool(threads: threads)
                    var y = [Float](repeating: .nan, count: tokens * yStride)
                    x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { matmul(m, x: xp.baseAddress!, xStride: xStride, tokens: tokens, y: $0.baseAddress!, yStride: yStride, pool: pool, level: level) }
                    }
                    var bad = 0, worst = 0.0
                    for t in 0..<tokens {
                        let xt = Array(x[t * xStride..<t * xStride + cols])
                        for r in 0..<rows {
                            let w = Array(UnsafeRawBufferPointer(start: m.row(r), count: m.rowBytes))
                            let c = DotCase(w: w, x: xt, type: type)
                            let want = c.kernel(level), got = y[t * yStride + r]
                            let err = abs(Double(got) - Double(want)) / c.bounds().s
                            worst = max(worst, err.isNaN ? .infinity : err)
                            // Batch invariance: bit-identical to the one-token kernel.
                            if got.bitPattern != want.bitPattern { bad += 1 }
                        }
                    }
                    #expect(bad == 0, "\(type) cols \(cols) tokens \(tokens) threads \(threads): \(bad) outputs differ (worst \(worst) S)")
                    #expect(y[rows].isNaN)  // padding between strided outputs untouched
                }
            }
        }
    }
}

extension GemmTests {
    /// Long rows get fewer rows per tile (4096 columns: two, 8192: one); still bit-identical.
    @Test(arguments: [WeightType.q8_0, .q5_0], [KernelLevel.avx2, .avx512])
    func longRowsSmallerTiles(_ type: WeightType, _ level: KernelLevel) throws {
        guard level.isSupported else { return }
        var rng = SplitMix64(seed: 70 + UInt64(type.rawValue))
        for cols in [4096, 8192] {
            let rows = 5
            let m = try WeightMatrix(type: type, rows: rows, cols: cols)
            for r in 0..<rows {
                let bytes = randomRow(type, cols: cols, rng: &rng)
                bytes.withUnsafeBytes { m.storage.pointer.advanced(by: r * m.rowBytes).copyMemory(from: $0.baseAddress!, byteCount: m.rowBytes) }
            }
            for tokens in [2, 5, 9] {
                let x = (0..<tokens * cols).map { _ in rng.normal() }
                var want = [Float](repeating: 0, count: tokens * rows)
                for t in 0..<tokens {
                    let xt = Array(x[t * cols..<(t + 1) * cols])
                    for r in 0..<rows {
                        let w = Array(UnsafeRawBufferPointer(start: m.row(r), count: m.rowBytes))
                        want[t * rows + r] = DotCase(w: w, x: xt, type: type).kernel(level)
                    }
                }
                for threads in [1, 2] {
                    var y = [Float](repeating: .nan, count: tokens * rows)
                    x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { matmul(m, x: xp.baseAddress!, xStride: cols, tokens: tokens, y: $0.baseAddress!, yStride: rows, pool: ThreadPool(threads: threads), level: level) }
                    }
                    #expect(y.map(\.bitPattern) == want.map(\.bitPattern), "\(type) cols \(cols) tokens \(tokens) threads \(threads)")
                }
            }
        }
    }
}

/// The split Q8_0 layout: conversion round trip, dequantizeRow/dotRow unchanged, and matmul at
/// every level against ck_dot on the GGML rows: equal at the scalar, AVX2 and NEON levels (the
/// same instructions on the rearranged bytes); at AVX-512 the same quantized activations and
/// integer sums in another f32 order, so within 3e-4 S as in MatmulTests.
@Suite struct SplitQ8Tests {
    @Test(arguments: [640, 96, 32, 608])
    func splitLayoutMatchesGGML(_ cols: Int) throws {
        var rng = SplitMix64(seed: 300 + UInt64(cols))
        let rows = 41
        let original = try WeightMatrix(type: .q8_0, rows: rows, cols: cols)
        var rowsBytes: [[UInt8]] = []
        for r in 0..<rows {
            let bytes = randomRow(.q8_0, cols: cols, rng: &rng)
            rowsBytes.append(bytes)
            bytes.withUnsafeBytes { original.storage.pointer.advanced(by: r * original.rowBytes).copyMemory(from: $0.baseAddress!, byteCount: original.rowBytes) }
        }
        let ggml = try WeightMatrix(type: .q8_0, rows: rows, cols: cols)
        ggml.storage.pointer.copyMemory(from: original.storage.pointer, byteCount: original.byteCount)
        let split = original.splittingQ8_0()
        #expect(split.layout == .q8_0Split)
        // The bytes really moved (a no-op conversion would make every check below vacuous).
        // (With one block per row both layouts are the same bytes.)
        if cols > 32 { #expect(memcmp(split.storage.pointer, ggml.storage.pointer, ggml.byteCount) != 0) }
        let x = (0..<(3 * cols)).map { _ in rng.normal() }
        var a = [Float](repeating: 0, count: cols), b = a
        for r in 0..<rows {
            a.withUnsafeMutableBufferPointer { dequantizeRow(split, row: r, into: $0.baseAddress!) }
            b.withUnsafeMutableBufferPointer { dequantizeRow(ggml, row: r, into: $0.baseAddress!) }
            #expect(a == b)
            x.withUnsafeBufferPointer { #expect(dotRow(split, row: r, x: $0.baseAddress!) == dotRow(ggml, row: r, x: $0.baseAddress!)) }
        }
        for tokens in [1, 3] {
            for threads in [1, 2] {
                let pool = ThreadPool(threads: threads)
                for level in [KernelLevel.scalar, .avx2, .avx512, .neon].filter(\.isSupported) {
                    var y = [Float](repeating: .nan, count: tokens * rows)
                    x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { matmul(split, x: xp.baseAddress!, xStride: cols, tokens: tokens, y: $0.baseAddress!, yStride: rows, pool: pool, level: level) }
                    }
                    var bad = 0
                    for t in 0..<tokens {
                        for r in 0..<rows {
                            let d = DotCase(w: rowsBytes[r], x: Array(x[t * cols..<(t + 1) * cols]), type: .q8_0)
                            // AVX-512 reads the split row with its own f32 order; the other
                            // levels run their ordinary Q8_0 instructions on it: equal.
                            let want = d.kernel(level)
                            let ok = level == .avx512 ? abs(Double(y[t * rows + r]) - Double(want)) <= 3e-4 * d.bounds().s
                                                      : y[t * rows + r] == want
                            if !ok { bad += 1 }
                        }
                    }
                    #expect(bad == 0, "cols \(cols) tokens \(tokens) threads \(threads) \(level): \(bad) outputs differ")
                }
            }
        }
    }
}
