// Text-decoder configs of released checkpoints, for `gemma-node inspect --config NAME`
// (planning without downloading anything). Each preset is a small factory: the sizes that
// differ between checkpoints plus a layer pattern, written out as the text_config a published
// config.json holds and decoded by `GemmaConfig` like any other (so class defaults and
// per-layer shapes resolve the same way). Tests/Fixtures/presets/NAME.json pins each result.
//
// Gemma 4 figures are reconstructed from GEMMA_SPEC §1.3 and A2 ("reported" values: layer
// counts, widths, head counts, windows, PLE, KV sharing, MoE sizes) and the Gemma4TextConfig
// class defaults (RoPE, eps, soft-cap, vocabulary); the vision and audio towers are left out.
// Verify against a real config.json before relying on a figure.
import Foundation

/// Named model configs shipped with the binary.
public enum ModelPresets {
    /// One named config.
    public struct Preset: Sendable {
        public let name: String
        /// The config.json object (Gemma 4: the text_config nested as published).
        let make: @Sendable () -> [String: Any]
    }

    /// Every preset, in the order `names` lists them.
    static let all: [Preset] = gemma3Presets + gemma4Presets

    /// Preset names, accepted case-insensitively and without the "gemma-4-" prefix.
    public static var names: [String] { all.map(\.name) }

    /// The preset a user's spelling names: case-insensitive, "gemma-4-" may be left out.
    static func preset(named name: String) -> Preset? {
        let key = name.lowercased()
        return all.first { $0.name == key || $0.name == "gemma-4-" + key }
    }

    /// The canonical name of a preset; nil for an unknown name.
    public static func canonicalName(_ name: String) -> String? { preset(named: name)?.name }

    /// The config of a preset; nil for an unknown name.
    public static func config(named name: String) throws -> GemmaConfig? {
        guard let d = dictionary(named: name) else { return nil }
        return try GemmaConfig(configDictionary: d)
    }

    /// The config.json object of a preset, for callers that change a field before decoding
    /// (`synth --layers`); nil for an unknown name.
    public static func dictionary(named name: String) -> [String: Any]? { preset(named: name)?.make() }

    /// Attention kinds of consecutive layers: `sliding` sliding-window layers then `full`
    /// full-attention layers, repeated for as many layers as the model has.
    public struct LayerPattern: Sendable {
        public let sliding: Int, full: Int

        public init(sliding: Int, full: Int) {
            self.sliding = sliding
            self.full = full
        }

        /// `layer_types` of `layers` layers.
        public func layerTypes(layers: Int) -> [LayerType] {
            let period = [LayerType](repeating: .sliding, count: sliding) + [LayerType](repeating: .full, count: full)
            return (0..<layers).map { period[$0 % period.count] }
        }
    }

    /// The text-decoder fields every Gemma preset shares (sizes, vocabulary 262144, tanh GELU,
    /// eps 1e-6, tied embeddings, no attention bias, BOS 2, PAD 0); each family adds its own.
    static func textDecoder(hidden: Int, intermediate: Int, layers: Int, heads: Int, kvHeads: Int) -> [String: Any] {
        [
            "vocab_size": 262144,
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kvHeads,
            "hidden_activation": "gelu_pytorch_tanh",
            "rms_norm_eps": 1e-06,
            "tie_word_embeddings": true,
            "attention_bias": false,
            "bos_token_id": 2,
            "pad_token_id": 0,
        ]
    }

    // MARK: Gemma 4

    /// MoE block sizes of a Gemma 4 preset.
    struct Gemma4MoE {
        let experts: Int, topK: Int, width: Int
    }

    static let gemma4Presets: [Preset] = [
        Preset(name: "gemma-4-e2b") {
            gemma4Config(hidden: 1536, intermediate: 6144, layers: 35, heads: 8, kvHeads: 1, pattern: LayerPattern(sliding: 4, full: 1),
                       perLayerInput: 256, kvSharedLayers: 20, doubleWideMLP: true, window: 512, context: 131072)
        },
        Preset(name: "gemma-4-e4b") {
            gemma4Config(hidden: 2560, intermediate: 10240, layers: 42, heads: 8, kvHeads: 2, pattern: LayerPattern(sliding: 5, full: 1),
                       perLayerInput: 256, kvSharedLayers: 18, window: 512, context: 131072)
        },
        Preset(name: "gemma-4-31b") {
            gemma4Config(hidden: 5376, intermediate: 21504, layers: 60, heads: 32, kvHeads: 16, pattern: LayerPattern(sliding: 5, full: 1),
                       globalKVHeads: 4, kEqV: true, window: 1024, context: 262144)
        },
        Preset(name: "gemma-4-26b-a4b") {
            gemma4Config(hidden: 2816, intermediate: 2112, layers: 30, heads: 16, kvHeads: 8, pattern: LayerPattern(sliding: 5, full: 1),
                       globalKVHeads: 2, kEqV: true, window: 1024, context: 262144, moe: Gemma4MoE(experts: 128, topK: 8, width: 704))
        },
    ]

    /// A Gemma 4 text decoder: head dims 256 (sliding) / 512 (full), vocabulary 262144,
    /// proportional RoPE on full layers, final soft-cap 30, tied embeddings.
    static func gemma4Config(hidden: Int, intermediate: Int, layers: Int, heads: Int, kvHeads: Int, pattern: LayerPattern,
                       globalKVHeads: Int? = nil, perLayerInput: Int = 0, kvSharedLayers: Int = 0, doubleWideMLP: Bool = false,
                       kEqV: Bool = false, window: Int, context: Int, moe: Gemma4MoE? = nil) -> [String: Any] {
        var text = textDecoder(hidden: hidden, intermediate: intermediate, layers: layers, heads: heads, kvHeads: kvHeads)
        text.merge([
            "model_type": "gemma4_text",
            "head_dim": 256,
            "global_head_dim": 512,
            "hidden_size_per_layer_input": perLayerInput,
            "num_kv_shared_layers": kvSharedLayers,
            "use_double_wide_mlp": doubleWideMLP,
            "attention_k_eq_v": kEqV,
            "sliding_window": window,
            "max_position_embeddings": context,
            "layer_types": pattern.layerTypes(layers: layers).map(\.rawValue),
            "final_logit_softcapping": 30.0,
            "eos_token_id": 1,
            "rope_parameters": [
                LayerType.full.rawValue: ["partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"] as [String: Any],
                LayerType.sliding.rawValue: ["rope_theta": 10000.0, "rope_type": "default"] as [String: Any],
            ],
            "enable_moe_block": moe != nil,
        ] as [String: Any]) { _, new in new }
        if let globalKVHeads { text["num_global_key_value_heads"] = globalKVHeads }
        if perLayerInput > 0 { text["vocab_size_per_layer_input"] = 262144 }
        if let moe {
            text["num_experts"] = moe.experts
            text["top_k_experts"] = moe.topK
            text["moe_intermediate_size"] = moe.width
        }
        return [
            "architectures": ["Gemma4ForConditionalGeneration"],
            "model_type": "gemma4",
            "text_config": text,
            "tie_word_embeddings": true,
            "eos_token_id": [1, 106],
        ]
    }
}
