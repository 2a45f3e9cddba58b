// Decoded contents a worker would crash or misbehave on are refused with a typed error, even
// though they are well-formed protobuf (encode does not validate: it plays a faulty sender).
import Testing
@testable import GemmaWire

@Suite struct ValidationTests {
    func rejects(_ plan: StepPlan, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try StepPlan.decode(plan.encode())
            Issue.record("accepted a plan that should fail (\(fragment))", sourceLocation: sourceLocation)
        } catch let e as WireError {
            guard case .invalidField = e else { Issue.record("wrong error \(e)", sourceLocation: sourceLocation); return }
            #expect(e.description.contains(fragment), "\(e)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("non-WireError \(error)", sourceLocation: sourceLocation)
        }
    }

    func plan(_ edit: (inout SequenceWork) -> Void) -> StepPlan {
        var w = SequenceWork(slot: 0, tokenIds: [5], startPosition: 0, sampling: Samples.sampling)
        edit(&w)
        return StepPlan(stepId: 1, work: [w])
    }

    @Test func sequenceFields() {
        rejects(plan { $0.tokenIds = [] }, "no token ids")
        rejects(plan { $0.tokenIds = [3, -1] }, "negative token id -1")
        rejects(plan { $0.startPosition = UInt32.max }, "overflow")
        rejects(plan { $0.tokenIds = [Int32](repeating: 1, count: WireLimits.maxTokensPerSequence + 1) }, "more than")
        rejects(plan { $0.logprobs = WireLimits.maxTopLogprobs + 1 }, "logprobs alternatives 21 outside 0...20")
        rejects(plan { $0.logprobs = 1000 }, "logprobs alternatives 1000")
    }

    @Test func samplingFields() {
        rejects(plan { $0.sampling.temperature = .nan }, "temperature")
        rejects(plan { $0.sampling.temperature = -1 }, "temperature")
        rejects(plan { $0.sampling.temperature = .infinity }, "temperature")
        rejects(plan { $0.sampling.topK = -5 }, "top_k -5")
        rejects(plan { $0.sampling.topP = 1.5 }, "top_p")
        rejects(plan { $0.sampling.minP = -0.1 }, "min_p")
    }

    @Test func planFields() {
        let w = SequenceWork(slot: 4, tokenIds: [1], startPosition: 0)
        rejects(StepPlan(stepId: 1, work: [w, w]), "slot 4 appears twice")
        rejects(StepPlan(stepId: 1, work: (0..<(WireLimits.maxSequencesPerPlan + 1)).map { i in
            SequenceWork(slot: UInt32(i), tokenIds: [1], startPosition: 0)
        }), "more than \(WireLimits.maxSequencesPerPlan)")
        rejects(StepPlan(stepId: 1, freeSlots: [UInt32](repeating: 0, count: WireLimits.maxFreeSlots + 1)), "more than")
        rejects(StepPlan(stepId: 1, shutdown: true, shutdownReason: String(repeating: "x", count: WireLimits.maxStringBytes + 1)),
                "longer than")
        // Freeing a slot and reusing it in the same step is legal (freed before work runs).
        #expect(throws: Never.self) { try StepPlan.decode(StepPlan(stepId: 2, work: [w], freeSlots: [4]).encode()) }
    }

    @Test func helloFields() {
        #expect(throws: WireError.invalidField(message: "Hello", detail: "rank 4 in a world of 4")) {
            try Hello.decode(Hello(modelFingerprint: "m", rank: 4, worldSize: 4, host: "h").encode())
        }
        #expect(throws: WireError.invalidField(message: "Hello", detail: "world size 0")) {
            try Hello.decode(Hello(modelFingerprint: "m", rank: 0, worldSize: 0, host: "h").encode())
        }
    }

    @Test func emptyInput() {
        #expect(throws: WireError.empty) { try WireMessage.decode([]) }
    }
}
