// Bytes a worker should never act on: every truncation of every golden message, seeded random
// garbage and random bit flips. The property is "a typed WireError or a valid message", never
// a crash; anything decoded must also re-encode to something that decodes to itself.
import Testing
@testable import GemmaWire
import GemmaTestSupport


/// Outcome of decoding arbitrary bytes; fails the test if anything but a WireError is thrown.
enum Outcome: Hashable { case decoded, empty, truncated, garbage, other }

func classify(_ bytes: [UInt8]) -> Outcome {
    do {
        let m = try WireMessage.decode(bytes)
        // A decoded message is a real one: it survives its own round trip.
        #expect((try? WireMessage.decode(m.encode())) == m)
        return .decoded
    } catch let e as WireError {
        #expect(!e.description.isEmpty)
        switch e {
        case .empty: return .empty
        case .truncated: return .truncated
        case .garbage: return .garbage
        default: return .other
        }
    } catch {
        Issue.record("non-WireError thrown: \(error)")
        return .other
    }
}

@Suite struct RobustnessTests {
    @Test(arguments: Golden.messages.map(\.0))
    func everyPrefix(name: String) throws {
        let golden = try Golden.bytes(name)
        let original = try WireMessage.decode(golden)
        var seen: [Outcome: Int] = [:]
        for n in 0..<golden.count {
            let prefix = Array(golden[..<n])
            seen[classify(prefix), default: 0] += 1
            // A cut that ends on a field boundary may decode, but never as the full message.
            if let m = try? WireMessage.decode(prefix) { #expect(m != original) }
        }
        #expect(seen[.empty] == 1)
        // Most cuts land inside the body's length-delimited field: classified as truncated.
        #expect((seen[.truncated] ?? 0) >= golden.count - 4, "\(name): \(seen)")
    }

    @Test func randomGarbage() {
        var rng = SplitMix64(seed: 0x5EED)
        var seen: [Outcome: Int] = [:]
        for _ in 0..<20_000 {
            let n = Int.random(in: 0...300, using: &rng)
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            seen[classify(bytes), default: 0] += 1
        }
        #expect(seen[.garbage, default: 0] + seen[.truncated, default: 0] > 15_000, "\(seen)")
    }

    @Test(arguments: Golden.messages.map(\.0))
    func randomCorruption(name: String) throws {
        let golden = try Golden.bytes(name)
        var rng = SplitMix64(seed: 0xC0FFEE ^ UInt64(golden.count))
        for _ in 0..<3_000 {
            var bytes = golden
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let i = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[i] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
                case 1: bytes[i] = UInt8.random(in: 0...255, using: &rng)
                default: bytes[i] = 0xff  // maximal varint continuation / huge lengths
                }
            }
            _ = classify(bytes)
        }
    }

    @Test func hugeDeclaredLengthIsTruncationNotAllocation() {
        // envelope{3: StepPlan of declared length 2^35} with 3 bytes actually present.
        let bytes: [UInt8] = [0x08, 0x04, 0x1a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00, 0x00, 0x00]
        #expect(throws: WireError.truncated(byteCount: bytes.count)) { try WireMessage.decode(bytes) }
    }
}
