// Deterministic sample messages shared by the round-trip, golden and robustness tests.
import GemmaWire

enum Samples {
    static let sampling = SamplingParams(temperature: 0.7, topK: 64, topP: 0.95, minP: 0.05, seed: 0xDEAD_BEEF_1234)

    static let hello = Hello(modelFingerprint: "gemma3-270m-q4_k_m:sha256=3f5c0a9e", rank: 2, worldSize: 4,
                             host: "node-β.cluster 節点", threads: 8)

    /// One sequence, one decode token.
    static func decodePlan(sequences: Int, stepId: UInt64 = 42) -> StepPlan {
        var work: [SequenceWork] = []
        for i in 0..<sequences {
            let token = Int32(200 + i * 37)
            let position = UInt32(100 + i * 3)
            work.append(SequenceWork(slot: UInt32(i), requestId: 1000 + UInt64(i), tokenIds: [token],
                                     startPosition: position, isPrefillChunk: false, wantLogits: true,
                                     sampling: sampling, stepIndexInSequence: UInt64(5 + i)))
        }
        return StepPlan(stepId: stepId, work: work)
    }

    /// A prompt chunk of `tokens` tokens that does not end the prompt (no sample).
    static func prefillPlan(tokens: Int) -> StepPlan {
        StepPlan(stepId: 7, work: [
            SequenceWork(slot: 3, requestId: 77, tokenIds: (0..<tokens).map { (i: Int) -> Int32 in Int32((i * 7919) % 262_144) },
                         startPosition: 1024, isPrefillChunk: true, wantLogits: false, sampling: sampling,
                         stepIndexInSequence: 0),
        ])
    }

    /// Continuous batching: decodes, a final prefill chunk, freed slots.
    static let mixedPlan = StepPlan(stepId: 9_000_000_001, work: [
        SequenceWork(slot: 0, requestId: 1, tokenIds: [2, 651], startPosition: 17, wantLogits: true,
                     sampling: SamplingParams(), stepIndexInSequence: 3),
        SequenceWork(slot: 5, requestId: UInt64.max, tokenIds: (0..<40).map { (i: Int) -> Int32 in Int32(i * 1001) }, startPosition: 0,
                     isPrefillChunk: true, wantLogits: true, sampling: sampling, stepIndexInSequence: 0),
    ], freeSlots: [1, 2, 4_000_000_000])

    static let shutdownPlan = StepPlan(stepId: 10, shutdown: true, shutdownReason: "coordinator: SIGINT")
    static let shutdown = Shutdown(reason: "rank 3: out of memory — ¡adiós!", error: true)
}
