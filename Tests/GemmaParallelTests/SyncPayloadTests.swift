// The compact sum all-reduce payloads (`--sync-type`): bf16 and q8_0 round-trip error
// bounds against the scalar encoders, and that N ranks of `SyncPayloadCommunicator` end with
// bit-identical sums close to the exact ones, refuse mismatched types on every rank, and
// are held by the emulated link for the compact bytes they send.
import Foundation
import Testing
import GemmaTestSupport
@testable import GemmaParallel

@Suite struct SyncPayloadTests {
    /// Values spread over many binades, both signs, some exact zeros.
    static func values(count: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { i in
            if i % 17 == 5 { return 0 }
            let mantissa = Float(rng.unit()) * 2 - 1
            let exponent = Float(Int(rng.unit() * 24) - 12)
            return mantissa * Float(pow(2.0, Double(exponent)))
        }
    }

    static func roundTrip(_ payload: SyncPayload, _ values: [Float]) -> (decoded: [Float], bytes: [UInt8]) {
        var bytes = [UInt8](repeating: 0xAA, count: payload.encodedBytes(count: values.count))
        var decoded = [Float](repeating: .nan, count: values.count)
        values.withUnsafeBufferPointer { v in bytes.withUnsafeMutableBytes { payload.encode(v, into: $0) } }
        bytes.withUnsafeBytes { b in decoded.withUnsafeMutableBufferPointer { payload.decode(b, into: $0, accumulate: false) } }
        return (decoded, bytes)
    }

    @Test func parsesNamesAndSizes() {
        #expect(SyncPayload(parsing: "F32") == .f32 && SyncPayload(parsing: "bf16") == .bf16)
        #expect(SyncPayload(parsing: "q8_0") == .q8_0 && SyncPayload(parsing: "q8") == .q8_0)
        #expect(SyncPayload(parsing: "f16") == nil && SyncPayload(parsing: "") == nil)
        #expect(SyncPayload.f32.encodedBytes(count: 640) == 2560)
        #expect(SyncPayload.bf16.encodedBytes(count: 640) == 1280)
        #expect(SyncPayload.q8_0.encodedBytes(count: 640) == 20 * 36)
        #expect(SyncPayload.q8_0.encodedBytes(count: 33) == 2 * 36)  // a short last block is a whole block
    }

    @Test func f32IsExact() {
        let v = Self.values(count: 100, seed: 1) + [.infinity, -.infinity, -0.0, .leastNonzeroMagnitude]
        #expect(Self.roundTrip(.f32, v).decoded.map(\.bitPattern) == v.map(\.bitPattern))
    }

    /// bf16 keeps 8 significant bits, rounded to nearest: relative error at most half an
    /// ulp, 2^-8, for every normal value; the result is a bf16 value (low 16 bits zero).
    @Test func bf16RoundTripWithinHalfUlp() {
        let v = Self.values(count: 5000, seed: 2)
        let decoded = Self.roundTrip(.bf16, v).decoded
        for (x, y) in zip(v, decoded) {
            #expect(y.bitPattern & 0xFFFF == 0)
            #expect(abs(x - y) <= abs(x) * 0x1p-8, "\(x) -> \(y)")
        }
        // Ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
        let ties = Self.roundTrip(.bf16, [1 + 0x1p-8, 1 + 3 * 0x1p-8, -(1 + 0x1p-8)]).decoded
        #expect(ties == [1, 1 + 0x1p-6, -1])
        let special = Self.roundTrip(.bf16, [.infinity, -.infinity, .nan, .greatestFiniteMagnitude]).decoded
        #expect(special[0] == .infinity && special[1] == -.infinity && special[2].isNaN && special[3] == .infinity)
    }

    /// q8_0: value = q * d with d = amax / 127 in f32; error at most half a step, d / 2,
    /// plus the f32 roundings of x / d and of q * d (each at most 127 * 2^-24 of a step).
    @Test(arguments: [32, 70, 640, 1])
    func q8RoundTripWithinHalfAStep(count: Int) {
        // Scales from tiny to far beyond f16's range: nothing is clipped.
        for (seed, scale) in [(3, Float(1)), (4, Float(1e-6)), (5, Float(3e4)), (6, Float(1e-9)), (7, Float(1e12))] {
            let v = Self.values(count: count, seed: UInt64(seed)).map { $0 * scale }
            let (decoded, bytes) = Self.roundTrip(.q8_0, v)
            #expect(bytes.count == (count + 31) / 32 * 36)
            for block in 0..<((count + 31) / 32) {
                let range = (block * 32)..<min(count, block * 32 + 32)
                let d = bytes[(block * 36)..<(block * 36 + 4)].withUnsafeBytes { Float(bitPattern: $0.loadUnaligned(as: UInt32.self)) }
                let amax = v[range].map(abs).max()!
                #expect(d == amax / 127)
                for i in range {
                    #expect(abs(v[i] - decoded[i]) <= d * (0.5 + 2 * 127 * 0x1p-24), "\(v[i]) -> \(decoded[i]), step \(d)")
                }
            }
        }
    }

    /// The encoder's bytes equal the plain definition (d = amax / 127, q = x / d rounded half
    /// away from zero with the standard library, clamped to +-127, zero padding) on random
    /// values at several scales, on exact ties (k + 0.5 steps, both signs) and on zeros.
    @Test func q8BytesEqualThePlainDefinition() {
        func reference(_ v: [Float]) -> [UInt8] {
            var out: [UInt8] = []
            for start in stride(from: 0, to: v.count, by: 32) {
                let block = v[start..<min(v.count, start + 32)]
                let amax = block.map(abs).max()!
                let d: Float = block.allSatisfy(\.isFinite) ? amax / 127 : .nan
                withUnsafeBytes(of: d.bitPattern) { out += $0 }
                for j in 0..<32 {
                    var q: Int8 = 0
                    if d.isFinite && d > 0 && start + j < v.count {
                        q = Int8(min(127, max(-127, (v[start + j] / d).rounded(.toNearestOrAwayFromZero))))
                    }
                    out.append(UInt8(bitPattern: q))
                }
            }
            return out
        }
        var cases: [[Float]] = [[Float](repeating: 0, count: 40)]
        for (seed, scale) in [(11, Float(1)), (12, Float(1e-7)), (13, Float(6e4)), (14, Float(1e20))] {
            cases.append(Self.values(count: 333, seed: UInt64(seed)).map { $0 * scale })
        }
        // Ties: amax 127 makes d exactly 1, so k + 0.5 lands exactly halfway.
        let ties: [Float] = (0..<63).map { (k: Int) -> Float in
            let magnitude = Float(k % 126) + 0.5
            return k % 2 == 0 ? magnitude : -magnitude
        }
        cases.append([127] + ties)
        let edges: [Float] = [-127, 0.5, -0.5, 1.5, -1.5, 126.5, -126.5, 0.49999997, -0.49999997, 2.5000002]
        cases.append(edges)
        for v in cases {
            #expect(Self.roundTrip(.q8_0, v).bytes == reference(v), "\(v.prefix(8))")
        }
    }

    @Test func q8NonFiniteBlockDecodesToNaN() {
        var v = [Float](repeating: 1, count: 64)
        v[40] = .infinity
        let decoded = Self.roundTrip(.q8_0, v).decoded
        // 1 / 127 * 127 need not be exactly 1: within the half-step bound.
        #expect(decoded[0..<32].allSatisfy { abs($0 - 1) <= 0.5 / 127 })
        #expect(decoded[32..<64].allSatisfy { $0.isNaN })
        #expect(Self.roundTrip(.q8_0, [Float](repeating: 0, count: 40)).decoded == [Float](repeating: 0, count: 40))
    }

    /// Every rank ends with the same bits, and the sum is within the payload's bound of the
    /// exact (f64) sum: the encoding errors of the N contributions plus N f32 roundings.
    @Test(arguments: [2, 3, 4])
    func ranksEndBitIdentical(ranks: Int) throws {
        let count = 1000  // not a multiple of 32
        let inputs = (0..<ranks).map { Self.values(count: count, seed: UInt64(10 + $0)) }
        for payload in SyncPayload.allCases {
            let results = try LocalCommunicator.run(ranks: ranks) { local -> [Float] in
                let comm = SyncPayloadCommunicator(local, payload: payload)
                var mine = inputs[comm.rank]
                try mine.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
                // Other collectives pass through untouched.
                var m: [Float] = [Float(comm.rank)]
                try m.withUnsafeMutableBufferPointer { try comm.allReduceMax($0) }
                #expect(m == [Float(ranks - 1)])
                return mine
            }
            for r in 1..<ranks { #expect(results[r].map(\.bitPattern) == results[0].map(\.bitPattern), "\(payload) rank \(r)") }
            for i in 0..<count {
                let exact = inputs.reduce(0.0) { $0 + Double($1[i]) }
                let magnitudes = inputs.reduce(0.0) { $0 + Double(abs($1[i])) }
                var encodingError = 0.0
                switch payload {
                case .f32: encodingError = 0
                case .bf16: encodingError = magnitudes * 0x1p-8
                case .q8_0:
                    let block = (i / 32 * 32)..<min(count, i / 32 * 32 + 32)
                    // Each rank's step is its block's amax / 127 (in f32: 2^-24 relative).
                    encodingError = inputs.reduce(0.0) { acc, v in
                        acc + Double(v[block].map(abs).max()!) / 127 * (1 + 0x1p-23) * (0.5 + 2 * 127 * 0x1p-24)
                    }
                }
                let bound = encodingError + Double(ranks) * 0x1p-23 * (magnitudes + encodingError)
                #expect(abs(Double(results[0][i]) - exact) <= bound, "\(payload) [\(i)] \(results[0][i]) vs \(exact)")
            }
        }
    }

    @Test func mismatchedTypesFailOnEveryRankWithTheSameMessage() throws {
        let messages = try LocalCommunicator.run(ranks: 3) { local -> String in
            let comm = SyncPayloadCommunicator(local, payload: local.rank == 2 ? .q8_0 : .bf16)
            var v: [Float] = [1, 2, 3]
            do {
                try v.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        #expect(messages.allSatisfy { $0 == messages[0] })
        #expect(messages[0].contains("--sync-type is q8_0 on rank 2 but bf16 on rank 0"), "\(messages[0])")
    }

    /// The decorator order used by the commands: SyncPayload outside EmulatedLink, so the
    /// link holds the all-gather of the compact payload, not a 4-byte-per-value all-reduce.
    @Test func emulatedLinkHoldsTheCompactBytes() throws {
        let link = EmulatedLink(latency: 1e-4, bytesPerSecond: 1.25e6)  // 10 Mbit/s: bytes dominate
        for payload in [SyncPayload.bf16, .q8_0] {
            let held = try LocalCommunicator.run(ranks: 2) { local -> Double in
                let emulated = EmulatedLinkCommunicator(local, link: link)
                let comm = SyncPayloadCommunicator(emulated, payload: payload)
                var v = [Float](repeating: 1, count: 640)
                try v.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
                return emulated.heldSeconds
            }
            // The one-time type check (a 4-byte all-gather), then the payload's all-gather.
            let expected = link.allGatherSeconds(bytes: 4, ranks: 2) + link.allGatherSeconds(bytes: payload.encodedBytes(count: 640), ranks: 2)
            for h in held { #expect(abs(h - expected) < 1e-12, "\(payload): held \(h), expected \(expected)") }
        }
    }

    /// The default `allGatherBytes` (through `allGather` of floats) carries any byte
    /// pattern, including lengths that are not a multiple of 4.
    @Test func allGatherBytesCarriesArbitraryBytes() throws {
        let results = try LocalCommunicator.run(ranks: 3) { comm -> [UInt8] in
            let record: [UInt8] = (0..<7).map { UInt8(truncatingIfNeeded: $0 * 37 + comm.rank * 101 + 0x7F) }
            var out = [UInt8](repeating: 0, count: 21)
            try record.withUnsafeBytes { r in try out.withUnsafeMutableBytes { try comm.allGatherBytes(r, into: $0) } }
            return out
        }
        let expected: [UInt8] = (0..<3).flatMap { r in (0..<7).map { UInt8(truncatingIfNeeded: $0 * 37 + r * 101 + 0x7F) } }
        for result in results { #expect(result == expected) }
    }
}
