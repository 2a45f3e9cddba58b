// Full-vocabulary logits on rank 0, for the `logits` debugging command and for tests. This is
// the one place that gathers every rank's slice; generation never does (see Sampling.swift).
// Every rank already knows the tokens (they come from the command line), so no plan is sent.
import GemmaModel
import GemmaParallel
import GemmaWire

/// Logits of one position.
public struct PositionLogits: Sendable, Equatable {
    public var position: Int
    /// [vocabSize]
    public var logits: [Float]
}

/// Runs `tokens` through the model in slot `slot` (chunks of at most `maxBatchTokens`) and
/// returns the full logits of the last position (every position with `allPositions`) on
/// rank 0, nil on other ranks. Every rank must call it with the same arguments. Input errors
/// are agreed, so every rank throws the same message. The slot is released afterwards.
public func gatherFullLogits(model: any ShardedCausalLM, comm: any Communicator, tokens: [Int32],
                             allPositions: Bool, slot: Int = 0) throws -> [PositionLogits]? {
    try comm.agree(validateTokens(tokens, model: model, slot: slot))
    // Slices may differ in width; pad every record to the widest and send each rank's offset.
    var width: [Float] = [Float(model.vocabRange.count)]
    try width.withUnsafeMutableBufferPointer { try comm.allReduceMax($0) }
    let maxWidth = Int(width[0])
    let ranges = try comm.allGather([Float(model.vocabRange.lowerBound), Float(model.vocabRange.count)])

    var out: [PositionLogits] = []
    let chunk = max(1, model.maxBatchTokens)
    var start = 0
    defer { model.release(slot: slot) }
    while start < tokens.count {
        let end = min(tokens.count, start + chunk)
        let batch = (start..<end).map {
            BatchEntry(slot: slot, token: tokens[$0], position: $0, wantLogits: allPositions || $0 == tokens.count - 1)
        }
        var slice: LogitsSlice?
        var failure: Error?
        do { slice = try model.forward(batch) } catch { failure = error }
        try comm.agree(failure)
        guard let slice else { throw EngineError.badPlan("model returned no logits") }
        let wanted = batch.filter(\.wantLogits).map(\.position)
        var record = [Float](repeating: 0, count: wanted.count * maxWidth)
        for r in 0..<slice.rows {
            let row = slice.row(r)
            for j in 0..<row.count { record[r * maxWidth + j] = row[j] }
        }
        let gathered = try comm.allGather(record)
        if comm.isCoordinator {
            for (r, position) in wanted.enumerated() {
                var full = [Float](repeating: 0, count: model.vocabSize)
                for rank in 0..<comm.size {
                    let lower = Int(ranges[2 * rank]), count = Int(ranges[2 * rank + 1])
                    let base = rank * record.count + r * maxWidth
                    for j in 0..<count where lower + j < full.count { full[lower + j] = gathered[base + j] }
                }
                out.append(PositionLogits(position: position, logits: full))
            }
        }
        start = end
    }
    return comm.isCoordinator ? out : nil
}

/// Input checks shared by the commands: the slot exists, the ids are non-empty, in the
/// vocabulary and fit the context (`PlanLimits.checkTokens`, the check plans get).
public func validateTokens(_ tokens: [Int32], model: any ShardedCausalLM, slot: Int = 0) -> Error? {
    let limits = PlanLimits(model: model)
    do {
        try limits.checkSlot(slot, subject: "input")
        try limits.checkTokens(tokens, startPosition: 0, subject: "sequence in slot \(slot)", planSubject: "input")
        return nil
    } catch {
        return error
    }
}
