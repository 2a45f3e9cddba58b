// The step loop on a toy model at 1, 2 and 4 ranks: outputs equal a single-process reference,
// batching does not change a sequence's tokens, errors are agreed and nobody hangs.
import Foundation
import Testing
@testable import GemmaEngine
import GemmaModel
import GemmaParallel
import GemmaWire

/// Runs `requests` on `ranks` in-process ranks with a fresh toy model per rank.
func runToy(_ requests: [GenerationRequest], ranks: Int, vocab: Int = 96, sampleable: Int? = nil,
            maxContext: Int = 64, slots: Int = 4, maxBatchTokens: Int = 8) throws -> [GenerationResult] {
    let out = try LocalCommunicator.run(ranks: ranks) { comm -> [GenerationResult]? in
        let model = ToyModel(vocabSize: vocab, sampleableVocab: sampleable, rank: comm.rank, ranks: comm.size,
                             maxContext: maxContext, slots: slots, maxBatchTokens: maxBatchTokens)
        return try runGeneration(requests, model: model, comm: comm)?.results
    }
    guard let results = out[0] else { throw EngineError.notCoordinator("test") }
    for r in out.dropFirst() { #expect(r == nil) }
    return results
}

@Suite struct EngineToyTests {
    let sampled = SamplingParams(temperature: 0.9, topK: 20, topP: 0.9, minP: 0.02, seed: 77)
    let fullVocab = SamplingParams(temperature: 1.1, topK: 0, topP: 0.8, minP: 0, seed: 5)

    @Test(arguments: [1, 2, 4])
    func matchesSingleProcessReference(ranks: Int) throws {
        let prompts: [[Int32]] = [[1, 2, 3], Array(1...19).map(Int32.init), [50]]  // 19 > maxBatchTokens: chunked
        let settings: [SamplingParams] = [.greedy, sampled, fullVocab]
        let requests = prompts.indices.map {
            GenerationRequest(id: UInt64($0), promptTokens: prompts[$0], maxNewTokens: 12, sampling: settings[$0])
        }
        let results = try runToy(requests, ranks: ranks)
        for (i, r) in results.enumerated() {
            let want = ToyModel.referenceGenerate(prompt: prompts[i], n: 12, settings: settings[i], vocab: 96, sampleable: 96)
            #expect(r.tokens == want, "request \(i)")
            #expect(r.promptTokens == prompts[i])
            #expect(r.finishReason == .length)
        }
    }

    /// The engine's plans are GemmaWire's messages: every field the engine uses survives the
    /// protobuf-c round trip, and the loop gives the same tokens at 4 ranks as at 1.
    @Test func wirePlansRoundTripAndRunTheLoop() throws {
        let plan = StepPlan(stepId: 7, work: [
            SequenceWork(slot: 2, requestId: 99, tokenIds: [5, 6, 7], startPosition: 11, isPrefillChunk: true, wantLogits: true,
                         sampling: SamplingParams(temperature: 0.7, topK: 40, topP: 0.9, minP: 0.05, seed: .max), stepIndexInSequence: 3),
            SequenceWork(slot: 0, requestId: 1, tokenIds: [1], startPosition: 0, isPrefillChunk: false, wantLogits: false,
                         sampling: .greedy, stepIndexInSequence: 0),
        ], freeSlots: [1, 3])
        #expect(try StepPlan.decode(plan.encode()) == plan)
        let stop = StepPlan(stepId: 8, freeSlots: [0], shutdown: true, shutdownReason: "done")
        #expect(try StepPlan.decode(stop.encode()) == stop)
        #expect(throws: (any Error).self) { try StepPlan.decode([0xFF, 0x01, 0x02]) }

        let requests = [GenerationRequest(id: 0, promptTokens: Array(1...11).map(Int32.init), maxNewTokens: 9, sampling: sampled),
                        GenerationRequest(id: 1, promptTokens: [4], maxNewTokens: 5, sampling: fullVocab)]
        #expect(try runToy(requests, ranks: 4) == runToy(requests, ranks: 1))
    }

    @Test func batchedEqualsAlone() throws {
        let a = GenerationRequest(id: 1, promptTokens: [5, 6, 7, 8, 9, 10], maxNewTokens: 10, sampling: sampled)
        let b = GenerationRequest(id: 2, promptTokens: [40, 41], maxNewTokens: 7, sampling: fullVocab)
        let together = try runToy([a, b], ranks: 2)
        let aloneA = try runToy([a], ranks: 2)
        let aloneB = try runToy([b], ranks: 2)
        #expect(together[0].tokens == aloneA[0].tokens)
        #expect(together[1].tokens == aloneB[0].tokens)
        #expect(together[1].tokens.count == 7)
    }

    @Test func stopsAtStopTokenAndWithinContext() throws {
        let free = try runToy([GenerationRequest(id: 0, promptTokens: [3], maxNewTokens: 10, sampling: .greedy)], ranks: 2)[0]
        #expect(free.tokens.count == 10)
        // Make the 4th greedy token a stop token: output is the first 3, reason stop.
        let stop = free.tokens[3]
        #expect(!free.tokens.prefix(3).contains(stop))
        let stopped = try runToy([GenerationRequest(id: 0, promptTokens: [3], maxNewTokens: 10, sampling: .greedy,
                                                    stopTokens: [stop])], ranks: 2)[0]
        #expect(stopped.tokens == Array(free.tokens.prefix(3)))
        #expect(stopped.finishReason == .stop)
        // Context 8, prompt 5: positions 5, 6, 7 can still be fed, so 4 tokens come out.
        let short = try runToy([GenerationRequest(id: 0, promptTokens: [1, 2, 3, 4, 5], maxNewTokens: 50, sampling: .greedy)],
                               ranks: 2, maxContext: 8)[0]
        #expect(short.tokens.count == 4)
        #expect(short.finishReason == .length)
    }

    @Test(arguments: [1, 2, 4])
    func badTokenIsTheSameErrorEverywhere(ranks: Int) throws {
        let messages = try LocalCommunicator.run(ranks: ranks) { comm -> String in
            let model = ToyModel(rank: comm.rank, ranks: comm.size)
            do {
                _ = try runGeneration([GenerationRequest(id: 0, promptTokens: [1, 500, 2], maxNewTokens: 3, sampling: .greedy)],
                                      model: model, comm: comm)
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        #expect(messages.allSatisfy { $0 == messages[0] })
        #expect(messages[0] == "rank 0: token id 500 is outside the vocabulary (0..<96)")
    }

    /// A plan that reaches the ranks with a bad token (the scheduler's own check bypassed):
    /// every rank's validation fails the same way, nobody runs the forward, nobody hangs.
    @Test(arguments: [1, 2, 4])
    func badPlanIsRejectedOnEveryRank(ranks: Int) throws {
        let outcome = try LocalCommunicator.run(ranks: ranks) { comm -> (String, Int) in
            let model = ToyModel(rank: comm.rank, ranks: comm.size)
            let executor = StepExecutor(model: model, comm: comm)
            do {
                if comm.isCoordinator {
                    let work = SequenceWork(slot: 0, requestId: 9, tokenIds: [3, -2], startPosition: 0, isPrefillChunk: true,
                                            wantLogits: true, sampling: .greedy, stepIndexInSequence: 0)
                    _ = try executor.execute(sending: StepPlan(stepId: 0, work: [work]))
                } else {
                    try executor.runWorker()
                }
                return ("no error", model.forwardCalls)
            } catch { return ("\(error)", model.forwardCalls) }
        }
        #expect(outcome.map(\.0) == Array(repeating: "rank 0: token id -2 is outside the vocabulary (0..<96)", count: ranks))
        #expect(outcome.allSatisfy { $0.1 == 0 })
    }

    @Test(arguments: [1, 2, 4])
    func schedulerAndContextErrorsAreAgreed(ranks: Int) throws {
        let cases: [([GenerationRequest], String)] = [
            (Array(repeating: GenerationRequest(id: 0, promptTokens: [1], maxNewTokens: 1, sampling: .greedy), count: 5),
             "rank 0: 5 requests at once need 5 KV slots, the model has 4"),
            ([GenerationRequest(id: 0, promptTokens: Array(repeating: 1, count: 70), maxNewTokens: 1, sampling: .greedy)],
             "rank 0: sequence in slot 0 needs 70 positions, more than the context of 64"),
        ]
        for (requests, expected) in cases {
            let messages = try LocalCommunicator.run(ranks: ranks) { comm -> String in
                let model = ToyModel(rank: comm.rank, ranks: comm.size)
                do {
                    _ = try runGeneration(requests, model: model, comm: comm)
                    return "no error"
                } catch { return "\(error)" }
            }
            #expect(messages == Array(repeating: expected, count: ranks))
        }
    }

    @Test(arguments: [1, 2, 4])
    func fullLogitsEqualConcatenatedSlices(ranks: Int) throws {
        let tokens: [Int32] = Array(0..<11)
        let out = try LocalCommunicator.run(ranks: ranks) { comm -> [PositionLogits]? in
            let model = ToyModel(rank: comm.rank, ranks: comm.size, maxBatchTokens: 4)
            return try gatherFullLogits(model: model, comm: comm, tokens: tokens, allPositions: true)
        }
        let rows = try #require(out[0])
        #expect(rows.map(\.position) == Array(0..<11))
        for p in rows {
            let want = (0..<96).map { ToyModel.logit(history: Array(tokens[0...p.position]), id: $0, vocab: 96) }
            #expect(p.logits == want)
        }
        let last = try LocalCommunicator.run(ranks: ranks) { comm -> [PositionLogits]? in
            try gatherFullLogits(model: ToyModel(rank: comm.rank, ranks: comm.size), comm: comm, tokens: tokens, allPositions: false)
        }
        #expect(last[0]?.map(\.position) == [10])
    }
}
