// GGUF metadata (llama.cpp / Ollama files, Gemma 1-4) as the config.json dictionary
// `GemmaConfig(configDictionary:)` reads, so a GGUF file and a Hugging Face directory give the
// same `GemmaConfig`. Tensor names and shapes are checked against the same table
// (TensorTable.swift) by `GGUFWeightSource`. GEMMA_SPEC §4.3, §4.4, A1.1-A1.3.
//
// Facts a GGUF does not store, and the rule used (the one llama.cpp uses):
// - Norm weights already hold the multiplier (1 + w for Gemma 1-3; Gemma 4 stores it as is):
//   normAddsOne = false.
// - Sliding layers: `attention.sliding_window_pattern` is an int period (every p-th layer full)
//   or one bool per layer (true = sliding); absent: every 6th layer full (Gemma 3, Gemma 4).
//   Gemma 2 alternates (even layers sliding); Gemma 1 has none.
// Gemma 1-3:
// - query_pre_attn_scalar: head_dim, except the 27B size class (Gemma 2: 46 layers, Gemma 3: 62
//   layers) where it is hidden_size / num_heads.
// - `attention.head_count_kv` may be a per-layer array; it must then be one value.
// - Gemma 3 sliding-layer RoPE base: rope.freq_base_swa when present, else 10000.
// - Linear RoPE scaling applies to global layers only (as GemmaConfig does for config.json).
// Gemma 4:
// - per-layer shapes: `attention.key_length` is the full-layer head dim, `key_length_swa` the
//   sliding one; `attention.head_count_kv` is a scalar or a per-layer array (31B: 16 / 4). They are
//   written out as an explicit `per_layer_config` for the full layers (no global_* keys, so no
//   k_eq_v gating question);
// - `feed_forward_length`: scalar, or per-layer (double-wide MLP in the KV-shared layers);
// - K = V: the converter writes no `attn_v` for those layers, so the first full layer that owns
//   its K/V and has no `blk.N.attn_v.weight` sets `attention_k_eq_v`;
// - proportional RoPE: `rope_freqs.weight` holds 1.0 for the rotated pairs then 1e30 (angle 0);
//   the count of finite divisors gives partial_rotary_factor = 2n / head_dim (absent: 0.25, the
//   class default). No attention-scale key: Gemma 4 uses 1.0.
import Foundation
import GemmaFormats
import GemmaKernels

extension GemmaConfig {
    /// The architectures whose GGUF layout this loader maps.
    public static let ggufArchitectures = ["gemma", "gemma2", "gemma3", "gemma4"]

    /// The config of a GGUF file, from its metadata and tensor shapes.
    public init(gguf f: GGUFFile) throws {
        let arch = try f.string("general.architecture")
        guard Self.ggufArchitectures.contains(arch) else {
            throw ModelLoadError.unsupportedArchitecture(file: f.path, architecture: arch)
        }
        let reader = GGUFMetadata(file: f, arch: arch)
        let dict = arch == "gemma4" ? try reader.gemma4Dictionary() : try reader.gemma1To3Dictionary()
        do {
            self = try GemmaConfig(configDictionary: dict)
        } catch {
            throw ModelLoadError.badMetadata(file: f.path, reason: "\(error)")
        }
        normAddsOne = false
    }
}

/// Reads one GGUF file's `ARCH.*` keys into a config.json-shaped dictionary.
struct GGUFMetadata {
    let file: GGUFFile
    let arch: String

    func key(_ k: String) -> String { "\(arch).\(k)" }
    func bad(_ reason: String) -> ModelLoadError { ModelLoadError.badMetadata(file: file.path, reason: reason) }
    func optInt(_ k: String) throws -> Int? { file.value(key(k)) == nil ? nil : try file.int(key(k)) }
    func optDouble(_ k: String) throws -> Double? { file.value(key(k)) == nil ? nil : try file.float(key(k)) }

    /// A scalar or per-layer array key as one value per layer; nil when absent.
    func perLayer(_ k: String, layers: Int) throws -> [Int]? {
        guard let v = file.value(key(k)) else { return nil }
        if let one = v.intValue { return Array(repeating: one, count: layers) }
        let all = try file.intArray(key(k))
        guard all.count == layers else { throw bad("\(key(k)) has \(all.count) entries for \(layers) layers") }
        return all
    }

    /// `attention.sliding_window_pattern` as one flag per layer (true = sliding): an int period
    /// or a bool array; nil when absent.
    func slidingPattern(layers: Int) throws -> [Bool]? {
        guard let v = file.value(key("attention.sliding_window_pattern")) else { return nil }
        if let p = v.intValue { return (0..<layers).map { p > 0 && ($0 + 1) % p != 0 } }
        let flags = try file.boolArray(key("attention.sliding_window_pattern"))
        guard flags.count == layers else {
            throw bad("\(key("attention.sliding_window_pattern")) has \(flags.count) entries for \(layers) layers")
        }
        return flags
    }

    /// What every generation reads first: vocabulary (from the embedding's shape), widths.
    func basics() throws -> (vocab: Int, hidden: Int, layers: Int, heads: Int) {
        let embedding = try file.tensor("token_embd.weight")
        guard embedding.dims.count == 2 else { throw bad("token_embd.weight has \(embedding.dims.count) dimensions, expected 2") }
        return (embedding.dims[1], try file.int(key("embedding_length")), try file.int(key("block_count")), try file.int(key("attention.head_count")))
    }

    func checkPositive(hidden: Int, layers: Int, heads: Int) throws {
        guard heads > 0, layers > 0, hidden > 0 else { throw bad("block_count, embedding_length and attention.head_count must be positive") }
    }

    /// Keys every generation writes the same way (context length default and the attention
    /// soft-cap, which Gemma 4 does not have, per generation).
    func common(_ dict: inout [String: Any], contextLength: Int, attentionSoftcap: Bool) throws {
        dict["rms_norm_eps"] = try optDouble("attention.layer_norm_rms_epsilon") ?? 1e-6
        dict["max_position_embeddings"] = try optInt("context_length") ?? contextLength
        dict["hidden_activation"] = "gelu_pytorch_tanh"
        dict["tie_word_embeddings"] = !file.hasTensor("output.weight")
        // Absent soft-caps mean "off" in a GGUF (the converter writes them only when set).
        if attentionSoftcap { dict["attn_logit_softcapping"] = try optDouble("attn_logit_softcapping") ?? NSNull() }
        dict["final_logit_softcapping"] = try optDouble("final_logit_softcapping") ?? NSNull()
    }

    func tokenIds(_ dict: inout [String: Any]) throws {
        if file.value("tokenizer.ggml.bos_token_id") != nil { dict["bos_token_id"] = try file.int("tokenizer.ggml.bos_token_id") }
        if file.value("tokenizer.ggml.eos_token_id") != nil { dict["eos_token_id"] = try file.int("tokenizer.ggml.eos_token_id") }
    }

    static func layerTypes(_ sliding: [Bool]) -> [String] { sliding.map { $0 ? LayerType.sliding.rawValue : LayerType.full.rawValue } }

    // MARK: Gemma 1-3

    func gemma1To3Dictionary() throws -> [String: Any] {
        let (vocab, hidden, layers, heads) = try basics()
        // head_count_kv may be absent (= head_count) or, in some converters, a per-layer array.
        var kvHeads = heads
        if let v = file.value(key("attention.head_count_kv")) {
            if let one = v.intValue {
                kvHeads = one
            } else {
                let all = try file.intArray(key("attention.head_count_kv"))
                guard let first = all.first, all.allSatisfy({ $0 == first }) else {
                    throw bad("\(key("attention.head_count_kv")) differs between layers, which \(arch) does not do")
                }
                kvHeads = first
            }
        }
        try checkPositive(hidden: hidden, layers: layers, heads: heads)
        let headDim = try optInt("attention.key_length") ?? hidden / heads
        var dict: [String: Any] = [
            "model_type": arch,
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": try file.int(key("feed_forward_length")),
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kvHeads,
            "head_dim": headDim,
        ]
        try common(&dict, contextLength: 8192, attentionSoftcap: true)
        try tokenIds(&dict)

        let bigSizeClass = (arch == "gemma2" && layers == 46) || (arch == "gemma3" && layers == 62)
        dict["query_pre_attn_scalar"] = bigSizeClass ? Double(hidden / heads) : Double(headDim)

        let window = try optInt("attention.sliding_window")
        var sliding = [Bool](repeating: false, count: layers)
        switch arch {
        case "gemma2":
            sliding = (0..<layers).map { $0 % 2 == 0 }
        case "gemma3":
            if window != nil { sliding = try slidingPattern(layers: layers) ?? (0..<layers).map { ($0 + 1) % 6 != 0 } }
        default:
            break
        }
        if sliding.contains(true) {
            guard let window, window > 0 else {
                throw bad("\(key("attention.sliding_window")) is missing but \(arch) has sliding-window layers")
            }
            dict["sliding_window"] = window
        }
        dict["layer_types"] = Self.layerTypes(sliding)

        // RoPE: one base for Gemma 1/2, global + local bases for Gemma 3.
        let theta = try optDouble("rope.freq_base") ?? 10000
        var full: [String: Any] = ["rope_type": "default", "rope_theta": theta]
        if file.value(key("rope.scaling.type")) != nil, try file.string(key("rope.scaling.type")) == "linear",
           let factor = try optDouble("rope.scaling.factor"), factor != 1 {
            full["rope_type"] = "linear"
            full["factor"] = factor
        }
        let local: [String: Any] = arch == "gemma3"
            ? ["rope_type": "default", "rope_theta": try optDouble("rope.freq_base_swa") ?? 10000]
            : full
        dict["rope_parameters"] = [LayerType.full.rawValue: full, LayerType.sliding.rawValue: local]
        return dict
    }

    // MARK: Gemma 4

    func gemma4Dictionary() throws -> [String: Any] {
        let (vocab, hidden, layers, heads) = try basics()
        try checkPositive(hidden: hidden, layers: layers, heads: heads)
        let kv = try perLayer("attention.head_count_kv", layers: layers) ?? Array(repeating: heads, count: layers)
        guard let ffn = try perLayer("feed_forward_length", layers: layers) else { throw bad("\(key("feed_forward_length")) is missing") }

        let sliding = try slidingPattern(layers: layers) ?? (0..<layers).map { ($0 + 1) % 6 != 0 }
        guard let full = sliding.firstIndex(of: false) else { throw bad("no full-attention layer (gemma4's last layer is always one)") }
        let fullDim = try optInt("attention.key_length") ?? 512
        let slidingDim = try optInt("attention.key_length_swa") ?? fullDim
        let slidingIndex = sliding.firstIndex(of: true)
        let shared = try optInt("attention.shared_kv_layers") ?? 0
        let firstShared = layers - shared

        var dict: [String: Any] = [
            "model_type": "gemma4_text",
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": ffn[0],
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": slidingIndex.map { kv[$0] } ?? kv[full],
            "head_dim": slidingDim,
            "layer_types": Self.layerTypes(sliding),
            "num_kv_shared_layers": shared,
        ]
        try common(&dict, contextLength: 131072, attentionSoftcap: false)
        if let w = try optInt("attention.sliding_window") { dict["sliding_window"] = w }
        try tokenIds(&dict)
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
            dict["attention_k_eq_v"] = !file.hasTensor("blk.\(producer).attn_v.weight")
        }
        let p = try optInt("embedding_length_per_layer_input") ?? 0
        dict["hidden_size_per_layer_input"] = p
        if p > 0 {
            let table = try file.tensor("per_layer_token_embd.weight")
            guard table.dims.count == 2 else { throw bad("per_layer_token_embd.weight must be 2-D") }
            dict["vocab_size_per_layer_input"] = table.dims[1]
        }
        if let experts = try optInt("expert_count"), experts > 0 {
            dict["enable_moe_block"] = true
            dict["num_experts"] = experts
            dict["top_k_experts"] = try file.int(key("expert_used_count"))
            dict["moe_intermediate_size"] = try file.int(key("expert_feed_forward_length"))
        }

        // RoPE: proportional on full layers, the rotated fraction read off rope_freqs.
        var partial = 0.25
        if file.hasTensor("rope_freqs.weight") {
            let t = try file.tensor("rope_freqs.weight")
            guard try file.weightType(of: t) == .f32, t.elementCount == fullDim / 2 else {
                throw bad("rope_freqs.weight must be \(fullDim / 2) f32 values (one per full-layer frequency pair)")
            }
            let bytes = try file.data(of: t)
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
}
