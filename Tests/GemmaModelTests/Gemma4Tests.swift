// Gemma 4 config resolution (per-layer head dims / KV heads in both config forms, KV-sharing
// map, double-wide MLP), refusals that name the feature, and plans of the shipped presets
// (per-rank weight and KV bytes checked against hand arithmetic). The forward pass itself is
// checked against the transformers fixtures in FixtureTests.swift (gemma4_* entries).
import Foundation
import Testing
@testable import GemmaModel
import GemmaKernels
import GemmaParallel
import GemmaTestSupport

@Suite("Gemma 4 config and plan")
struct Gemma4ConfigTests {
    @Test func perLayerConfigFormOfTheFixtures() throws {
        let e = try GemmaConfig.load(directory: hfFixtures.appendingPathComponent("gemma4_e_style"))
        #expect(e.layerHeadDims == [16, 16, 32, 16, 16, 32] && e.layerKVHeads == Array(repeating: 1, count: 6))
        #expect(e.firstKVSharedLayer == 4)
        // Consumers read the LAST producer of their own type, not layer i - 4.
        #expect((0..<6).map(e.kvSourceLayer) == [0, 1, 2, 3, 3, 2])
        #expect((0..<6).map { e.intermediateSize(layer: $0) } == [64, 64, 64, 64, 128, 128])
        #expect(e.perLayerInputSize == 16 && e.perLayerVocabSize == 256)
        #expect(e.ropeParameters[.full] == RopeParameters(ropeType: "proportional", ropeTheta: 1e6, partialRotaryFactor: 0.25))

        let k = try GemmaConfig.load(directory: hfFixtures.appendingPathComponent("gemma4_dense_keqv"))
        #expect(k.layerHeadDims == [16, 16, 32] && k.layerKVHeads == [2, 2, 1])
        #expect((0..<3).map(k.hasVProj) == [true, true, false] && (0..<3).map(k.hasOwnKV) == [true, true, true])
        #expect(k.perLayerInputSize == 0 && k.queryPreAttnScalar == 1)
    }

    @Test func releasedFormWithGlobalHeadDim() throws {
        // num_global_key_value_heads applies only with attention_k_eq_v (Gemma4TextConfig.__post_init__).
        let base = #""model_type": "gemma4_text", "num_hidden_layers": 6, "num_key_value_heads": 4, "head_dim": 64, "global_head_dim": 128, "num_global_key_value_heads": 1"#
        let with = try parse("{\(base), \"attention_k_eq_v\": true}")
        #expect(with.layerHeadDims == [64, 64, 64, 64, 64, 128] && with.layerKVHeads == [4, 4, 4, 4, 4, 1])
        #expect(with.hasVProj(5) == false && with.hasVProj(4))
        let without = try parse("{\(base)}")
        #expect(without.layerHeadDims.last == 128 && without.layerKVHeads.last == 4)
        // Defaults: global_head_dim 512, proportional RoPE on full layers, last layer forced full.
        let d = try parse(#"{"model_type": "gemma4_text", "num_hidden_layers": 4, "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"]}"#)
        #expect(d.layerTypes == [.sliding, .full, .sliding, .full] && d.layerHeadDims == [256, 512, 256, 512])
        #expect(d.ropeParameters[.full]?.ropeType == "proportional" && d.ropeParameters[.sliding]?.ropeTheta == 1e4)
        // Keys Gemma4TextConfig does not use change nothing: no attention soft-cap, the default
        // layer pattern stays 5:1, the attention scale stays 1.0.
        let ignored = try parse(#"{"model_type": "gemma4_text", "num_hidden_layers": 6, "attn_logit_softcapping": 50.0, "sliding_window_pattern": 2, "query_pre_attn_scalar": 256}"#)
        #expect(ignored.attnLogitSoftcapping == nil && ignored.queryPreAttnScalar == 1)
        #expect(ignored.layerTypes == [.sliding, .sliding, .sliding, .sliding, .sliding, .full])
    }

    @Test func presetsResolveLikeTheSpecSays() throws {
        let e2b = try #require(try ModelPresets.config(named: "e2b"))
        #expect(e2b.firstKVSharedLayer == 15)
        #expect(e2b.kvSourceLayer(15) == 13 && e2b.kvSourceLayer(19) == 14 && e2b.kvSourceLayer(34) == 14)
        #expect(e2b.intermediateSize(layer: 14) == 6144 && e2b.intermediateSize(layer: 15) == 12288)
        let e4b = try #require(try ModelPresets.config(named: "gemma-4-E4B"))
        #expect(e4b.kvSourceLayer(24) == 22 && e4b.kvSourceLayer(29) == 23 && e4b.layerKVHeads[5] == 2)
        let big = try #require(try ModelPresets.config(named: "31b"))
        #expect(big.layerHeadDims[5] == 512 && big.layerKVHeads[5] == 4 && big.layerKVHeads[0] == 16 && !big.hasVProj(5))
        let moe = try #require(try ModelPresets.config(named: "26b-a4b"))
        #expect(moe.isMoE && moe.numExperts == 128 && moe.layerKVHeads[29] == 2)
        for name in ModelPresets.names { try #require(try ModelPresets.config(named: name)).checkSupported(planning: true) }
        #expect(try ModelPresets.config(named: "gemma-5") == nil)
    }

    /// Each preset factory gives exactly the config its published-style config.json gave before
    /// the presets were written as factories (Tests/Fixtures/presets/NAME.json, decoded here).
    @Test func presetFactoriesEqualTheirFixtures() throws {
        let dir = TestPaths.fixture("presets")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".json") }.sorted()
        #expect(Set(["gemma-4-e2b", "gemma-4-e4b", "gemma-4-31b", "gemma-4-26b-a4b"]).isSubset(of: files.map { String($0.dropLast(5)) }))
        for file in files {
            let name = String(file.dropLast(5))
            let want = try JSONDecoder().decode(GemmaConfig.self, from: Data(contentsOf: dir.appendingPathComponent(file)))
            let got = try #require(try ModelPresets.config(named: name), "no preset \(name)")
            #expect(got == want, "\(name)")
        }
        #expect(ModelPresets.names.allSatisfy { files.contains($0 + ".json") })
    }

    @Test func unknownFeaturesAreRefusedByName() throws {
        let base = #""model_type": "gemma4_text", "num_hidden_layers": 2"#
        func refusal(_ extra: String) -> String {
            do { try parse("{\(base), \(extra)}").checkSupported(); return "accepted" } catch { return String(describing: error) }
        }
        #expect(refusal(#""use_sparse_attention": true"#).contains("\"use_sparse_attention\""))
        #expect(refusal(#""per_layer_config": {"1": {"head_dim": 64, "sliding_window": 9}}"#).contains("per_layer_config[1].sliding_window"))
        #expect(refusal(#""rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 1e6}}"#).contains("rope_type \"yarn\" (full_attention)"))
        #expect(refusal(#""use_bidirectional_attention": "all""#).contains("use_bidirectional_attention = \"all\""))
        // Harmless or switched-off keys pass.
        #expect(refusal(#""use_sparse_attention": false, "initializer_range": 0.02, "use_bidirectional_attention": "vision""#) == "accepted")
        // A consumer type without a producer below the first shared layer is invalid.
        #expect(throws: GemmaConfigError.self) {
            try parse(#"{"model_type": "gemma4_text", "num_hidden_layers": 3, "num_kv_shared_layers": 1, "layer_types": ["sliding_attention", "sliding_attention", "full_attention"]}"#)
        }
    }

    /// Every key transformers 5.23.0 writes for a Gemma4TextConfig (its `to_dict()` of the
    /// class defaults with 6 layers, pasted) is known: a full saved config is not refused.
    @Test func everyKeyTransformersWritesIsKnown() throws {
        let c = try parse(#"{"_name_or_path": "", "architectures": null, "attention_bias": false, "attention_dropout": 0.0, "attention_k_eq_v": false, "bos_token_id": 2, "chunk_size_feed_forward": 0, "dtype": null, "enable_moe_block": false, "eos_token_id": 1, "final_logit_softcapping": null, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "hidden_size_per_layer_input": 256, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "initializer_range": 0.02, "intermediate_size": 9216, "is_encoder_decoder": false, "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention", "full_attention"], "max_position_embeddings": 131072, "model_type": "gemma4_text", "moe_intermediate_size": null, "num_attention_heads": 8, "num_experts": null, "num_hidden_layers": 6, "num_key_value_heads": 4, "num_kv_shared_layers": 0, "output_attentions": false, "output_hidden_states": false, "pad_token_id": 0, "per_layer_config": {"5": {"head_dim": 512}}, "problem_type": null, "return_dict": true, "rms_norm_eps": 1e-06, "rope_parameters": {"full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"}, "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}}, "sliding_window": 512, "tie_word_embeddings": true, "top_k_experts": null, "transformers_version": "5.23.0", "use_bidirectional_attention": null, "use_cache": true, "use_double_wide_mlp": false, "vocab_size": 262144, "vocab_size_per_layer_input": 262144}"#)
        try c.checkSupported()
        #expect(c.unknownFeatureKeys.isEmpty && c.layerHeadDims == [256, 256, 256, 256, 256, 512])
    }

    @Test func planSplitsPerLayerShapes() throws {
        let c = try GemmaConfig.load(directory: hfFixtures.appendingPathComponent("gemma4_dense_keqv"))
        let p = try ShardPlan(config: c, ranks: 4)
        // Sliding layers: 2 KV heads of dim 16 over 4 ranks (each pair of ranks shares one);
        // the full layer: 1 KV head of dim 32 on every rank.
        #expect(p.layers[0].map(\.kvHeads) == [0..<1, 0..<1, 1..<2, 1..<2] && p.layers[0][0].headDim == 16)
        #expect(p.layers[2].map(\.kvHeads) == Array(repeating: 0..<1, count: 4) && p.layers[2][3].headDim == 32)
    }

    /// 31B at Q4_K over 1, 2 and 4 ranks: KV bytes per 1K tokens by hand (f16 cache, the default; sliding
    /// layers hold min(1024, window + batch) = 1024 positions), weights about 1/N plus the
    /// replicated vectors.
    @Test func plan31BByHand() throws {
        let c = try #require(try ModelPresets.config(named: "31b"))
        let one = try ShardReport(config: c, ranks: 1, weightType: .q4_K)
        // 50 sliding layers x 16 KV heads x 256 + 10 full layers x 4 KV heads x 512; K and V; f16.
        let kv1 = (50 * 16 * 256 + 10 * 4 * 512) * 2 * 2 * 1024
        #expect(one.perRank[0].kvCacheBytesPer1KTokens == kv1)
        // At 4K tokens the sliding layers still hold only window + batch = 1536 positions.
        let kv4K = 10 * 4 * 512 * 2 * 2 * 4096 + 50 * 16 * 256 * 2 * 2 * 1536
        #expect(one.peakRankBytes(contextTokens: 4096) == one.perRank[0].weightBytes + kv4K)
        // Parameters: embedding + per layer q/k/(v)/o + 3 MLP matrices; 4.5 bits each at Q4_K
        // (every row length here is a multiple of 256).
        let h = 5376, i = 21504
        var params = 262144 * h
        for l in 0..<60 {
            let full = l % 6 == 5, d = full ? 512 : 256, kv = full ? 4 : 16
            params += 32 * d * h * 2 + kv * d * h * (full ? 1 : 2) + 3 * i * h
        }
        let vectors = (60 * (4 * h + 1 + 512 + 512) + h) * 4   // norms, q/k norms (<= 512), layer scalars, final norm: f32
        let q4 = params / 256 * 144
        #expect(abs(one.totalWeightBytes - (q4 + vectors)) < 60 * 2 * 512 * 4, "\(one.totalWeightBytes) vs \(q4 + vectors)")
        for n in [2, 4] {
            let r = try ShardReport(config: c, ranks: n, weightType: .q4_K)
            for rank in r.perRank {
                // Everything but the vectors and the replicated full-layer KV projections splits 1/N.
                #expect(rank.weightBytes >= one.totalWeightBytes / n && rank.weightBytes <= one.totalWeightBytes / n + vectors + 10 * 4 * 512 * h)
            }
            // Sliding KV heads split; full-layer KV heads (4) split too at 2 and 4 ranks.
            #expect(r.perRank[0].kvCacheBytesPer1KTokens == kv1 / n)
        }
        // "How many 8 GB machines for 31B at 4 bits?" — with 4K tokens of context.
        let fit = try #require(ShardReport.fewestRanks(config: c, weightType: .q4_K, bytesPerRank: 8_000_000_000, contextTokens: 4096))
        #expect(fit.peakRankBytes(contextTokens: 4096) <= 8_000_000_000)
        // Every rank count below it either cannot split 31B (32 heads) or does not fit.
        for n in 1..<fit.ranks {
            guard let fewer = try? ShardReport(config: c, ranks: n, weightType: .q4_K) else { continue }
            #expect(fewer.peakRankBytes(contextTokens: 4096) > 8_000_000_000, "\(n) ranks would fit")
        }
        print("31B Q4_K: \(one.totalWeightBytes) bytes of weights; fits 8 GB machines at \(fit.ranks) ranks (4K context)")
    }

    /// PLE tables are vocab-parallel: E2B's 262144 x 35·256 table is split, not replicated;
    /// KV consumers cache nothing.
    @Test func planE2BSplitsThePLETable() throws {
        let c = try #require(try ModelPresets.config(named: "e2b"))
        let one = try ShardReport(config: c, ranks: 1, weightType: .bf16)
        let two = try ShardReport(config: c, ranks: 2, weightType: .bf16)
        let table = 262144 * 35 * 256 * 2
        #expect(one.perRank[0].weightBytes > table)
        // Over half: the replicated pieces' other half: the PLE context projection (35·256 x 1536)
        // and per-layer gate/projection (2 x 256 x 1536 x 35), ~82 MB in bf16, and the one KV
        // head's k/v projections (~28 MB) that both ranks hold: ~55 MB in all.
        #expect(two.perRank[0].weightBytes < one.perRank[0].weightBytes / 2 + 60_000_000)
        #expect(two.perRank[0].weightBytes > one.perRank[0].weightBytes / 2)
        // 15 producer layers only: 12 sliding (1 KV head x 256) + 3 full (1 x 512), MQA so every rank holds it.
        let kv = (12 * 256 + 3 * 512) * 2 * 2 * 1024   // f16, the default cache type
        #expect(one.perRank[0].kvCacheBytesPer1KTokens == kv && two.perRank[1].kvCacheBytesPer1KTokens == kv)
        // The other types: f32 twice the bytes, q8_0 34 bytes per 32 values.
        let f32 = try ShardReport(config: c, ranks: 1, weightType: .bf16, kvType: .f32)
        let q8 = try ShardReport(config: c, ranks: 1, weightType: .bf16, kvType: .q8_0)
        #expect(f32.perRank[0].kvCacheBytesPer1KTokens == 2 * kv)
        #expect(q8.perRank[0].kvCacheBytesPer1KTokens == (12 * 256 + 3 * 512) / 32 * 34 * 2 * 1024)
    }
}

/// What a rank really holds after loading equals what `inspect` plans for it, byte for byte,
/// and shrinks with the rank count (the PLE table and the experts are split, not replicated).
@Suite("Gemma 4 loaded shares")
struct Gemma4LoadedShareTests {
    @Test(arguments: ["gemma4_e_style", "gemma4_dense_keqv", "gemma4_moe"], [1, 2, 4])
    func loadedBytesEqualThePlan(fixture: String, ranks: Int) throws {
        let dir = hfFixtures.appendingPathComponent(fixture)
        let report = try ShardReport(directory: dir, ranks: ranks)
        let both = try LocalCommunicator.run(ranks: ranks) { comm -> [Int] in
            let shard = try GemmaShard.load(path: dir, comm: comm, options: GemmaLoadOptions(maxContext: 16))
            return [shard.weightBytes, shard.weightBytesReadPerToken]
        }
        let loaded = both.map { $0[0] }
        #expect(loaded == report.perRank.map(\.weightBytes), "\(fixture) at \(ranks) ranks")
        Self.expectReadBytes(both.map { $0[1] }, report, fixture)
        if ranks > 1 { #expect(loaded.allSatisfy { $0 < report.totalWeightBytes * 3 / (2 * ranks) }, "\(loaded) of \(report.totalWeightBytes)") }
    }

    /// The same for GGUF files: the Gemma 4 conversions and a Q8_0 Gemma 3 (block-aligned,
    /// possibly uneven MLP shares in the file's own encoding).
    @Test(arguments: ["gguf_gemma4/gemma4_e_style.gguf", "gguf_gemma4/gemma4_moe.gguf", "gguf_models/gemma3_pattern_q8.gguf"], [1, 2])
    func ggufPlanEqualsLoadedBytes(file: String, ranks: Int) throws {
        let url = hfFixtures.deletingLastPathComponent().appendingPathComponent(file)
        let report = try ShardReport(gguf: url, ranks: ranks)
        let both = try LocalCommunicator.run(ranks: ranks) { comm -> [Int] in
            let shard = try GemmaShard.load(path: url, comm: comm, options: GemmaLoadOptions(maxContext: 16))
            return [shard.weightBytes, shard.weightBytesReadPerToken]
        }
        #expect(both.map { $0[0] } == report.perRank.map(\.weightBytes), "\(file) at \(ranks) ranks")
        Self.expectReadBytes(both.map { $0[1] }, report, file)
    }

    /// The bytes a decode token reads (bench's roofline) follow the planner's rule: lookup
    /// tables one row, MoE experts topK / numExperts of their bytes. The planner rounds the
    /// expert share per tensor (gate_up and down), the loader per layer: at most one byte
    /// apart per MoE layer. The rule must bite where it applies: a PLE table or experts make the
    /// read bytes smaller than the held ones.
    static func expectReadBytes(_ read: [Int], _ report: ShardReport, _ name: String) {
        let slack = report.config.isMoE ? report.config.numHiddenLayers : 0
        for (got, want) in zip(read, report.perRank.map(\.decodeReadBytes)) {
            #expect(abs(got - want) <= slack, "\(name): loader reads \(got) bytes per token, planner \(want)")
        }
        if report.config.isMoE || report.config.perLayerInputSize > 0 {
            #expect(zip(read, report.perRank.map(\.weightBytes)).allSatisfy { $0 < $1 }, "\(name): \(read)")
        }
    }
}
