// The one mirror of a Gemma `config.json` (Gemma 1-4, text-only or with the decoder nested
// in `text_config`): decoding (class defaults per generation: GemmaConfigDefaults.swift),
// encoding back to config.json spelling, and the resolved fields. GGUF metadata maps onto this
// same struct through `init(configDictionary:)` (GGUFMetadata.swift renames its keys to
// config.json names and sets `normAddsOne = false`: GGUF stores the norm multiplier itself).
// Checks: GemmaConfigValidation.swift; Gemma 4's per-layer structure: Gemma4LayerMap.swift.
// Nothing here reads weights.
import Foundation
import GemmaParallel

/// Which Gemma generation a config describes.
public enum GemmaGeneration: String, Codable, Sendable {
    case gemma1 = "gemma", gemma2 = "gemma2", gemma3 = "gemma3", gemma4 = "gemma4"
}

/// Attention kind of one layer.
public enum LayerType: String, Codable, Sendable {
    case sliding = "sliding_attention"
    case full = "full_attention"
}

/// RoPE parameters of one layer type (`rope_parameters[type]` in new-style configs).
public struct RopeParameters: Codable, Sendable, Equatable {
    /// "default", "linear" or (Gemma 4) "proportional".
    public var ropeType: String
    public var ropeTheta: Double
    /// Linear/proportional scaling factor (positions divided by it); nil = 1.
    public var factor: Double?
    /// Proportional RoPE: fraction of the head's frequency pairs that rotate.
    public var partialRotaryFactor: Double?

    enum CodingKeys: String, CodingKey {
        case ropeType = "rope_type", ropeTheta = "rope_theta", factor, partialRotaryFactor = "partial_rotary_factor"
    }
    public init(ropeType: String = "default", ropeTheta: Double, factor: Double? = nil, partialRotaryFactor: Double? = nil) {
        self.ropeType = ropeType
        self.ropeTheta = ropeTheta
        self.factor = factor
        self.partialRotaryFactor = partialRotaryFactor
    }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        ropeType = try c.decodeIfPresent(String.self, forKey: .ropeType) ?? "default"
        ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? 10000
        factor = try c.decodeIfPresent(Double.self, forKey: .factor)
        partialRotaryFactor = try c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor)
    }
}

/// Decoder hyper-parameters of a Gemma model, resolved (defaults applied, layer types and
/// RoPE per layer type filled in). Encodes back to config.json spelling.
public struct GemmaConfig: Codable, Sendable, Equatable {
    public var generation: GemmaGeneration
    /// The text decoder's model_type as written (`gemma3_text`, ...).
    public var modelType: String
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var rmsNormEps: Double
    public var maxPositionEmbeddings: Int
    /// Attention scale is queryPreAttnScalar^-0.5 (Gemma 1: head_dim).
    public var queryPreAttnScalar: Double
    public var attnLogitSoftcapping: Double?
    public var finalLogitSoftcapping: Double?
    /// Keys a sliding layer sees, the current one included; nil = no sliding layers.
    public var slidingWindow: Int?
    public var layerTypes: [LayerType]
    /// RoPE per layer type.
    public var ropeParameters: [LayerType: RopeParameters]
    public var tieWordEmbeddings: Bool
    public var hiddenActivation: String
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]
    public var attentionBias: Bool
    // Gemma 4 (nil for earlier generations and when the config leaves them out).
    public var globalHeadDim: Int?
    public var numGlobalKeyValueHeads: Int?
    public var hiddenSizePerLayerInput: Int?
    public var numKvSharedLayers: Int?
    public var attentionKEqV: Bool?
    public var enableMoeBlock: Bool?
    public var useDoubleWideMlp: Bool?
    public var numExperts: Int?
    public var topKExperts: Int?
    public var moeIntermediateSize: Int?
    /// Gemma 4 PLE table rows (`vocab_size_per_layer_input`); nil without PLE.
    public var vocabSizePerLayerInput: Int?
    /// Gemma 4 `use_bidirectional_attention` (nil, "vision" or "all"; "all" is refused).
    public var useBidirectionalAttention: String?
    /// Per-layer head dim and KV-head count, resolved from `per_layer_config` or from
    /// `global_head_dim` / `num_global_key_value_heads` (GEMMA_SPEC §1.2). Uniform before Gemma 4.
    public var layerHeadDims: [Int]
    public var layerKVHeads: [Int]
    /// Keys of `per_layer_config` entries this engine does not know (refused by name).
    public var unknownPerLayerKeys: [String]
    /// Gemma 4 text_config keys this engine does not know, with a value that is not null,
    /// false or 0 (refused by name by `checkSupported`).
    public var unknownFeatureKeys: [String]
    /// Norm weights are stored as w for a (1 + w) multiplier: Gemma 1-3 safetensors. False for
    /// Gemma 4 and for every GGUF file (converters bake the + 1 in). Not part of config.json.
    public var normAddsOne: Bool

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", textConfig = "text_config"
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", rmsNormEps = "rms_norm_eps"
        case maxPositionEmbeddings = "max_position_embeddings", queryPreAttnScalar = "query_pre_attn_scalar"
        case attnLogitSoftcapping = "attn_logit_softcapping", finalLogitSoftcapping = "final_logit_softcapping"
        case slidingWindow = "sliding_window", slidingWindowPattern = "sliding_window_pattern"
        case slidingWindowPatternPrivate = "_sliding_window_pattern"
        case layerTypes = "layer_types", ropeParameters = "rope_parameters", ropeTheta = "rope_theta"
        case ropeLocalBaseFreq = "rope_local_base_freq", ropeScaling = "rope_scaling"
        case tieWordEmbeddings = "tie_word_embeddings", hiddenActivation = "hidden_activation", hiddenAct = "hidden_act"
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id", attentionBias = "attention_bias"
        case globalHeadDim = "global_head_dim", numGlobalKeyValueHeads = "num_global_key_value_heads"
        case hiddenSizePerLayerInput = "hidden_size_per_layer_input", numKvSharedLayers = "num_kv_shared_layers"
        case attentionKEqV = "attention_k_eq_v", enableMoeBlock = "enable_moe_block", useDoubleWideMlp = "use_double_wide_mlp"
        case numExperts = "num_experts", topKExperts = "top_k_experts", moeIntermediateSize = "moe_intermediate_size"
        case perLayerConfig = "per_layer_config"
        case vocabSizePerLayerInput = "vocab_size_per_layer_input", useBidirectionalAttention = "use_bidirectional_attention"
    }

    /// Gemma 4 text_config keys that are understood (or harmless for inference): any other key
    /// with a non-trivial value is a feature this engine does not know and is refused by name.
    static let knownGemma4Keys: Set<String> = [
        "model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_activation", "hidden_act",
        "max_position_embeddings", "initializer_range", "rms_norm_eps", "use_cache", "pad_token_id", "eos_token_id",
        "bos_token_id", "tie_word_embeddings", "rope_parameters", "attention_bias", "attention_dropout",
        "sliding_window", "layer_types", "final_logit_softcapping", "use_bidirectional_attention",
        "vocab_size_per_layer_input", "hidden_size_per_layer_input", "attention_k_eq_v", "num_kv_shared_layers",
        "enable_moe_block", "use_double_wide_mlp", "num_experts", "top_k_experts", "moe_intermediate_size",
        "global_head_dim", "num_global_key_value_heads", "per_layer_config", "dtype", "torch_dtype",
        "transformers_version", "output_hidden_states", "output_attentions", "return_dict", "chunk_size_feed_forward",
        "is_encoder_decoder", "id2label", "label2id", "problem_type", "tokenizer_class", "_name_or_path",
        "attn_logit_softcapping", "query_pre_attn_scalar", "sliding_window_pattern",
    ]

    /// Decodes a config.json-shaped dictionary (the seam for GGUF metadata mapped to HF names).
    public init(configDictionary: [String: Any]) throws {
        guard JSONSerialization.isValidJSONObject(configDictionary) else {
            throw GemmaConfigError.invalid("config dictionary is not JSON-serialisable")
        }
        let data = try JSONSerialization.data(withJSONObject: configDictionary)
        self = try JSONDecoder().decode(GemmaConfig.self, from: data)
    }

    /// Stop tokens of a model directory: `eos_token_id` (an id or a list) of
    /// `generation_config.json`, which holds the real ones for released checkpoints (e.g.
    /// [1, 106] for instruction-tuned Gemma 3), merged with config.json's. Unreadable or absent
    /// generation config: config.json's alone.
    public func stopTokenIds(directory: URL) -> [Int] {
        var ids = eosTokenIds
        let url = directory.appendingPathComponent("generation_config.json")
        if let data = FileManager.default.contents(atPath: url.path),
           let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            if let one = json["eos_token_id"] as? Int { ids.append(one) }
            if let many = json["eos_token_id"] as? [Int] { ids += many }
        }
        var seen = Set<Int>()
        return ids.filter { seen.insert($0).inserted }
    }

    /// Reads `config.json` in a model directory.
    public static func load(directory: URL) throws -> GemmaConfig {
        let url = directory.appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw GemmaConfigError.unreadable(path: url.path, reason: "file missing or unreadable")
        }
        do {
            return try JSONDecoder().decode(GemmaConfig.self, from: data)
        } catch let error as GemmaConfigError {
            throw error
        } catch {
            throw GemmaConfigError.unreadable(path: url.path, reason: "\(error)")
        }
    }

    public init(from decoder: Decoder) throws {
        let top = try decoder.container(keyedBy: CodingKeys.self)
        // Multimodal checkpoints nest the decoder in text_config; some keys may sit at the top.
        let text = top.contains(.textConfig) ? try top.nestedContainer(keyedBy: CodingKeys.self, forKey: .textConfig) : top
        func get<T: Decodable>(_ type: T.Type, _ key: CodingKeys) throws -> T? {
            if let v = try? text.decodeIfPresent(T.self, forKey: key) { return v }
            return try? top.decodeIfPresent(T.self, forKey: key)
        }
        let topType = try top.decodeIfPresent(String.self, forKey: .modelType) ?? ""
        let textType = try text.decodeIfPresent(String.self, forKey: .modelType) ?? topType
        modelType = textType
        switch textType {
        case "gemma": generation = .gemma1
        case "gemma2": generation = .gemma2
        case "gemma3", "gemma3_text": generation = .gemma3
        case "gemma4", "gemma4_text": generation = .gemma4
        default: throw GemmaConfigError.unknownModelType(textType)
        }
        let d = Defaults.of(generation)
        vocabSize = try get(Int.self, .vocabSize) ?? d.vocab
        hiddenSize = try get(Int.self, .hiddenSize) ?? d.hidden
        intermediateSize = try get(Int.self, .intermediateSize) ?? d.intermediate
        numHiddenLayers = try get(Int.self, .numHiddenLayers) ?? d.layers
        numAttentionHeads = try get(Int.self, .numAttentionHeads) ?? d.heads
        numKeyValueHeads = try get(Int.self, .numKeyValueHeads) ?? d.kvHeads
        headDim = try get(Int.self, .headDim) ?? d.headDim
        rmsNormEps = try get(Double.self, .rmsNormEps) ?? 1e-6
        maxPositionEmbeddings = try get(Int.self, .maxPositionEmbeddings) ?? d.maxPosition
        // Gemma 1 has no such key: scale 1/sqrt(head_dim). Gemma 4 has no key either: scale 1.0.
        queryPreAttnScalar = generation == .gemma1 ? Double(headDim)
            : generation == .gemma4 ? 1
            : (try get(Double.self, .queryPreAttnScalar) ?? d.queryPreAttnScalar ?? Double(headDim))
        // An explicit null means "off"; a missing key means the class default.
        func optionalDouble(_ key: CodingKeys, _ fallback: Double?) -> Double? {
            let c = text.contains(key) ? text : (top.contains(key) ? top : nil)
            guard let c else { return fallback }
            return (try? c.decodeNil(forKey: key)) == true ? nil : ((try? c.decode(Double.self, forKey: key)) ?? fallback)
        }
        // Gemma 4's attention has no soft-cap (transformers ignores the key for it).
        attnLogitSoftcapping = generation == .gemma1 || generation == .gemma4 ? nil : optionalDouble(.attnLogitSoftcapping, d.attnSoftcap)
        finalLogitSoftcapping = generation == .gemma1 ? nil : optionalDouble(.finalLogitSoftcapping, d.finalSoftcap)
        slidingWindow = generation == .gemma1 ? nil : (try get(Int.self, .slidingWindow) ?? d.slidingWindow)

        if let types = try get([LayerType].self, .layerTypes) {
            layerTypes = types
        } else {
            let n = numHiddenLayers
            if d.slidingFirstAlternating {
                layerTypes = (0..<n).map { ($0 + 1) % 2 != 0 ? .sliding : .full }
            } else if let p0 = d.patternEvery {
                // Gemma4TextConfig's default pattern is fixed at 6 (no sliding_window_pattern key).
                let p = generation == .gemma4 ? p0 : (try get(Int.self, .slidingWindowPattern) ?? get(Int.self, .slidingWindowPatternPrivate) ?? p0)
                layerTypes = (0..<n).map { p > 0 && ($0 + 1) % p == 0 ? .full : .sliding }
            } else {
                layerTypes = Array(repeating: .full, count: n)
            }
        }
        if generation == .gemma4, !layerTypes.isEmpty { layerTypes[layerTypes.count - 1] = .full }

        // RoPE: new style is either per layer type or one flat dict for all layers; old style
        // has rope_theta (+ rope_local_base_freq, rope_scaling merged into full layers only).
        var rope: [LayerType: RopeParameters] = [:]
        if generation == .gemma4 {
            // Gemma4TextConfig defaults; no legacy keys for Gemma 4.
            rope[.sliding] = RopeParameters(ropeType: "default", ropeTheta: 10_000)
            rope[.full] = RopeParameters(ropeType: "proportional", ropeTheta: 1_000_000, partialRotaryFactor: 0.25)
        }
        if let perType = try get([String: RopeParameters].self, .ropeParameters) {
            for (k, v) in perType { if let t = LayerType(rawValue: k) { rope[t] = v } }
        } else if let flat = try get(RopeParameters.self, .ropeParameters) {
            rope[.full] = flat
            rope[.sliding] = flat
        }
        if rope[.full] == nil {
            var full = RopeParameters(ropeTheta: try get(Double.self, .ropeTheta) ?? d.fullTheta)
            if generation == .gemma3, let scaling = try get(RopeParameters.self, .ropeScaling) {
                full.ropeType = scaling.ropeType
                full.factor = scaling.factor
            }
            rope[.full] = full
        }
        if rope[.sliding] == nil {
            let theta = generation == .gemma3 || generation == .gemma4
                ? (try get(Double.self, .ropeLocalBaseFreq) ?? d.slidingTheta)
                : rope[.full]?.ropeTheta ?? d.slidingTheta
            rope[.sliding] = RopeParameters(ropeTheta: theta)
        }
        ropeParameters = rope

        tieWordEmbeddings = try get(Bool.self, .tieWordEmbeddings) ?? true
        let act = try get(String.self, .hiddenActivation) ?? get(String.self, .hiddenAct) ?? "gelu_pytorch_tanh"
        // Legacy "gelu" is rewritten to the tanh approximation by transformers.
        hiddenActivation = act == "gelu" ? "gelu_pytorch_tanh" : act
        bosTokenId = try get(Int.self, .bosTokenId)
        if let one = try get(Int.self, .eosTokenId) { eosTokenIds = [one] } else { eosTokenIds = try get([Int].self, .eosTokenId) ?? [] }
        attentionBias = try get(Bool.self, .attentionBias) ?? false

        globalHeadDim = try get(Int.self, .globalHeadDim)
        numGlobalKeyValueHeads = try get(Int.self, .numGlobalKeyValueHeads)
        hiddenSizePerLayerInput = try get(Int.self, .hiddenSizePerLayerInput)
        numKvSharedLayers = try get(Int.self, .numKvSharedLayers)
        attentionKEqV = try get(Bool.self, .attentionKEqV)
        enableMoeBlock = try get(Bool.self, .enableMoeBlock)
        useDoubleWideMlp = try get(Bool.self, .useDoubleWideMlp)
        numExperts = try get(Int.self, .numExperts)
        topKExperts = try get(Int.self, .topKExperts)
        moeIntermediateSize = try get(Int.self, .moeIntermediateSize)
        vocabSizePerLayerInput = try get(Int.self, .vocabSizePerLayerInput)
        useBidirectionalAttention = try get(String.self, .useBidirectionalAttention)
        normAddsOne = generation != .gemma4

        // Per-layer attention shapes (Gemma4TextConfig.__post_init__).
        layerHeadDims = Array(repeating: headDim, count: numHiddenLayers)
        layerKVHeads = Array(repeating: numKeyValueHeads, count: numHiddenLayers)
        unknownPerLayerKeys = []
        unknownFeatureKeys = []
        if generation == .gemma4 {
            try resolveGemma4LayerShapes(overrides: try? get([String: LayerOverride].self, .perLayerConfig))
            unknownFeatureKeys = Self.unknownKeys(decoder: decoder)
        }
        try validate()
    }

    /// text_config (or top-level) keys outside `knownGemma4Keys` whose value is not null,
    /// false, 0 or empty.
    static func unknownKeys(decoder: Decoder) -> [String] {
        guard let top = try? decoder.container(keyedBy: LayerOverride.AnyKey.self) else { return [] }
        var c = top
        if let textKey = LayerOverride.AnyKey(stringValue: "text_config"), top.contains(textKey),
           let nested = try? top.nestedContainer(keyedBy: LayerOverride.AnyKey.self, forKey: textKey) {
            c = nested
        }
        var out: [String] = []
        for key in c.allKeys where !knownGemma4Keys.contains(key.stringValue) {
            if (try? c.decodeNil(forKey: key)) == true { continue }
            if let b = try? c.decode(Bool.self, forKey: key), !b { continue }
            if let n = try? c.decode(Double.self, forKey: key), n == 0 { continue }
            if let s = try? c.decode(String.self, forKey: key), s.isEmpty { continue }
            out.append(key.stringValue)
        }
        return out.sorted()
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(modelType, forKey: .modelType)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(queryPreAttnScalar, forKey: .queryPreAttnScalar)
        try c.encode(attnLogitSoftcapping, forKey: .attnLogitSoftcapping)
        try c.encode(finalLogitSoftcapping, forKey: .finalLogitSoftcapping)
        try c.encode(slidingWindow, forKey: .slidingWindow)
        try c.encode(layerTypes, forKey: .layerTypes)
        try c.encode(Dictionary(uniqueKeysWithValues: ropeParameters.map { ($0.key.rawValue, $0.value) }), forKey: .ropeParameters)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(hiddenActivation, forKey: .hiddenActivation)
        try c.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        try c.encode(eosTokenIds, forKey: .eosTokenId)
        try c.encode(attentionBias, forKey: .attentionBias)
        if generation == .gemma4 {
            try c.encode(Dictionary(uniqueKeysWithValues: (0..<numHiddenLayers).compactMap { i -> (String, [String: Int])? in
                layerHeadDims[i] == headDim && layerKVHeads[i] == numKeyValueHeads ? nil
                    : (String(i), ["head_dim": layerHeadDims[i], "num_key_value_heads": layerKVHeads[i]])
            }), forKey: .perLayerConfig)
            try c.encodeIfPresent(hiddenSizePerLayerInput, forKey: .hiddenSizePerLayerInput)
            try c.encodeIfPresent(vocabSizePerLayerInput, forKey: .vocabSizePerLayerInput)
            try c.encodeIfPresent(numKvSharedLayers, forKey: .numKvSharedLayers)
            try c.encodeIfPresent(attentionKEqV, forKey: .attentionKEqV)
            try c.encodeIfPresent(useDoubleWideMlp, forKey: .useDoubleWideMlp)
            try c.encodeIfPresent(enableMoeBlock, forKey: .enableMoeBlock)
            try c.encodeIfPresent(numExperts, forKey: .numExperts)
            try c.encodeIfPresent(topKExperts, forKey: .topKExperts)
            try c.encodeIfPresent(moeIntermediateSize, forKey: .moeIntermediateSize)
        }
    }
}
