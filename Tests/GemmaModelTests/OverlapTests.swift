// `--overlap on` (GemmaShard.transformerBlock with halves) must compute exactly what the whole
// batch computes: every product, norm and attention is row by row, and the in-process
// transport adds ranks in rank order whatever the buffer's length, so the logits must be
// equal bit for bit, at 2 and 4 ranks, on fixtures with sliding and global layers, soft-caps,
// Gemma 4's per-layer inputs and KV sharing, and MoE layers (which run unsplit).
import Foundation
import Testing
@testable import GemmaModel
import GemmaParallel
import GemmaTestSupport

struct OverlapTests {
    /// One prefill step of 40 rows (two sequences; the first one's rows straddle the halves,
    /// so the second half attends to keys the first half stored in the same layer), then two
    /// decode steps of both sequences. Returns every rank's logits of every step.
    static func run(_ name: String, ranks: Int, overlap: Bool) throws -> [[[Float]]] {
        let dir = hfFixtures.appendingPathComponent(name)
        return try LocalCommunicator.run(ranks: ranks) { comm -> [[Float]] in
            let model = try GemmaShard.load(path: dir, comm: comm,
                                            options: GemmaLoadOptions(maxContext: 64, slots: 2, maxBatchTokens: 64, kvType: .f32, overlap: overlap))
            return try twoSequenceSteps(model, seed: 7) { $0 % 6 == 0 }
        }
    }

    @Test(arguments: ["gemma3_pattern", "gemma2_softcap", "gemma4_e_style", "gemma4_moe"], [2, 4])
    func overlappedLayersGiveTheWholeBatchsLogits(name: String, ranks: Int) throws {
        let whole = try Self.run(name, ranks: ranks, overlap: false)
        let halves = try Self.run(name, ranks: ranks, overlap: true)
        #expect(whole.count == ranks && halves.count == ranks)
        for r in 0..<ranks {
            #expect(whole[r].count == 3)
            #expect(whole[r].allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isFinite) })
            let differing = zip(halves[r], whole[r]).enumerated().first { $0.element.0 != $0.element.1 }.map(\.offset)
            #expect(halves[r].count == whole[r].count && differing == nil,
                    "\(name), \(ranks) ranks: rank \(r)'s logits differ with --overlap on (first at step \(differing ?? -1))")
        }
    }
}
