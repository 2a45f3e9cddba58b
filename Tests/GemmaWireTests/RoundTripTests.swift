// Every message survives encode -> decode unchanged, and the convenience per-type decoders
// refuse the wrong message type.
import Testing
@testable import GemmaWire

@Suite struct RoundTripTests {
    func roundTrip(_ m: WireMessage) throws -> WireMessage { try WireMessage.decode(m.encode()) }

    @Test func hello() throws {
        #expect(try roundTrip(.hello(Samples.hello)) == .hello(Samples.hello))
        #expect(try Hello.decode(Samples.hello.encode()) == Samples.hello)
        // All-default strings and zero rank (proto3 omits them) come back the same.
        let bare = Hello(modelFingerprint: "", rank: 0, worldSize: 1, host: "")
        #expect(try Hello.decode(bare.encode()) == bare)
    }

    @Test func shutdown() throws {
        #expect(try Shutdown.decode(Samples.shutdown.encode()) == Samples.shutdown)
        let quiet = Shutdown(reason: "", error: false)
        #expect(try Shutdown.decode(quiet.encode()) == quiet)
    }

    @Test func emptyPlan() throws {
        let p = StepPlan(stepId: 0)
        #expect(try StepPlan.decode(p.encode()) == p)
    }

    @Test(arguments: [1, 16, 64])
    func decodePlans(sequences: Int) throws {
        let p = Samples.decodePlan(sequences: sequences)
        let back = try StepPlan.decode(p.encode())
        #expect(back == p)
        #expect(back.work.count == sequences)
    }

    @Test func largePrefillChunk() throws {
        let p = Samples.prefillPlan(tokens: 8192)
        #expect(try StepPlan.decode(p.encode()) == p)
    }

    @Test func mixedAndShutdownPlans() throws {
        #expect(try StepPlan.decode(Samples.mixedPlan.encode()) == Samples.mixedPlan)
        #expect(try StepPlan.decode(Samples.shutdownPlan.encode()) == Samples.shutdownPlan)
    }

    @Test func extremeValues() throws {
        let s = SamplingParams(temperature: Float.greatestFiniteMagnitude, topK: Int32.max, topP: 1,
                               minP: Float.leastNonzeroMagnitude, seed: UInt64.max)
        let w = SequenceWork(slot: UInt32.max, requestId: UInt64.max, tokenIds: [Int32.max, 0],
                             startPosition: UInt32.max - 2, isPrefillChunk: true, wantLogits: false,
                             sampling: s, stepIndexInSequence: UInt64.max, logprobs: WireLimits.maxTopLogprobs)
        let p = StepPlan(stepId: UInt64.max, work: [w], freeSlots: [UInt32.max, 0])
        #expect(try StepPlan.decode(p.encode()) == p)
    }

    @Test func unicodeStrings() throws {
        let text = "héllo 世界 🦙 \u{202E}rtl ∑ — " + String(repeating: "ü", count: 500)
        let h = Hello(modelFingerprint: text, rank: 0, worldSize: 1, host: "🖥️")
        #expect(try Hello.decode(h.encode()) == h)
        let s = Shutdown(reason: text)
        #expect(try Shutdown.decode(s.encode()) == s)
    }

    @Test func nulCharactersAreDropped() throws {
        // protobuf-c keeps strings as C strings; encode drops NULs rather than cutting the text.
        let s = Shutdown(reason: "a\u{0}b")
        #expect(try Shutdown.decode(s.encode()).reason == "ab")
    }

    @Test func encodingIsDeterministic() {
        #expect(Samples.mixedPlan.encode() == Samples.mixedPlan.encode())
    }

    @Test func wrongTypeIsRejected() throws {
        #expect(throws: WireError.unexpectedMessage(expected: "StepPlan", got: "Hello")) {
            try StepPlan.decode(Samples.hello.encode())
        }
        #expect(throws: WireError.unexpectedMessage(expected: "Hello", got: "Shutdown")) {
            try Hello.decode(Samples.shutdown.encode())
        }
    }
}
