// A rank's thread count must not change what it computes: the pool splits matmuls by rows,
// attention by (row, head) items, and norms, RoPE, residual adds, GELU and the KV store by
// rows or elements, and every such piece is computed by the same code whichever thread runs
// it. So the logits of a prefill step and of decode steps after it must be equal bit for bit
// at 1, 2 and 3 threads. The fixtures are tiny, so the test lowers the size below which
// those element-wise ops stay on one thread to 1 value: every op is split.
import Foundation
import Testing
@testable import GemmaModel
import GemmaParallel
import GemmaTestSupport

struct ThreadCountTests {
    /// One prefill step of 40 rows over two sequences, then two decode steps of both.
    static func run(_ name: String, threads: Int, splitEverything: Bool) throws -> [[Float]] {
        let dir = name.hasSuffix(".gguf") ? ggufModelFixtures.appendingPathComponent(name) : hfFixtures.appendingPathComponent(name)
        let results = try LocalCommunicator.run(ranks: 1) { comm -> [[Float]] in
            let model = try GemmaShard.load(path: dir, comm: comm,
                                            options: GemmaLoadOptions(maxContext: 64, slots: 2, maxBatchTokens: 64, threads: threads, kvType: .f16))
            if splitEverything { model.parallelMinimumValues = 1 }
            return try twoSequenceSteps(model, seed: 11) { $0 % 5 == 0 }
        }
        return results[0]
    }

    /// The HF fixtures (f32 weights) and a Q8_0 GGUF one (the quantized GEMM path).
    @Test(arguments: ["gemma3_pattern", "gemma2_softcap", "gemma4_e_style", "gemma4_moe", "gemma3_pattern_q8.gguf"])
    func logitsDoNotDependOnTheThreadCount(name: String) throws {
        let one = try Self.run(name, threads: 1, splitEverything: false)
        #expect(one.count == 3 && one.allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isFinite) })
        for threads in [2, 3] {
            let many = try Self.run(name, threads: threads, splitEverything: true)
            let differing = zip(many, one).enumerated().first { $0.element.0 != $0.element.1 }.map(\.offset)
            #expect(many.count == one.count && differing == nil,
                    "\(name): logits at \(threads) threads differ from 1 thread (first at step \(differing ?? -1))")
        }
    }
}
