// The production `StepPlanCodec`: the engine's plans as GemmaWire `StepPlan` messages
// (protobuf-c, versioned). Only the mapping lives here; bytes are GemmaWire's business.
import GemmaWire

/// Encodes plans as GemmaWire envelopes; decoding rejects other message kinds and values the
/// engine cannot represent.
public struct WirePlanCodec: StepPlanCodec {
    public init() {}

    public func encode(_ plan: PlannedStep) throws -> [UInt8] {
        WireMessage.plan(try Self.wire(plan)).encode()
    }

    public func decode(_ bytes: [UInt8]) throws -> PlannedStep {
        let message = try WireMessage.decode(bytes)
        guard case let .plan(plan) = message else {
            throw EngineError.badPlan("expected a StepPlan, got \(message.kind)")
        }
        return Self.engine(plan)
    }

    static func wire(_ p: PlannedStep) throws -> StepPlan {
        func u32(_ x: Int, _ what: String) throws -> UInt32 {
            guard let v = UInt32(exactly: x) else { throw EngineError.badPlan("\(what) \(x) does not fit the wire") }
            return v
        }
        let work = try p.work.map { w in
            SequenceWork(slot: try u32(w.slot, "slot"), requestId: w.requestId, tokenIds: w.tokens,
                         startPosition: try u32(w.startPosition, "position"), isPrefillChunk: w.isPrefillChunk,
                         wantLogits: w.wantSample,
                         sampling: SamplingParams(temperature: w.sampling.temperature,
                                                  topK: Int32(clamping: w.sampling.topK),
                                                  topP: w.sampling.topP, minP: w.sampling.minP, seed: w.sampling.seed),
                         stepIndexInSequence: w.stepIndex)
        }
        return StepPlan(stepId: p.stepId, work: work, freeSlots: try p.freeSlots.map { try u32($0, "slot") },
                        shutdown: p.shutdown, shutdownReason: p.shutdownReason)
    }

    static func engine(_ p: StepPlan) -> PlannedStep {
        PlannedStep(
            stepId: p.stepId,
            work: p.work.map { w in
                PlannedWork(slot: Int(w.slot), requestId: w.requestId, tokens: w.tokenIds,
                            startPosition: Int(w.startPosition), isPrefillChunk: w.isPrefillChunk,
                            wantSample: w.wantLogits,
                            sampling: SamplerSettings(temperature: w.sampling.temperature, topK: Int(w.sampling.topK),
                                                      topP: w.sampling.topP, minP: w.sampling.minP, seed: w.sampling.seed),
                            stepIndex: w.stepIndexInSequence)
            },
            freeSlots: p.freeSlots.map(Int.init), shutdown: p.shutdown, shutdownReason: p.shutdownReason)
    }
}
