// Checks of a decoded config: `validate` refuses configs that cannot describe a model
// (non-positive sizes, layer counts that disagree, shapes RoPE or GQA cannot use) while
// decoding; `checkSupported` refuses, by name, features the forward pass does not run, before
// any weight is read.
import Foundation

/// A config that is valid JSON but not a model this engine can run.
public enum GemmaConfigError: Error, CustomStringConvertible, Equatable {
    case unknownModelType(String)
    case unsupported(String)
    case invalid(String)
    case unreadable(path: String, reason: String)

    public var description: String {
        switch self {
        case let .unknownModelType(t): return "model_type \"\(t)\" is not a Gemma text model (expected gemma, gemma2, gemma3, gemma3_text, gemma4, gemma4_text)"
        case let .unsupported(m): return m
        case let .invalid(m): return "invalid config: \(m)"
        case let .unreadable(p, r): return "cannot read \(p): \(r)"
        }
    }
}

extension GemmaConfig {
    func validate() throws {
        func positive(_ v: Int, _ name: String) throws {
            if v <= 0 { throw GemmaConfigError.invalid("\(name) must be positive, got \(v)") }
        }
        try positive(vocabSize, "vocab_size"); try positive(hiddenSize, "hidden_size")
        try positive(intermediateSize, "intermediate_size"); try positive(numHiddenLayers, "num_hidden_layers")
        try positive(numAttentionHeads, "num_attention_heads"); try positive(numKeyValueHeads, "num_key_value_heads")
        try positive(headDim, "head_dim"); try positive(maxPositionEmbeddings, "max_position_embeddings")
        if headDim % 2 != 0 { throw GemmaConfigError.invalid("head_dim must be even for RoPE, got \(headDim)") }
        if layerTypes.count != numHiddenLayers {
            throw GemmaConfigError.invalid("layer_types has \(layerTypes.count) entries for \(numHiddenLayers) layers")
        }
        if numAttentionHeads % numKeyValueHeads != 0 {
            throw GemmaConfigError.invalid("num_attention_heads \(numAttentionHeads) is not a multiple of num_key_value_heads \(numKeyValueHeads)")
        }
        if layerTypes.contains(.sliding), (slidingWindow ?? 0) <= 0 {
            throw GemmaConfigError.invalid("sliding layers need a positive sliding_window")
        }
        for i in 0..<numHiddenLayers {
            try positive(layerHeadDims[i], "head_dim of layer \(i)")
            try positive(layerKVHeads[i], "num_key_value_heads of layer \(i)")
            if layerHeadDims[i] % 2 != 0 { throw GemmaConfigError.invalid("head_dim of layer \(i) must be even for RoPE, got \(layerHeadDims[i])") }
            if numAttentionHeads % layerKVHeads[i] != 0 {
                throw GemmaConfigError.invalid("num_attention_heads \(numAttentionHeads) is not a multiple of layer \(i)'s \(layerKVHeads[i]) KV heads")
            }
        }
        // Layers of one type must agree on their shape: RoPE tables and KV sharing are per type.
        for t in Set(layerTypes) {
            let idx = layerTypes.indices.filter { layerTypes[$0] == t }
            if Set(idx.map { layerHeadDims[$0] }).count > 1 || Set(idx.map { layerKVHeads[$0] }).count > 1 {
                throw GemmaConfigError.invalid("\(t.rawValue) layers have different head_dim / num_key_value_heads (per_layer_config); this engine needs one shape per layer type")
            }
        }
        let shared = numKvSharedLayers ?? 0
        if shared < 0 || shared >= numHiddenLayers && shared > 0 {
            throw GemmaConfigError.invalid("num_kv_shared_layers \(shared) must be in 0 ..< num_hidden_layers (\(numHiddenLayers))")
        }
        if generation == .gemma4 && shared > 0 {
            let producerTypes = Set(layerTypes[0..<firstKVSharedLayer])
            if let missing = Set(layerTypes[firstKVSharedLayer...]).subtracting(producerTypes).first {
                throw GemmaConfigError.invalid("KV sharing: no layer below \(firstKVSharedLayer) has type \(missing.rawValue) to produce the K/V its consumers read")
            }
        }
        if let p = hiddenSizePerLayerInput, p > 0, (vocabSizePerLayerInput ?? 1) <= 0 {
            throw GemmaConfigError.invalid("vocab_size_per_layer_input must be positive when hidden_size_per_layer_input is set")
        }
        if enableMoeBlock == true {
            guard let e = numExperts, let k = topKExperts, let ie = moeIntermediateSize, e > 0, k > 0, k <= e, ie > 0 else {
                throw GemmaConfigError.invalid("enable_moe_block needs num_experts > 0, 0 < top_k_experts <= num_experts and moe_intermediate_size > 0")
            }
        }
    }

    /// Throws, naming the feature, when the forward pass cannot run this config: called
    /// before any weight is read.
    /// `planning`: only the split is computed (inspect), so a block the forward pass does not
    /// run yet (MoE) is not refused.
    public func checkSupported(planning: Bool = false) throws {
        if attentionBias { throw GemmaConfigError.unsupported("attention_bias = true is not supported (no released Gemma uses it)") }
        if hiddenActivation != "gelu_pytorch_tanh" {
            throw GemmaConfigError.unsupported("hidden activation \(hiddenActivation) is not supported (Gemma uses gelu_pytorch_tanh)")
        }
        for t in [LayerType.sliding, .full] where layerTypes.contains(t) {
            let kind = ropeParameters[t]?.ropeType ?? "default"
            let known = generation == .gemma4 ? ["default", "proportional"] : ["default", "linear"]
            if !known.contains(kind) {
                throw GemmaConfigError.unsupported("rope_type \"\(kind)\" (\(t.rawValue)) is not supported for \(modelType) (supported: \(known.joined(separator: ", ")))")
            }
        }
        guard generation == .gemma4 else { return }
        if let first = unknownFeatureKeys.first {
            throw GemmaConfigError.unsupported("Gemma 4 config key \"\(first)\" is not supported by this engine" +
                (unknownFeatureKeys.count > 1 ? " (also: \(unknownFeatureKeys.dropFirst().joined(separator: ", ")))" : ""))
        }
        if let first = unknownPerLayerKeys.first {
            throw GemmaConfigError.unsupported("per-layer override \"\(first)\" is not supported (only head_dim and num_key_value_heads)")
        }
        if let mode = useBidirectionalAttention, mode != "vision" {
            throw GemmaConfigError.unsupported("use_bidirectional_attention = \"\(mode)\" is not supported (causal text decoding only)")
        }
        if isMoE && !GemmaConfig.moeSupported && !planning {
            throw GemmaConfigError.unsupported("enable_moe_block (mixture of experts) is not supported yet")
        }
    }

    /// Whether the MoE block is wired into the forward pass.
    static let moeSupported = true
}
