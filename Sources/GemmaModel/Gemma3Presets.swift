// Text-decoder configs of the released Gemma 3 checkpoints (1B, 4B, 12B, 27B), for `inspect
// --config NAME` and `synth --config NAME`. Values from GEMMA_SPEC §1.3 ("reported": widths,
// layer counts, head counts, windows, query_pre_attn_scalar) and the Gemma3TextConfig class
// defaults (pattern 6, RoPE 10000 local / 1e6 global, linear x8 on global layers of 4B and
// up, eps 1e-6). The vocabulary is 262144, the size of the released tokenizer and of the
// GGUF files llama.cpp's converter writes (the 4B+ multimodal configs say 262208: their last
// 64 rows are image tokens the text decoder never samples). Verify against a real
// config.json before relying on a figure.
import Foundation

extension ModelPresets {
    // MARK: Gemma 3

    /// The Gemma 3 presets, in the spelling a text-only export's config.json uses.
    static let gemma3Presets: [Preset] = [
        Preset(name: "gemma-3-1b") {
            gemma3Config(hidden: 1152, intermediate: 6912, layers: 26, heads: 4, kvHeads: 1, headDim: 256,
                         queryPreAttnScalar: 256, window: 512, maxPosition: 32768, linearRopeFactor: nil)
        },
        Preset(name: "gemma-3-4b") {
            gemma3Config(hidden: 2560, intermediate: 10240, layers: 34, heads: 8, kvHeads: 4, headDim: 256,
                         queryPreAttnScalar: 256, window: 1024, maxPosition: 131072, linearRopeFactor: 8)
        },
        Preset(name: "gemma-3-12b") {
            gemma3Config(hidden: 3840, intermediate: 15360, layers: 48, heads: 16, kvHeads: 8, headDim: 256,
                         queryPreAttnScalar: 256, window: 1024, maxPosition: 131072, linearRopeFactor: 8)
        },
        // 27B: head_dim 128 but query_pre_attn_scalar = hidden / heads = 168.
        Preset(name: "gemma-3-27b") {
            gemma3Config(hidden: 5376, intermediate: 21504, layers: 62, heads: 32, kvHeads: 16, headDim: 128,
                         queryPreAttnScalar: 168, window: 1024, maxPosition: 131072, linearRopeFactor: 8)
        },
    ]

    /// A Gemma 3 text decoder: sliding pattern 5 local + 1 global, RoPE 10000 local / 1e6
    /// global (linear scaling on global layers where given), vocabulary 262144, tied embeddings.
    static func gemma3Config(hidden: Int, intermediate: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int,
                             queryPreAttnScalar: Int, window: Int, maxPosition: Int, linearRopeFactor: Int?) -> [String: Any] {
        var c = textDecoder(hidden: hidden, intermediate: intermediate, layers: layers, heads: heads, kvHeads: kvHeads)
        c.merge([
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "head_dim": headDim,
            "query_pre_attn_scalar": queryPreAttnScalar,
            "sliding_window": window,
            "sliding_window_pattern": 6,
            "max_position_embeddings": maxPosition,
            "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0,
            "eos_token_id": [1, 106],
        ] as [String: Any]) { _, new in new }
        if let linearRopeFactor { c["rope_scaling"] = ["rope_type": "linear", "factor": Double(linearRopeFactor)] as [String: Any] }
        return c
    }
}
