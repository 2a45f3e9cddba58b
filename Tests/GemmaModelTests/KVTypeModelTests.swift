// The stored KV-cache types end to end on a model whose head dims q8_0 can hold (the transformers
// fixtures' head dim 16 cannot): a synthetic Gemma 4 E2B cut to 6 layers (sliding layers of
// head dim 256, a full layer of 512, KV-sharing consumers that read their producer's f16/q8_0
// rows: layer 5 reads layer 4's) with random BF16 weights, at 1 and 2 ranks, prefill in chunks
// then decode.
import Foundation
import Testing
@testable import GemmaModel
import GemmaFormats
import GemmaKernels
import GemmaParallel
import GemmaTestSupport

@Suite("KV cache types on a synthetic model", .serialized)
struct KVTypeModelTests {
    static let prompt: [Int32] = [2, 818, 5279, 529, 7001, 563, 1401, 236761, 107, 600, 33, 1500, 904, 77, 1203, 18,
                                  2000, 45, 310, 1999, 7, 640, 1024, 5]

    /// Logits at every prompt position (chunks of 8) and at 6 decode steps fed the f32 run's
    /// greedy tokens (so every type sees the same tokens), slices stitched in rank order.
    static func run(path: String, ranks: Int, kvType: KVCacheType, prompt: [Int32] = Self.prompt,
                    feed: [Int32]? = nil) throws -> (logits: [[Float]], greedy: [Int32], cacheBytes: Int) {
        let results = try LocalCommunicator.run(ranks: ranks) { comm -> ([[Float]], [Int32], Int) in
            let model = try GemmaShard.load(path: URL(fileURLWithPath: path), comm: comm,
                                            options: GemmaLoadOptions(maxContext: 64, maxBatchTokens: 8, kvType: kvType))
            var rows: [[Float]] = []
            for start in stride(from: 0, to: prompt.count, by: 8) {
                let batch = (start..<min(prompt.count, start + 8)).map { BatchEntry(slot: 0, token: prompt[$0] % 2048, position: $0, wantLogits: true) }
                let slice = try model.forward(batch)
                for r in 0..<slice.rows { rows.append(Array(slice.row(r))) }
            }
            var greedy: [Int32] = []
            for step in 0..<6 {
                let last = rows[rows.count - 1]
                var best = 0
                for j in last.indices where last[j] > last[best] { best = j }
                let all = try comm.allGather([last[best], Float(model.vocabRange.lowerBound + best)])
                var winner = 0
                for r in 0..<comm.size where all[2 * r] > all[2 * winner] { winner = r }
                let token = feed?[step] ?? Int32(all[2 * winner + 1])
                greedy.append(Int32(all[2 * winner + 1]))
                let slice = try model.forward([BatchEntry(slot: 0, token: token, position: prompt.count + step, wantLogits: true)])
                rows.append(Array(slice.row(0)))
            }
            return (rows, greedy, model.kvBytesPerToken)
        }
        var full: [[Float]] = []
        for p in 0..<results[0].0.count { full.append(results.flatMap { $0.0[p] }) }
        return (full, results[0].1, results[0].2)
    }

    /// f16 and q8_0 follow the f32 cache within bounds measured on this model, at 1 and 2
    /// ranks; each cache holds its type's bytes per token. BF16 weights, so the matmuls take f32
    /// activations (no int8 rounding to amplify small differences: what is measured is the
    /// cache's own error). Measured max |logit diff| against the f32 cache (printed): f16 (2^-11
    /// relative per value) 0.0022, q8_0 (up to half of max|x|/127 per block of 32) 0.058, at 1
    /// and 2 ranks. Bounds ~4x that: 0.01 and 0.25. A one-token change of the prompt moves the
    /// later logits by ~3.6 (checked > 0.5), so reading wrong rows (another position, another
    /// head, a misread type) cannot pass.
    @Test func storedTypesFollowTheF32Cache() throws {
        let tok = try GGUFFile(path: try TestPaths.requireDefaultModel())
        let m = try SyntheticModel(preset: "gemma-4-e2b", quant: .bf16, layers: 6, vocab: 2048)
        let path = synthTempPath("kvtype")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try m.write(to: path, tokenizer: tok, seed: 7)
        let bounds: [KVCacheType: Float] = [.f16: 0.01, .q8_0: 0.25]
        for ranks in [1, 2] {
            let f32 = try Self.run(path: path, ranks: ranks, kvType: .f32)
            var other = Self.prompt
            other[3] = 4000
            let changed = try Self.run(path: path, ranks: ranks, kvType: .f32, prompt: other, feed: f32.greedy)
            let sensitivity = maxAbsDiff(Array(changed.logits[4...]), Array(f32.logits[4...]))
            #expect(sensitivity > 0.5, "a changed prompt token moved the logits by only \(sensitivity)")
            for type in [KVCacheType.f16, .q8_0] {
                let got = try Self.run(path: path, ranks: ranks, kvType: type, feed: f32.greedy)
                let diff = maxAbsDiff(got.logits, f32.logits)
                print("synthetic e2b (6 layers) at \(ranks) ranks: \(type) cache vs f32: max |logit diff| \(diff) (a changed prompt token: \(sensitivity))")
                #expect(diff > 0 && diff <= bounds[type]!, "\(type) at \(ranks) ranks: \(diff)")
                #expect(got.cacheBytes * (type == .f16 ? 2 : 128) == f32.cacheBytes * (type == .f16 ? 1 : 34))
            }
        }
    }
}
