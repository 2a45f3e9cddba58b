// Swift scalar dequantizers and quantizers checked bit for bit against the gguf Python
// package (fixtures written by Scripts/gen_quant_fixtures.py), and exhaustive checks of the
// 16-bit float conversions.

import CKernels
import Foundation
import Testing
@testable import GemmaKernels
import GemmaTestSupport

/// One fixture file: blocks of `type` and f32 values (see Scripts/gen_quant_fixtures.py).
struct QuantFixture {
    let name: String
    let type: WeightType
    let bytes: [UInt8]
    let values: [Float]

    static let directory = TestPaths.fixture("quant")

    static func load(_ name: String) throws -> QuantFixture {
        let data = try Data(contentsOf: directory.appendingPathComponent(name))
        let raw = [UInt8](data)
        func u32(_ o: Int) -> Int { Int(raw[o]) | Int(raw[o + 1]) << 8 | Int(raw[o + 2]) << 16 | Int(raw[o + 3]) << 24 }
        guard raw.count >= 16, raw[0..<4] == [0x47, 0x51, 0x46, 0x31] else { throw FixtureError.bad(name) }
        guard let type = WeightType(rawValue: UInt32(u32(4))) else { throw FixtureError.bad(name) }
        let count = u32(8), nbytes = u32(12)
        guard raw.count == 16 + nbytes + 4 * count else { throw FixtureError.bad(name) }
        let values = (0..<count).map { i in Float(bitPattern: UInt32(truncatingIfNeeded: u32(16 + nbytes + 4 * i))) }
        return QuantFixture(name: name, type: type, bytes: Array(raw[16..<16 + nbytes]), values: values)
    }

    static func names(prefix: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasPrefix(prefix) && $0.hasSuffix(".bin") }.sorted()
    }
}

enum FixtureError: Error { case bad(String) }

@Suite struct FormatFixtureTests {
    @Test func fixturesCoverEveryFormat() throws {
        let random = Set(try QuantFixture.names(prefix: "random_").map { try QuantFixture.load($0).type })
        #expect(random == Set(WeightType.allCases))
        let real = Set(try QuantFixture.names(prefix: "real_").map { try QuantFixture.load($0).type })
        // The default model's formats (GEMMA_SPEC.md, BASELINES.md).
        #expect(real.isSuperset(of: [.q8_0, .q5_0, .q4_K, .q6_K]))
    }

    /// Bit-exact: the Swift twin does the same f32 operations in the same order as gguf's numpy code.
    @Test(arguments: try QuantFixture.names(prefix: "random_") + QuantFixture.names(prefix: "real_"))
    func dequantizeMatchesGGUF(_ name: String) throws {
        let f = try QuantFixture.load(name)
        #expect(f.type.rowBytes(f.values.count) == f.bytes.count)
        var out = [Float](repeating: .nan, count: f.values.count)
        f.bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dequantize(f.type, src.baseAddress!, count: f.values.count, into: $0.baseAddress!) }
        }
        var mismatches = 0, first = -1
        for i in 0..<out.count where out[i].bitPattern != f.values[i].bitPattern {
            mismatches += 1
            if first < 0 { first = i }
        }
        #expect(mismatches == 0, "\(name): \(mismatches) mismatches, first at \(first)")
    }

    /// Bit-exact: the quantizers produce gguf.quants.quantize's bytes (numpy astype for f16).
    @Test(arguments: try QuantFixture.names(prefix: "quant_"))
    func quantizeMatchesGGUF(_ name: String) throws {
        let f = try QuantFixture.load(name)
        var out = [UInt8](repeating: 0xAA, count: f.bytes.count)
        try f.values.withUnsafeBufferPointer { x in
            try out.withUnsafeMutableBytes { try quantize(f.type, x.baseAddress!, count: x.count, into: $0.baseAddress!) }
        }
        let diff = zip(out, f.bytes).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset)
        #expect(diff.isEmpty, "\(name): \(diff.count) bytes differ, first at \(diff.first ?? -1)")
    }

    /// Every f16 bit pattern: Swift twin, portable C conversion and the hardware conversion
    /// (F16C, `_cvtsh_ss`, via Swift's Float16) agree; float -> half -> float round-trips.
    @Test func allHalfPatterns() {
        var bad: [UInt16] = []
        for h in 0...UInt16.max {
            let ref = Float(Float16(bitPattern: h))
            let c = ck_half_to_float(h)
            let s = halfToFloat(h)
            if ref.isNaN {
                if !(c.isNaN && s.isNaN) { bad.append(h) }
            } else if c.bitPattern != ref.bitPattern || s.bitPattern != ref.bitPattern || ck_float_to_half(ref) != h {
                bad.append(h)
            }
        }
        #expect(bad.isEmpty, "\(bad.count) half patterns differ, first \(bad.prefix(5))")
    }

    /// float -> half rounding (nearest even, overflow, subnormals) of the C conversion vs Swift's
    /// Float16(Float) on every midpoint between neighbouring halves and a million random floats.
    @Test func floatToHalfRounding() {
        var rng = SplitMix64(seed: 7)
        var bad: [Float] = []
        for h in 0..<UInt16(0x7C00) {
            let a = Float(Float16(bitPattern: h)), b = Float(Float16(bitPattern: h + 1))
            let mid = (a + b) / 2  // exact in f32
            for v in [mid, mid.nextDown, mid.nextUp, -mid] where ck_float_to_half(v) != Float16(v).bitPattern {
                bad.append(v)
            }
        }
        for _ in 0..<1_000_000 {
            let v = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
            if !v.isNaN && ck_float_to_half(v) != Float16(v).bitPattern { bad.append(v) }
        }
        #expect(bad.isEmpty, "\(bad.count) floats round differently, first \(bad.prefix(5))")
    }

    /// Every bf16 bit pattern widens to the f32 with those high bits; narrowing is exact for them.
    @Test func allBF16Patterns() {
        var bad: [UInt16] = []
        for b in 0...UInt16.max {
            let f = bf16ToFloat(b)
            if f.bitPattern != UInt32(b) << 16 || (!f.isNaN && floatToBF16(f) != b) { bad.append(b) }
        }
        #expect(bad.isEmpty, "\(bad.count) bf16 patterns differ, first \(bad.prefix(5))")
    }

    /// Quantize -> dequantize stays within the format's step: Q8_0 |err| <= d/2 from rounding plus
    /// 127 * |d - f16(d)| from storing d as f16; Q4_0 |err| <= |d| (the value opposite the extreme
    /// clamps from 16 to 15) plus 16 * |d - f16(d)|.
    @Test(arguments: [WeightType.q8_0, .q4_0])
    func quantizeRoundTrip(_ type: WeightType) throws {
        var rng = SplitMix64(seed: 11)
        let n = 32 * 200
        let x = (0..<n).map { i in rng.normal() * Float(1 << (i / 32 % 12)) / 64 }
        var q = [UInt8](repeating: 0, count: type.rowBytes(n)!)
        var y = [Float](repeating: 0, count: n)
        try x.withUnsafeBufferPointer { xp in try q.withUnsafeMutableBytes { try quantize(type, xp.baseAddress!, count: n, into: $0.baseAddress!) } }
        q.withUnsafeBytes { qp in y.withUnsafeMutableBufferPointer { dequantize(type, qp.baseAddress!, count: n, into: $0.baseAddress!) } }
        for b in 0..<n / 32 {
            let block = x[32 * b..<32 * b + 32]
            let amax = block.map(abs).max()!
            let d: Float = type == .q8_0 ? amax / 127 : amax / 8
            let d16 = Float(Float16(d))
            let bound = type == .q8_0 ? d / 2 + 127 * abs(d - d16) : d + 16 * abs(d - d16)
            let worst = (32 * b..<32 * b + 32).map { abs(x[$0] - y[$0]) }.max()!
            #expect(worst <= bound * 1.0001, "block \(b): error \(worst) > bound \(bound)")
        }
    }

    /// The synthetic-model quantizers (Q5_0, Q4_K, Q6_K) against the existing dequantizers, on
    /// normal values whose scale changes from block to block. Bounds per block, from the
    /// formats: Q5_0 |err| <= d + 16 * |d - f16(d)|, d = amax / 16 (as Q4_0: the value opposite
    /// the extreme may clamp by one step). Q4_K (sub-block scale s = (max - min) / 15, block
    /// d = max s / 63, dmin = max offset / 63): |err| <= s / 2 + 8 d + dmin, rounding plus the
    /// 6-bit rounding of the scale (up to d / 2 over 15 steps) and of the offset. Q6_K (s = amax
    /// / 32, d = max s / 127): |err| <= s + 17 d, one step (the value opposite the extreme may
    /// clamp from 32 to 31, as in Q4_0) plus the int8 rounding of the scale over 32 steps. And relative RMS error below 0.06 / 0.12 / 0.03 (uniform rounding of
    /// a Gaussian block gives ~0.04 / ~0.08 / ~0.02).
    @Test(arguments: [WeightType.q5_0, .q4_K, .q6_K])
    func synthQuantizersRoundTrip(_ type: WeightType) throws {
        var rng = SplitMix64(seed: 12)
        let n = 256 * 64
        let x = (0..<n).map { i in rng.normal() * Float(1 << (i / 256 % 10)) / 64 }
        var q = [UInt8](repeating: 0, count: type.rowBytes(n)!)
        var y = [Float](repeating: 0, count: n)
        try x.withUnsafeBufferPointer { xp in try q.withUnsafeMutableBytes { try quantize(type, xp.baseAddress!, count: n, into: $0.baseAddress!) } }
        q.withUnsafeBytes { qp in y.withUnsafeMutableBufferPointer { dequantize(type, qp.baseAddress!, count: n, into: $0.baseAddress!) } }
        var errSq = 0.0, sigSq = 0.0
        for b in 0..<n / 256 {
            let sub = type == .q5_0 ? 32 : type == .q4_K ? 32 : 16
            let blockRange = 256 * b..<256 * b + 256
            var scales: [Float] = [], offsets: [Float] = []
            for s in stride(from: blockRange.lowerBound, to: blockRange.upperBound, by: sub) {
                let v = x[s..<s + sub]
                switch type {
                case .q4_K:
                    let lo = min(v.min()!, 0)
                    scales.append((v.max()! - lo) / 15); offsets.append(-lo)
                default:
                    scales.append(v.map(abs).max()! / (type == .q5_0 ? 16 : 32))
                }
            }
            for (k, s) in stride(from: blockRange.lowerBound, to: blockRange.upperBound, by: sub).enumerated() {
                let bound: Float
                switch type {
                case .q5_0: bound = scales[k] + 16 * abs(scales[k] - Float(Float16(scales[k])))
                case .q4_K: bound = scales[k] / 2 + 8 * scales.max()! / 63 + offsets.max()! / 63
                default: bound = scales[k] + 17 * scales.max()! / 127
                }
                let worst = (s..<s + sub).map { abs(x[$0] - y[$0]) }.max()!
                #expect(worst <= bound * 1.01, "\(type) sub-block at \(s): error \(worst) > bound \(bound)")
                for i in s..<s + sub {
                    errSq += Double((x[i] - y[i]) * (x[i] - y[i])) / Double(scales.max()! * scales.max()!)
                    sigSq += Double(x[i] * x[i]) / Double(scales.max()! * scales.max()!)
                }
            }
        }
        let rel = (errSq / sigSq).squareRoot()
        let limit = type == .q5_0 ? 0.06 : type == .q4_K ? 0.12 : 0.03
        print("\(type) round trip: relative RMS error \(rel)")
        #expect(rel < limit, "\(type): relative RMS error \(rel) >= \(limit)")
    }

    @Test func quantizeRejectsBadInput() {
        let x = [Float](repeating: 1, count: 40)
        var out = [UInt8](repeating: 0, count: 100)
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBytes { o in
                #expect(throws: QuantizeError.notBlockAligned(.q8_0, 40)) { try quantize(.q8_0, xp.baseAddress!, count: 40, into: o.baseAddress!) }
                #expect(throws: QuantizeError.unsupported(.q5_K)) { try quantize(.q5_K, xp.baseAddress!, count: 0, into: o.baseAddress!) }
            }
        }
        // NaN in a checkpoint must not trap the quantizer.
        var bad = [Float](repeating: 1, count: 32)
        bad[3] = .nan
        bad.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBytes { o in
                #expect(throws: Never.self) { try quantize(.q8_0, xp.baseAddress!, count: 32, into: o.baseAddress!) }
                #expect(throws: Never.self) { try quantize(.q4_0, xp.baseAddress!, count: 32, into: o.baseAddress!) }
                #expect(throws: Never.self) { try quantize(.q5_0, xp.baseAddress!, count: 32, into: o.baseAddress!) }
            }
        }
        var badK = [Float](repeating: 1, count: 256)
        badK[7] = .nan
        badK[100] = .infinity
        badK.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBytes { o in
                var big = [UInt8](repeating: 0, count: 210)
                big.withUnsafeMutableBytes { b in
                    #expect(throws: Never.self) { try quantize(.q4_K, xp.baseAddress!, count: 256, into: b.baseAddress!) }
                    #expect(throws: Never.self) { try quantize(.q6_K, xp.baseAddress!, count: 256, into: b.baseAddress!) }
                }
                _ = o
            }
        }
    }
}

/// Deterministic test randomness.
