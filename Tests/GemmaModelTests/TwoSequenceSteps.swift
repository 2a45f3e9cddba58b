// The step sequence OverlapTests and ThreadCountTests both compare across configurations:
// one prefill step of 40 rows over two sequences (25 rows of slot 0, 15 of slot 1), then two
// decode steps of both, with seeded random tokens. Each configuration under test must give
// the same logits for it bit for bit.
@testable import GemmaModel
import GemmaTestSupport

/// Runs the steps on `model` and returns the logits of each step (rows concatenated).
/// `wantsLogits(p)` picks which of slot 0's prefill rows return logits (its last row always
/// does, as does slot 1's last).
func twoSequenceSteps(_ model: GemmaShard, seed: UInt64, wantsLogits: (Int) -> Bool) throws -> [[Float]] {
    var rng = SplitMix64(seed: seed)
    let vocab = UInt64(model.sampleableVocab)
    func token() -> Int32 { Int32(rng.next() % vocab) }
    var batch = (0..<25).map { BatchEntry(slot: 0, token: token(), position: $0, wantLogits: wantsLogits($0) || $0 == 24) }
    batch += (0..<15).map { BatchEntry(slot: 1, token: token(), position: $0, wantLogits: $0 == 14) }
    var steps: [[Float]] = []
    func keep(_ slice: LogitsSlice) { steps.append((0..<slice.rows).flatMap { Array(slice.row($0)) }) }
    keep(try model.forward(batch))
    for step in 0..<2 {
        keep(try model.forward([BatchEntry(slot: 0, token: token(), position: 25 + step, wantLogits: true),
                                BatchEntry(slot: 1, token: token(), position: 15 + step, wantLogits: true)]))
    }
    return steps
}
