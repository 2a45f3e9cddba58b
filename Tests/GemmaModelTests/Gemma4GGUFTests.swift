// Gemma 4 from GGUF: the three Gemma 4 fixtures converted the way llama.cpp lays them out
// (Scripts/gen_gguf_gemma4_fixtures.py, all F32 so the weights are exactly the HF fixture's)
// must give the HF fixture's transformers logits and greedy tokens at 1, 2 and 4 ranks: this
// checks the metadata mapping (per-layer KV heads and head dims, layer pattern, KV sharing,
// double-wide MLP, K = V from the missing attn_v, partial RoPE from rope_freqs, MoE sizes) and
// the tensor-name map (PLE, layer_output_scale, router/experts).
import Foundation
import Testing
@testable import GemmaModel
import GemmaFormats
import GemmaParallel

let gemma4GGUF = hfFixtures.deletingLastPathComponent().appendingPathComponent("gguf_gemma4")

@Suite("Gemma 4 GGUF")
struct Gemma4GGUFTests {
    @Test(arguments: ["gemma4_e_style", "gemma4_dense_keqv", "gemma4_moe"], [1, 2, 4])
    func matchesTheHFFixture(fixture: String, ranks: Int) throws {
        let expected = try Expected(fixture)
        let file = gemma4GGUF.appendingPathComponent(fixture + ".gguf")
        let (logits, greedy) = try runFixture(fixture, ranks: ranks, feeding: .twoChunks, model: file)
        let diff = maxAbsDiff(logits, expected.logits)
        // Same weights in f32 as the safetensors fixture: the same tolerance (logitTolerance).
        #expect(logits.count == expected.logits.count)
        #expect(diff <= logitTolerance, "\(fixture) GGUF at \(ranks) ranks: max |logit diff| \(diff)")
        #expect(greedy == expected.greedyTokens, "\(fixture) GGUF at \(ranks) ranks")
    }

    /// The GGUF metadata resolves to the same decoder config as the HF config.json.
    @Test(arguments: ["gemma4_e_style", "gemma4_dense_keqv", "gemma4_moe"])
    func configMatchesConfigJSON(fixture: String) throws {
        let hf = try GemmaConfig.load(directory: hfFixtures.appendingPathComponent(fixture))
        let g = try GemmaConfig(gguf: try GGUFFile(path: gemma4GGUF.appendingPathComponent(fixture + ".gguf").path))
        #expect(g.layerTypes == hf.layerTypes && g.layerHeadDims == hf.layerHeadDims && g.layerKVHeads == hf.layerKVHeads)
        #expect((0..<hf.numHiddenLayers).map(g.kvSourceLayer) == (0..<hf.numHiddenLayers).map(hf.kvSourceLayer))
        #expect((0..<hf.numHiddenLayers).map(g.hasVProj) == (0..<hf.numHiddenLayers).map(hf.hasVProj))
        #expect((0..<hf.numHiddenLayers).map { g.intermediateSize(layer: $0) } == (0..<hf.numHiddenLayers).map { hf.intermediateSize(layer: $0) })
        #expect(g.ropeParameters == hf.ropeParameters, "\(g.ropeParameters) vs \(hf.ropeParameters)")
        #expect(g.perLayerInputSize == hf.perLayerInputSize && g.isMoE == hf.isMoE && g.numExperts == hf.numExperts)
        #expect(g.finalLogitSoftcapping == hf.finalLogitSoftcapping && g.slidingWindow == hf.slidingWindow && !g.normAddsOne)
    }
}
