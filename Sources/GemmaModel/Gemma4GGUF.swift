// Gemma 4 GGUF metadata (llama.cpp's converter, GEMMA_SPEC §4.4, A1.3) as the config.json
// dictionary `GemmaConfig(configDictionary:)` reads. Facts and the rule used for each:
// - per-layer shapes: `attention.key_length` is the full-layer head dim, `key_length_swa` the
//   sliding one; `attention.head_count_kv` is a scalar or a per-layer array (31B: 16 / 4). They are
//   written out as an explicit `per_layer_config` for the full layers (no global_* keys, so no
//   k_eq_v gating question);
// - `attention.sliding_window_pattern`: one bool per layer, true = sliding;
// - `feed_forward_length`: scalar, or per-layer (double-wide MLP in the KV-shared layers);
// - K = V: the converter writes no `attn_v` for those layers, so the first full layer that owns
//   its K/V and has no `blk.N.attn_v.weight` sets `attention_k_eq_v`;
// - proportional RoPE: `rope_freqs.weight` holds 1.0 for the rotated pairs then 1e30 (angle 0);
//   the count of finite divisors gives partial_rotary_factor = 2n / head_dim (absent: 0.25, the
//   class default). No attention-scale key: Gemma 4 uses 1.0.
// - Norms are stored as the multiplier (no + 1 for Gemma 4): normAddsOne = false.
import Foundation
import GemmaFormats
import GemmaKernels

extension GemmaConfig {
    /// The config.json-shaped dictionary of a `general.architecture = gemma4` file.
    static func gemma4Dictionary(gguf f: GGUFFile) throws -> [String: Any] {
        let arch = "gemma4"
        func key(_ k: String) -> String { "\(arch).\(k)" }
        func bad(_ reason: String) -> ModelLoadError { ModelLoadError.badMetadata(file: f.path, reason: reason) }
        func optInt(_ k: String) throws -> Int? { f.value(key(k)) == nil ? nil : try f.int(key(k)) }
        func optDouble(_ k: String) throws -> Double? { f.value(key(k)) == nil ? nil : try f.float(key(k)) }
        /// A scalar or per-layer array key as one value per layer.
        func perLayer(_ k: String, layers: Int) throws -> [Int]? {
            guard let v = f.value(key(k)) else { return nil }
            if let one = v.intValue { return Array(repeating: one, count: layers) }
            let all = try f.intArray(key(k))
            guard all.count == layers else { throw bad("\(key(k)) has \(all.count) entries for \(layers) layers") }
            return all
        }

        let embedding = try f.tensor("token_embd.weight")
        guard embedding.dims.count == 2 else { throw bad("token_embd.weight has \(embedding.dims.count) dimensions, expected 2") }
        let hidden = try f.int(key("embedding_length"))
        let layers = try f.int(key("block_count"))
        let heads = try f.int(key("attention.head_count"))
        guard heads > 0, layers > 0, hidden > 0 else { throw bad("block_count, embedding_length and attention.head_count must be positive") }
        let kv = try perLayer("attention.head_count_kv", layers: layers) ?? Array(repeating: heads, count: layers)
        guard let ffn = try perLayer("feed_forward_length", layers: layers) else { throw bad("\(key("feed_forward_length")) is missing") }

        // Layer types: per-layer bool array (true = sliding), or an int period.
        var sliding = (0..<layers).map { ($0 + 1) % 6 != 0 }
        if let v = f.value(key("attention.sliding_window_pattern")) {
            if let p = v.intValue {
                sliding = (0..<layers).map { p > 0 && ($0 + 1) % p != 0 }
            } else {
                sliding = try f.boolArray(key("attention.sliding_window_pattern"))
                guard sliding.count == layers else { throw bad("\(key("attention.sliding_window_pattern")) has \(sliding.count) entries for \(layers) layers") }
            }
        }
        guard let full = sliding.firstIndex(of: false) else { throw bad("no full-attention layer (gemma4's last layer is always one)") }
        let fullDim = try optInt("attention.key_length") ?? 512
        let slidingDim = try optInt("attention.key_length_swa") ?? fullDim
        let slidingIndex = sliding.firstIndex(of: true)
        let shared = try optInt("attention.shared_kv_layers") ?? 0
        let firstShared = layers - shared

        var dict: [String: Any] = [
            "model_type": "gemma4_text",
            "vocab_size": embedding.dims[1],
            "hidden_size": hidden,
            "intermediate_size": ffn[0],
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": slidingIndex.map { kv[$0] } ?? kv[full],
            "head_dim": slidingDim,
            "rms_norm_eps": try optDouble("attention.layer_norm_rms_epsilon") ?? 1e-6,
            "max_position_embeddings": try optInt("context_length") ?? 131072,
            "hidden_activation": "gelu_pytorch_tanh",
            "tie_word_embeddings": !f.hasTensor("output.weight"),
            "final_logit_softcapping": try optDouble("final_logit_softcapping") ?? NSNull(),
            "layer_types": sliding.map { $0 ? LayerType.sliding.rawValue : LayerType.full.rawValue },
            "num_kv_shared_layers": shared,
        ]
        if let w = try optInt("attention.sliding_window") { dict["sliding_window"] = w }
        if f.value("tokenizer.ggml.bos_token_id") != nil { dict["bos_token_id"] = try f.int("tokenizer.ggml.bos_token_id") }
        if f.value("tokenizer.ggml.eos_token_id") != nil { dict["eos_token_id"] = try f.int("tokenizer.ggml.eos_token_id") }
        var overrides: [String: Any] = [:]
        for i in 0..<layers where !sliding[i] { overrides[String(i)] = ["head_dim": fullDim, "num_key_value_heads": kv[i]] }
        dict["per_layer_config"] = overrides

        // Double-wide MLP: the KV-shared layers' width is twice the others'.
        if shared > 0, firstShared > 0, ffn[firstShared...].allSatisfy({ $0 == 2 * ffn[0] }), ffn[..<firstShared].allSatisfy({ $0 == ffn[0] }) {
            dict["use_double_wide_mlp"] = true
        } else if Set(ffn).count > 1 {
            throw bad("\(key("feed_forward_length")) varies between layers in a way Gemma 4 does not (only KV-shared layers may be twice as wide)")
        }
        if let producer = (0..<min(firstShared, layers)).first(where: { !sliding[$0] }) {
            dict["attention_k_eq_v"] = !f.hasTensor("blk.\(producer).attn_v.weight")
        }
        let p = try optInt("embedding_length_per_layer_input") ?? 0
        dict["hidden_size_per_layer_input"] = p
        if p > 0 {
            let table = try f.tensor("per_layer_token_embd.weight")
            guard table.dims.count == 2 else { throw bad("per_layer_token_embd.weight must be 2-D") }
            dict["vocab_size_per_layer_input"] = table.dims[1]
        }
        if let experts = try optInt("expert_count"), experts > 0 {
            dict["enable_moe_block"] = true
            dict["num_experts"] = experts
            dict["top_k_experts"] = try f.int(key("expert_used_count"))
            dict["moe_intermediate_size"] = try f.int(key("expert_feed_forward_length"))
        }

        // RoPE: proportional on full layers, the rotated fraction read off rope_freqs.
        var partial = 0.25
        if f.hasTensor("rope_freqs.weight") {
            let t = try f.tensor("rope_freqs.weight")
            guard try f.weightType(of: t) == .f32, t.elementCount == fullDim / 2 else {
                throw bad("rope_freqs.weight must be \(fullDim / 2) f32 values (one per full-layer frequency pair)")
            }
            let bytes = try f.data(of: t)
            let divisors = (0..<t.elementCount).map { bytes.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
            let rotated = divisors.prefix { $0 == 1 }.count
            guard divisors.dropFirst(rotated).allSatisfy({ $0 >= 1e20 }) else {
                throw bad("rope_freqs.weight is not 1.0 x n then 1e30 (not Gemma 4's proportional RoPE)")
            }
            partial = Double(2 * rotated) / Double(fullDim)
        }
        dict["rope_parameters"] = [
            LayerType.full.rawValue: ["rope_type": "proportional", "rope_theta": try optDouble("rope.freq_base") ?? 1_000_000,
                                      "partial_rotary_factor": partial] as [String: Any],
            LayerType.sliding.rawValue: ["rope_type": "default", "rope_theta": try optDouble("rope.freq_base_swa") ?? 10_000] as [String: Any],
        ]
        return dict
    }

    /// GGUF tensors of a gemma4 file that are not weights of the table: `rope_freqs` (its
    /// content is in the config), and k/v of KV-shared layers (unused, like transformers).
    static func gemma4IgnorableGGUFTensor(_ name: String, config c: GemmaConfig) -> Bool {
        if name == "rope_freqs.weight" { return true }
        guard c.firstKVSharedLayer < c.numHiddenLayers else { return false }
        for l in c.firstKVSharedLayer..<c.numHiddenLayers {
            if ["attn_k.weight", "attn_v.weight", "attn_k_norm.weight"].contains(where: { name == "blk.\(l).\($0)" }) { return true }
        }
        return false
    }
}
