// Text-decoder configs of the released Gemma 4 checkpoints, for `gemma-node inspect --config
// NAME` (planning without downloading anything). Reconstructed from GEMMA_SPEC §1.3 and A2
// ("reported" values: layer counts, widths, head counts, windows, PLE, KV sharing, MoE sizes)
// and the Gemma4TextConfig class defaults (RoPE, eps, soft-cap, vocabulary); the vision and
// audio towers are left out. Verify against a real config.json before relying on a figure.
import Foundation

/// Named model configs shipped with the binary.
public enum ModelPresets {
    /// Preset names, accepted case-insensitively and without the "gemma-4-" prefix.
    public static let names: [String] = gemma3Presets.map(\.name) + ["gemma-4-e2b", "gemma-4-e4b", "gemma-4-31b", "gemma-4-26b-a4b"]

    /// The config of a preset; nil for an unknown name.
    public static func config(named name: String) throws -> GemmaConfig? {
        let key = name.lowercased()
        guard let json = presets.first(where: { $0.name == key || $0.name == "gemma-4-" + key })?.json else { return nil }
        return try JSONDecoder().decode(GemmaConfig.self, from: Data(json.utf8))
    }

    /// The config.json text of a preset (as it would be published, text_config only).
    public static func json(named name: String) -> String? {
        let key = name.lowercased()
        return presets.first(where: { $0.name == key || $0.name == "gemma-4-" + key })?.json
    }

    static let presets: [(name: String, json: String)] = gemma3Presets + [
        ("gemma-4-e2b", """
{
  "architectures": [
    "Gemma4ForConditionalGeneration"
  ],
  "model_type": "gemma4",
  "text_config": {
    "model_type": "gemma4_text",
    "vocab_size": 262144,
    "hidden_size": 1536,
    "intermediate_size": 6144,
    "num_hidden_layers": 35,
    "num_attention_heads": 8,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "global_head_dim": 512,
    "hidden_size_per_layer_input": 256,
    "vocab_size_per_layer_input": 262144,
    "num_kv_shared_layers": 20,
    "use_double_wide_mlp": true,
    "attention_k_eq_v": false,
    "sliding_window": 512,
    "max_position_embeddings": 131072,
    "layer_types": [
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention"
    ],
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-06,
    "final_logit_softcapping": 30.0,
    "tie_word_embeddings": true,
    "attention_bias": false,
    "attention_dropout": 0.0,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "rope_parameters": {
      "full_attention": {
        "partial_rotary_factor": 0.25,
        "rope_theta": 1000000.0,
        "rope_type": "proportional"
      },
      "sliding_attention": {
        "rope_theta": 10000.0,
        "rope_type": "default"
      }
    },
    "dtype": "bfloat16",
    "enable_moe_block": false,
    "num_experts": null,
    "top_k_experts": null,
    "moe_intermediate_size": null
  },
  "tie_word_embeddings": true,
  "eos_token_id": [
    1,
    106
  ],
  "dtype": "bfloat16"
}
"""),
        ("gemma-4-e4b", """
{
  "architectures": [
    "Gemma4ForConditionalGeneration"
  ],
  "model_type": "gemma4",
  "text_config": {
    "model_type": "gemma4_text",
    "vocab_size": 262144,
    "hidden_size": 2560,
    "intermediate_size": 10240,
    "num_hidden_layers": 42,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "global_head_dim": 512,
    "hidden_size_per_layer_input": 256,
    "vocab_size_per_layer_input": 262144,
    "num_kv_shared_layers": 18,
    "use_double_wide_mlp": false,
    "attention_k_eq_v": false,
    "sliding_window": 512,
    "max_position_embeddings": 131072,
    "layer_types": [
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention"
    ],
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-06,
    "final_logit_softcapping": 30.0,
    "tie_word_embeddings": true,
    "attention_bias": false,
    "attention_dropout": 0.0,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "rope_parameters": {
      "full_attention": {
        "partial_rotary_factor": 0.25,
        "rope_theta": 1000000.0,
        "rope_type": "proportional"
      },
      "sliding_attention": {
        "rope_theta": 10000.0,
        "rope_type": "default"
      }
    },
    "dtype": "bfloat16",
    "enable_moe_block": false,
    "num_experts": null,
    "top_k_experts": null,
    "moe_intermediate_size": null
  },
  "tie_word_embeddings": true,
  "eos_token_id": [
    1,
    106
  ],
  "dtype": "bfloat16"
}
"""),
        ("gemma-4-31b", """
{
  "architectures": [
    "Gemma4ForConditionalGeneration"
  ],
  "model_type": "gemma4",
  "text_config": {
    "model_type": "gemma4_text",
    "vocab_size": 262144,
    "hidden_size": 5376,
    "intermediate_size": 21504,
    "num_hidden_layers": 60,
    "num_attention_heads": 32,
    "num_key_value_heads": 16,
    "head_dim": 256,
    "global_head_dim": 512,
    "num_global_key_value_heads": 4,
    "hidden_size_per_layer_input": 0,
    "num_kv_shared_layers": 0,
    "use_double_wide_mlp": false,
    "attention_k_eq_v": true,
    "sliding_window": 1024,
    "max_position_embeddings": 262144,
    "layer_types": [
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention"
    ],
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-06,
    "final_logit_softcapping": 30.0,
    "tie_word_embeddings": true,
    "attention_bias": false,
    "attention_dropout": 0.0,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "rope_parameters": {
      "full_attention": {
        "partial_rotary_factor": 0.25,
        "rope_theta": 1000000.0,
        "rope_type": "proportional"
      },
      "sliding_attention": {
        "rope_theta": 10000.0,
        "rope_type": "default"
      }
    },
    "dtype": "bfloat16",
    "enable_moe_block": false,
    "num_experts": null,
    "top_k_experts": null,
    "moe_intermediate_size": null
  },
  "tie_word_embeddings": true,
  "eos_token_id": [
    1,
    106
  ],
  "dtype": "bfloat16"
}
"""),
        ("gemma-4-26b-a4b", """
{
  "architectures": [
    "Gemma4ForConditionalGeneration"
  ],
  "model_type": "gemma4",
  "text_config": {
    "model_type": "gemma4_text",
    "vocab_size": 262144,
    "hidden_size": 2816,
    "intermediate_size": 2112,
    "num_hidden_layers": 30,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 256,
    "global_head_dim": 512,
    "num_global_key_value_heads": 2,
    "hidden_size_per_layer_input": 0,
    "num_kv_shared_layers": 0,
    "use_double_wide_mlp": false,
    "attention_k_eq_v": true,
    "sliding_window": 1024,
    "max_position_embeddings": 262144,
    "enable_moe_block": true,
    "num_experts": 128,
    "top_k_experts": 8,
    "moe_intermediate_size": 704,
    "layer_types": [
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "sliding_attention",
      "full_attention"
    ],
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-06,
    "final_logit_softcapping": 30.0,
    "tie_word_embeddings": true,
    "attention_bias": false,
    "attention_dropout": 0.0,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "rope_parameters": {
      "full_attention": {
        "partial_rotary_factor": 0.25,
        "rope_theta": 1000000.0,
        "rope_type": "proportional"
      },
      "sliding_attention": {
        "rope_theta": 10000.0,
        "rope_type": "default"
      }
    },
    "dtype": "bfloat16"
  },
  "tie_word_embeddings": true,
  "eos_token_id": [
    1,
    106
  ],
  "dtype": "bfloat16"
}
"""),
    ]
}
