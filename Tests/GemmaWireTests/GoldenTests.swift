// Wire bytes pinned two ways: small messages against bytes worked out by hand from the
// protobuf encoding rules (independent of protobuf-c), and larger ones against committed
// files in Tests/Fixtures/wire/. Any change to those bytes is a protocol change.
// Regenerate the files (only after a deliberate protocol change that bumps the version):
//   GEMMA_WIRE_WRITE_GOLDEN=1 swift test --filter GoldenTests
import Foundation
import Testing
@testable import GemmaWire
import GemmaTestSupport

enum Golden {
    static let dir = TestPaths.fixture("wire")

    /// Name -> message of every golden file.
    static let messages: [(String, WireMessage)] = [
        ("hello", .hello(Samples.hello)),
        ("shutdown", .shutdown(Samples.shutdown)),
        ("plan_empty", .plan(StepPlan(stepId: 1))),
        ("plan_decode_1", .plan(Samples.decodePlan(sequences: 1))),
        ("plan_decode_16", .plan(Samples.decodePlan(sequences: 16))),
        ("plan_mixed", .plan(Samples.mixedPlan)),
        ("plan_shutdown", .plan(Samples.shutdownPlan)),
        ("plan_prefill_512", .plan(Samples.prefillPlan(tokens: 512))),
        ("plan_grammar", .plan(StepPlan(stepId: 9, work: [
            SequenceWork(slot: 2, requestId: 4, tokenIds: [2, 105, 2364], startPosition: 0, isPrefillChunk: true,
                         sampling: SamplingParams(temperature: 0.7, topK: 40, topP: 0.95, minP: 0, seed: 3),
                         grammar: Array(#"{"type":"object","properties":{"a":{"type":"array","items":{"enum":["x",1]},"maxItems":2}},"required":["a"]}"#.utf8),
                         grammarMaxTokens: 64),
        ]))),
        ("plan_prefix", .plan(StepPlan(stepId: 10, work: [
            SequenceWork(slot: 3, requestId: 5, tokenIds: [106, 2364, 107], startPosition: 1000, isPrefillChunk: true,
                         sampling: .greedy, prefixSourceSlot: 1, prefixLength: 1000),
            SequenceWork(slot: 1, requestId: 4, tokenIds: [9], startPosition: 1210, sampling: .greedy, stepIndexInSequence: 7),
        ]))),
    ]

    static func bytes(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: dir.appendingPathComponent("\(name).bin")))
    }
}

@Suite struct GoldenTests {
    @Test func shutdownMatchesHandEncoding() {
        // envelope{1: version 4 (08 04), 4: Shutdown (22 07){1: "bye" (0a 03 ..), 2: true (10 01)}}
        let expected: [UInt8] = [0x08, 0x04, 0x22, 0x07, 0x0a, 0x03, 0x62, 0x79, 0x65, 0x10, 0x01]
        #expect(WireMessage.shutdown(Shutdown(reason: "bye", error: true)).encode() == expected)
    }

    @Test func planMatchesHandEncoding() throws {
        let plan = StepPlan(stepId: 5, work: [
            SequenceWork(slot: 1, tokenIds: [300, 2], startPosition: 4, wantLogits: true),
        ], freeSlots: [7])
        let work: [UInt8] = [0x08, 0x01,                     // slot 1
                             0x1a, 0x03, 0xac, 0x02, 0x02,   // token_ids packed [300, 2]
                             0x20, 0x04,                     // start_position 4
                             0x30, 0x01,                     // want_logits
                             0x3a, 0x00]                     // sampling {} (all defaults)
        let body: [UInt8] = [0x08, 0x04, 0x10, 0x05, 0x1a, UInt8(work.count)] + work + [0x22, 0x01, 0x07]
        let expected: [UInt8] = [0x08, 0x04, 0x1a, UInt8(body.count)] + body
        #expect(plan.encode() == expected)
        #expect(try StepPlan.decode(expected) == plan)
    }

    @Test func logprobsFieldMatchesHandEncoding() throws {
        // SequenceWork field 9 (varint, tag 0x48) carries alternatives + 1; absent when off.
        for (logprobs, tail) in [(nil, []), (0, [0x48, 0x01]), (20, [0x48, 0x15])] as [(Int?, [UInt8])] {
            let plan = StepPlan(stepId: 5, work: [SequenceWork(slot: 1, tokenIds: [2], startPosition: 0, logprobs: logprobs)])
            let work: [UInt8] = [0x08, 0x01, 0x1a, 0x01, 0x02, 0x30, 0x01, 0x3a, 0x00] + tail
            let body: [UInt8] = [0x08, 0x04, 0x10, 0x05, 0x1a, UInt8(work.count)] + work
            let expected: [UInt8] = [0x08, 0x04, 0x1a, UInt8(body.count)] + body
            #expect(plan.encode() == expected, "\(String(describing: logprobs))")
            #expect(try StepPlan.decode(expected) == plan)
        }
    }

    @Test func grammarFieldsMatchHandEncoding() throws {
        // SequenceWork field 10 (bytes, tag 0x52) carries the schema text, field 11 (varint,
        // tag 0x58) the token budget; both absent when unconstrained (the plan above).
        let schema = Array(#"{"type":"object"}"#.utf8)
        let plan = StepPlan(stepId: 5, work: [SequenceWork(slot: 1, tokenIds: [2], startPosition: 0, isPrefillChunk: true,
                                                           grammar: schema, grammarMaxTokens: 300)])
        let work: [UInt8] = [0x08, 0x01, 0x1a, 0x01, 0x02, 0x28, 0x01, 0x30, 0x01, 0x3a, 0x00,
                             0x52, UInt8(schema.count)] + schema + [0x58, 0xac, 0x02]
        let body: [UInt8] = [0x08, 0x04, 0x10, 0x05, 0x1a, UInt8(work.count)] + work
        let expected: [UInt8] = [0x08, 0x04, 0x1a, UInt8(body.count)] + body
        #expect(plan.encode() == expected)
        #expect(try StepPlan.decode(expected) == plan)
        // A grammar anywhere but on a first prompt chunk, or without a budget, is refused.
        var late = plan
        late.work[0].startPosition = 4
        #expect(throws: WireError.self) { try StepPlan.decode(late.encode()) }
        var noBudget = plan
        noBudget.work[0].grammarMaxTokens = 0
        #expect(throws: WireError.self) { try StepPlan.decode(noBudget.encode()) }
    }

    @Test func prefixFieldsMatchHandEncoding() throws {
        // SequenceWork field 14 (varint, tag 0x70) names the source slot, field 15 (tag 0x78)
        // the reused length; both absent without a reused prefix (the plans above).
        let plan = StepPlan(stepId: 5, work: [SequenceWork(slot: 1, tokenIds: [2], startPosition: 300, isPrefillChunk: true,
                                                           prefixSourceSlot: 2, prefixLength: 300)])
        let work: [UInt8] = [0x08, 0x01, 0x1a, 0x01, 0x02, 0x20, 0xac, 0x02, 0x28, 0x01, 0x30, 0x01, 0x3a, 0x00,
                             0x70, 0x02, 0x78, 0xac, 0x02]
        let body: [UInt8] = [0x08, 0x04, 0x10, 0x05, 0x1a, UInt8(work.count)] + work
        let expected: [UInt8] = [0x08, 0x04, 0x1a, UInt8(body.count)] + body
        #expect(plan.encode() == expected)
        #expect(try StepPlan.decode(expected) == plan)
        // Kept in place (source = the slot itself): slot 1 from slot 1.
        var inPlace = plan
        inPlace.work[0].prefixSourceSlot = 1
        #expect(try StepPlan.decode(inPlace.encode()) == inPlace)
        // The prefix travels with the first chunk, which starts where it ends.
        var late = plan
        late.work[0].startPosition = 301
        #expect(throws: WireError.self) { try StepPlan.decode(late.encode()) }
        var decode = plan
        decode.work[0].isPrefillChunk = false
        #expect(throws: WireError.self) { try StepPlan.decode(decode.encode()) }
        var sourceOnly = plan
        sourceOnly.work[0].prefixLength = 0
        sourceOnly.work[0].startPosition = 0
        #expect(throws: WireError.self) { try StepPlan.decode(sourceOnly.encode()) }
        // A source slot the model does not have, and one this plan restarts, are refused.
        #expect(throws: PlanError.self) { try plan.validate(PlanLimits(slots: 2)) }
        var restarted = plan
        restarted.work.append(SequenceWork(slot: 2, tokenIds: [5], startPosition: 0, isPrefillChunk: true))
        #expect(throws: WireError.self) { try StepPlan.decode(restarted.encode()) }
        // A grammar rides on the first chunk, which now starts at the prefix's end.
        var constrained = plan
        constrained.work[0].grammar = Array(#"{"type":"object"}"#.utf8)
        constrained.work[0].grammarMaxTokens = 8
        #expect(try StepPlan.decode(constrained.encode()) == constrained)
    }

    @Test(arguments: Golden.messages.map(\.0))
    func committedBytes(name: String) throws {
        let message = try #require(Golden.messages.first { $0.0 == name }?.1)
        let url = Golden.dir.appendingPathComponent("\(name).bin")
        let encoded = message.encode()
        if ProcessInfo.processInfo.environment["GEMMA_WIRE_WRITE_GOLDEN"] == "1" {
            try FileManager.default.createDirectory(at: Golden.dir, withIntermediateDirectories: true)
            try Data(encoded).write(to: url)
        }
        let golden = try Golden.bytes(name)
        #expect(encoded == golden, "encoding of \(name) changed: a protocol change needs a version bump")
        #expect(try WireMessage.decode(golden) == message)
    }
}
