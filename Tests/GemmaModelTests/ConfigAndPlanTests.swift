// GemmaConfig parsing (nesting, per-generation defaults, old- and new-style RoPE, layer-type
// rules) and ShardPlan arithmetic (head blocks, KV replication, MLP and vocab ranges, uneven
// block-aligned splits, refusals naming the dimension).
import Foundation
import Testing
@testable import GemmaModel
import GemmaParallel
import GemmaKernels

func parse(_ json: String) throws -> GemmaConfig {
    try JSONDecoder().decode(GemmaConfig.self, from: Data(json.utf8))
}

@Suite("GemmaConfig")
struct ConfigTests {
    @Test func multimodalFixtureUsesTextConfig() throws {
        let c = try GemmaConfig.load(directory: hfFixtures.appendingPathComponent("gemma3_multimodal"))
        #expect(c.generation == .gemma3 && c.modelType == "gemma3_text")
        #expect(c.hiddenSize == 64 && c.numHiddenLayers == 2 && c.layerTypes == [.sliding, .full])
        #expect(c.queryPreAttnScalar == 24 && c.slidingWindow == 5)
        #expect(c.ropeParameters[.full] == RopeParameters(ropeType: "linear", ropeTheta: 1e6, factor: 8))
        #expect(c.ropeParameters[.sliding] == RopeParameters(ropeType: "default", ropeTheta: 1e4))
    }

    @Test func sparseGemma3TextConfigTakesClassDefaultsAndOldStyleRope() throws {
        let c = try parse("""
        {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "num_hidden_layers": 12,
          "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "rope_local_base_freq": 10000.0},
         "tie_word_embeddings": true, "eos_token_id": [1, 106]}
        """)
        #expect(c.queryPreAttnScalar == 256 && c.rmsNormEps == 1e-6 && c.vocabSize == 262208 && c.headDim == 256)
        #expect(c.layerTypes.enumerated().allSatisfy { i, t in t == (((i + 1) % 6 == 0) ? .full : .sliding) })
        #expect(c.ropeParameters[.full] == RopeParameters(ropeType: "linear", ropeTheta: 1e6, factor: 8))
        #expect(c.ropeParameters[.sliding]?.ropeTheta == 1e4 && c.ropeParameters[.sliding]?.factor == nil)
        #expect(c.attnLogitSoftcapping == nil && c.finalLogitSoftcapping == nil)
        #expect(c.eosTokenIds == [1, 106])
    }

    @Test func gemma2DefaultsAlternateStartingSliding() throws {
        let c = try parse(#"{"model_type": "gemma2", "num_hidden_layers": 4, "rope_theta": 10000}"#)
        #expect(c.layerTypes == [.sliding, .full, .sliding, .full])
        #expect(c.attnLogitSoftcapping == 50 && c.finalLogitSoftcapping == 30 && c.slidingWindow == 4096)
        #expect(c.queryPreAttnScalar == 256)
        // An explicit null turns a soft-cap off.
        let off = try parse(#"{"model_type": "gemma2", "num_hidden_layers": 2, "attn_logit_softcapping": null}"#)
        #expect(off.attnLogitSoftcapping == nil && off.finalLogitSoftcapping == 30)
    }

    @Test func gemma1UsesHeadDimScaleAndTanhGelu() throws {
        let c = try parse(#"{"model_type": "gemma", "head_dim": 128, "hidden_act": "gelu", "num_hidden_layers": 2}"#)
        #expect(c.queryPreAttnScalar == 128 && c.hiddenActivation == "gelu_pytorch_tanh")
        #expect(c.layerTypes == [.full, .full] && c.slidingWindow == nil && !c.hasPostNorms)
    }

    @Test func refusals() throws {
        #expect(throws: GemmaConfigError.unknownModelType("llama")) { try parse(#"{"model_type": "llama"}"#) }
        #expect(throws: GemmaConfigError.invalid("layer_types has 1 entries for 2 layers")) {
            try parse(#"{"model_type": "gemma3_text", "num_hidden_layers": 2, "layer_types": ["full_attention"]}"#)
        }
        let g4 = try GemmaConfig.load(directory: hfFixtures.appendingPathComponent("gemma4_e_style"))
        #expect(g4.generation == .gemma4 && g4.hiddenSizePerLayerInput == 16 && g4.numKvSharedLayers == 2)
        #expect(g4.layerTypes.last == .full)
        try g4.checkSupported()
    }
}

@Suite("ShardPlan")
struct ShardPlanTests {
    func plan(nq: Int, nkv: Int, ranks: Int, i: Int = 128, vocab: Int = 256) throws -> ShardPlan {
        try ShardPlan(ranks: ranks, vocabSize: vocab, layers: [LayerDims(numHeads: nq, numKVHeads: nkv, headDim: 16, intermediateSize: i)])
    }

    @Test func partitionedKVHeads() throws {
        let p = try plan(nq: 8, nkv: 4, ranks: 2)
        #expect(p.layers[0].map(\.qHeads) == [0..<4, 4..<8])
        #expect(p.layers[0].map(\.kvHeads) == [0..<2, 2..<4])
        #expect(p.layers[0][1].localKVHead(forLocalQueryHead: 3) == 1)
        #expect(p.layers[0].map(\.mlpColumns) == [0..<64, 64..<128])
        #expect(p.vocabRanges == [0..<128, 128..<256])
        #expect(!p.replicatesKV)
    }

    @Test func replicatedKVHeadsWhenFewerThanRanks() throws {
        let mqa = try plan(nq: 4, nkv: 1, ranks: 4)
        #expect(mqa.layers[0].map(\.kvHeads) == Array(repeating: 0..<1, count: 4))
        let gqa = try plan(nq: 8, nkv: 2, ranks: 4)
        #expect(gqa.layers[0].map(\.kvHeads) == [0..<1, 0..<1, 1..<2, 1..<2])
        #expect(gqa.replicatesKV)
    }

    @Test func refusalsNameTheDimension() throws {
        #expect(throws: ShardPlanError.indivisible(dimension: "vocab_size", size: 262208, ranks: 128, unit: 1)) {
            try plan(nq: 128, nkv: 1, ranks: 128, i: 128 * 4, vocab: 262208)
        }
        #expect(throws: ShardPlanError.indivisible(dimension: "intermediate_size (layer 0)", size: 100, ranks: 8, unit: 1)) {
            try plan(nq: 8, nkv: 1, ranks: 8, i: 100)
        }
        #expect(String(describing: ShardPlanError.indivisible(dimension: "num_attention_heads (layer 0)", size: 4, ranks: 3, unit: 1))
                == "cannot split num_attention_heads (layer 0) = 4 evenly across 3 ranks (4 is not a multiple of 3)")
    }

    @Test func unevenBlockAlignedMLP() throws {
        // Gemma 4 26B dense I = 2112 = 66 blocks of 32 over 4 ranks: 17/17/16/16 blocks.
        let p = try ShardPlan(ranks: 4, vocabSize: 256, layers: [LayerDims(numHeads: 4, numKVHeads: 1, headDim: 16, intermediateSize: 2112)],
                              mlpAlign: 32, allowUnevenMLP: true)
        #expect(p.layers[0].map(\.mlpColumns.count) == [544, 544, 512, 512])
        #expect(p.layers[0].map(\.mlpColumns.lowerBound) == [0, 544, 1088, 1600])
        #expect(throws: ShardPlanError.indivisible(dimension: "intermediate_size (layer 0)", size: 2112, ranks: 4, unit: 256)) {
            try ShardPlan(ranks: 4, vocabSize: 256, layers: [LayerDims(numHeads: 4, numKVHeads: 1, headDim: 16, intermediateSize: 2112)],
                          mlpAlign: 256, allowUnevenMLP: true)
        }
    }
}

@Suite("GemmaConfig seam for GGUF metadata")
struct ConfigDictionaryTests {
    @Test func dictionaryDecodesLikeConfigJSON() throws {
        let fromFile = try GemmaConfig.load(directory: hfFixtures.appendingPathComponent("gemma2_softcap"))
        let data = try Data(contentsOf: hfFixtures.appendingPathComponent("gemma2_softcap").appendingPathComponent("config.json"))
        let dict = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        var fromDict = try GemmaConfig(configDictionary: dict)
        #expect(fromDict == fromFile && fromDict.normAddsOne)
        fromDict.normAddsOne = false  // what a GGUF loader sets
        #expect(fromDict != fromFile)
    }
}

@Suite("Embedding scale")
struct EmbeddingScaleTests {
    /// GEMMA_SPEC §2.2: the scale is rounded to the compute dtype (fixtures use H = 64, where
    /// sqrt is exact, so the rule is checked here; the engine computes in f32).
    @Test func roundedToTheComputeDType() {
        #expect(GemmaShard.embeddingScale(hiddenSize: 3072, activationType: .bf16) == 55.5)
        #expect(GemmaShard.embeddingScale(hiddenSize: 2560, activationType: .bf16) == 50.5)
        #expect(GemmaShard.embeddingScale(hiddenSize: 1536, activationType: .bf16) == 39.25)
        #expect(GemmaShard.embeddingScale(hiddenSize: 5376, activationType: .bf16) == 73.5)
        #expect(GemmaShard.embeddingScale(hiddenSize: 3072, activationType: .f32) == Float(3072.0.squareRoot()))
        #expect(GemmaShard.embeddingScale(hiddenSize: 3072, activationType: .f16) == Float(Float16(Float(3072.0.squareRoot()))))
    }
}

@Suite("Stop tokens")
struct StopTokenTests {
    @Test func mergesGenerationConfig() throws {
        let dir = try copyFixture("gemma3_pattern")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try GemmaConfig.load(directory: dir)
        #expect(config.stopTokenIds(directory: dir) == [1])
        try Data(#"{"eos_token_id": [1, 106]}"#.utf8).write(to: dir.appendingPathComponent("generation_config.json"))
        #expect(config.stopTokenIds(directory: dir) == [1, 106])
        try FileManager.default.removeItem(at: dir.appendingPathComponent("generation_config.json"))
        #expect(config.stopTokenIds(directory: dir) == [1])
    }
}
