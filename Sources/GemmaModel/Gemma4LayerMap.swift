// Gemma 4's per-layer structure (uniform or absent for Gemma 1-3): head dim and KV heads per
// layer (`per_layer_config`, or global_head_dim / num_global_key_value_heads on full layers),
// which layers reuse another layer's K/V cache, which have v_proj, double-wide MLPs, PLE width,
// and the per-layer shapes `ShardPlan` splits. GEMMA_SPEC §1.2, §3.4.4.
import Foundation
import GemmaParallel

extension GemmaConfig {
    /// One entry of Gemma 4's `per_layer_config`.
    struct LayerOverride: Decodable {
        var headDim: Int?
        var numKeyValueHeads: Int?
        var otherKeys: [String]
        struct AnyKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init?(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { return nil }
        }
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: AnyKey.self)
            var other: [String] = []
            for key in c.allKeys {
                switch key.stringValue {
                case "head_dim": headDim = try c.decodeIfPresent(Int.self, forKey: key)
                case "num_key_value_heads": numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: key)
                default: other.append(key.stringValue)
                }
            }
            otherKeys = other.sorted()
        }
    }

    /// Per-layer attention shapes (Gemma4TextConfig.__post_init__): from `per_layer_config`
    /// when the config has one, else global_head_dim (and, with attention_k_eq_v,
    /// num_global_key_value_heads) on full layers. Called while decoding, after the uniform
    /// shapes are set.
    mutating func resolveGemma4LayerShapes(overrides: [String: LayerOverride]?) throws {
        if let overrides {
            for (key, o) in overrides {
                guard let i = Int(key), i >= 0, i < numHiddenLayers else {
                    throw GemmaConfigError.invalid("per_layer_config has an entry for layer \"\(key)\" of \(numHiddenLayers) layers")
                }
                if let hd = o.headDim { layerHeadDims[i] = hd }
                if let kv = o.numKeyValueHeads { layerKVHeads[i] = kv }
                unknownPerLayerKeys += o.otherKeys.map { "per_layer_config[\(i)].\($0)" }
            }
            unknownPerLayerKeys.sort()
        } else {
            let globalDim = globalHeadDim ?? 512
            let globalKV = attentionKEqV == true ? numGlobalKeyValueHeads : nil
            for i in 0..<numHiddenLayers where layerTypes[i] == .full {
                layerHeadDims[i] = globalDim
                if let globalKV { layerKVHeads[i] = globalKV }
            }
        }
    }

    /// First layer that reuses an earlier layer's K/V (= L when nothing is shared).
    public var firstKVSharedLayer: Int {
        generation == .gemma4 ? numHiddenLayers - (numKvSharedLayers ?? 0) : numHiddenLayers
    }

    /// The layer whose K/V cache layer `i` reads: itself, or for a KV consumer the last
    /// non-consumer layer of the same type (GEMMA_SPEC §3.4.4; not a one-to-one mapping).
    public func kvSourceLayer(_ i: Int) -> Int {
        let first = firstKVSharedLayer
        guard i >= first else { return i }
        return (0..<first).last { layerTypes[$0] == layerTypes[i] } ?? i
    }

    /// Whether layer `i` has its own k_proj (false for KV consumers).
    public func hasOwnKV(_ i: Int) -> Bool { kvSourceLayer(i) == i }

    /// Whether layer `i` has a v_proj (false for consumers and for full layers with attention_k_eq_v).
    public func hasVProj(_ i: Int) -> Bool {
        hasOwnKV(i) && !(attentionKEqV == true && layerTypes[i] == .full && generation == .gemma4)
    }

    /// Dense MLP width of layer `i`: doubled in KV-consumer layers with use_double_wide_mlp.
    public func intermediateSize(layer i: Int) -> Int {
        useDoubleWideMlp == true && generation == .gemma4 && i >= firstKVSharedLayer ? 2 * intermediateSize : intermediateSize
    }

    /// Per-layer embedding width P (0 = no PLE).
    public var perLayerInputSize: Int { generation == .gemma4 ? max(0, hiddenSizePerLayerInput ?? 0) : 0 }

    /// Rows of the PLE table.
    public var perLayerVocabSize: Int { vocabSizePerLayerInput ?? vocabSize }

    /// Head dim of the layers of one type (validated to be one value per type).
    public func headDim(for type: LayerType) -> Int {
        layerTypes.firstIndex(of: type).map { layerHeadDims[$0] } ?? headDim
    }

    /// Per-layer shapes for `ShardPlan` (per-layer head dims, KV heads and MLP widths).
    public var layerDims: [LayerDims] {
        (0..<numHiddenLayers).map {
            LayerDims(numHeads: numAttentionHeads, numKVHeads: layerKVHeads[$0], headDim: layerHeadDims[$0],
                      intermediateSize: intermediateSize(layer: $0))
        }
    }

    public var isMoE: Bool { generation == .gemma4 && enableMoeBlock == true }
    /// Fraction of the expert weights one token reads: top_k_experts / num_experts (1 without
    /// experts). The planner's decode read bytes and bench's roofline both use it.
    public var activeExpertFraction: Double { Double(topKExperts ?? 1) / Double(max(numExperts ?? 1, 1)) }
}
