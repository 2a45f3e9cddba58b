// The one table of checkpoint tensor names (Hugging Face safetensors, Gemma 1-4): logical
// tensor -> name after the prefix, expected shape, how it is split across ranks. The loader
// checks every file against it: missing, unexpected and wrongly shaped tensors are errors
// naming the tensor. GGUF names are to map onto the same `LogicalTensor` cases.

/// A weight of the decoder, independent of any file format.
public enum LogicalTensor: Hashable, Sendable {
    case embedTokens, finalNorm, lmHead
    case inputNorm(Int), postAttentionNorm(Int), preFeedforwardNorm(Int), postFeedforwardNorm(Int)
    case qProj(Int), kProj(Int), vProj(Int), oProj(Int), qNorm(Int), kNorm(Int)
    case gateProj(Int), upProj(Int), downProj(Int)
    // Gemma 4: per-layer embeddings (PLE), layer scalar, MoE block.
    case perLayerEmbedding, perLayerModelProjection, perLayerProjectionNorm
    case perLayerInputGate(Int), perLayerProjection(Int), postPerLayerInputNorm(Int), layerScalar(Int)
    case routerProj(Int), routerScale(Int), routerPerExpertScale(Int), expertsGateUp(Int), expertsDown(Int)
    case preFeedforwardNorm2(Int), postFeedforwardNorm1(Int), postFeedforwardNorm2(Int)
}

/// How a tensor is divided across ranks (GEMMA_SPEC §5).
public enum TensorSplit: Sendable, Equatable {
    case replicated
    /// Rows split: by query heads, by KV heads, by MLP columns, by vocabulary.
    case rowsByQueryHeads, rowsByKVHeads, rowsByMLP, rowsByVocab
    /// Columns split: o_proj by query heads, down_proj by MLP columns.
    case colsByQueryHeads, colsByMLP
    /// Gemma 4 PLE table [V_ple, L·P]: rows split by its own vocabulary.
    case rowsByPLEVocab
    /// Gemma 4 expert tensors [E, ·, ·]: split by the MoE block's strategy (1/R per rank).
    case experts
}

/// One row of the table.
public struct TensorSpec: Sendable {
    public let tensor: LogicalTensor
    /// Name without the model prefix, e.g. `layers.3.self_attn.q_proj.weight`.
    public let name: String
    /// PyTorch shape [out, in] (or [n] for norms).
    public let shape: [Int]
    public let split: TensorSplit
}

/// Errors of matching a checkpoint against the table.
public enum TensorTableError: Error, CustomStringConvertible, Equatable {
    case missing(String)
    case unexpected(String)
    case wrongShape(name: String, expected: [Int], got: [Int])

    public var description: String {
        switch self {
        case let .missing(n): return "tensor \(n) is missing from the checkpoint"
        case let .unexpected(n): return "unexpected tensor \(n) in the checkpoint (not part of a Gemma text decoder)"
        case let .wrongShape(n, e, g): return "tensor \(n) has shape \(g), expected \(e)"
        }
    }
}

public enum TensorNames {
    /// Prefixes of the text decoder, tried in this order (GEMMA_SPEC §4.1).
    public static let decoderPrefixes = ["model.language_model.", "language_model.model.", "model."]
    /// Tensors of other towers in multimodal checkpoints, skipped by rule.
    public static let skippedPrefixes = ["vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.",
                                         "model.audio_tower.", "model.embed_vision.", "model.embed_audio.", "audio_tower.", "embed_vision.", "embed_audio."]
    /// Names of a separate LM head (used if present, else tied).
    public static let lmHeadNames = ["lm_head.weight", "language_model.lm_head.weight"]

    /// The table for a config: every tensor a Gemma 1-4 checkpoint holds, with shapes.
    public static func table(for c: GemmaConfig) -> [TensorSpec] {
        if c.generation == .gemma4 { return gemma4Table(for: c) }
        let h = c.hiddenSize, d = c.headDim, i = c.intermediateSize
        var t: [TensorSpec] = [
            TensorSpec(tensor: .embedTokens, name: "embed_tokens.weight", shape: [c.vocabSize, h], split: .rowsByVocab),
            TensorSpec(tensor: .finalNorm, name: "norm.weight", shape: [h], split: .replicated),
        ]
        for l in 0..<c.numHiddenLayers {
            let p = "layers.\(l)."
            t.append(TensorSpec(tensor: .inputNorm(l), name: p + "input_layernorm.weight", shape: [h], split: .replicated))
            t.append(TensorSpec(tensor: .postAttentionNorm(l), name: p + "post_attention_layernorm.weight", shape: [h], split: .replicated))
            if c.hasPostNorms {
                t.append(TensorSpec(tensor: .preFeedforwardNorm(l), name: p + "pre_feedforward_layernorm.weight", shape: [h], split: .replicated))
                t.append(TensorSpec(tensor: .postFeedforwardNorm(l), name: p + "post_feedforward_layernorm.weight", shape: [h], split: .replicated))
            }
            t.append(TensorSpec(tensor: .qProj(l), name: p + "self_attn.q_proj.weight", shape: [c.numAttentionHeads * d, h], split: .rowsByQueryHeads))
            t.append(TensorSpec(tensor: .kProj(l), name: p + "self_attn.k_proj.weight", shape: [c.numKeyValueHeads * d, h], split: .rowsByKVHeads))
            t.append(TensorSpec(tensor: .vProj(l), name: p + "self_attn.v_proj.weight", shape: [c.numKeyValueHeads * d, h], split: .rowsByKVHeads))
            t.append(TensorSpec(tensor: .oProj(l), name: p + "self_attn.o_proj.weight", shape: [h, c.numAttentionHeads * d], split: .colsByQueryHeads))
            if c.hasQKNorm {
                t.append(TensorSpec(tensor: .qNorm(l), name: p + "self_attn.q_norm.weight", shape: [d], split: .replicated))
                t.append(TensorSpec(tensor: .kNorm(l), name: p + "self_attn.k_norm.weight", shape: [d], split: .replicated))
            }
            t.append(TensorSpec(tensor: .gateProj(l), name: p + "mlp.gate_proj.weight", shape: [i, h], split: .rowsByMLP))
            t.append(TensorSpec(tensor: .upProj(l), name: p + "mlp.up_proj.weight", shape: [i, h], split: .rowsByMLP))
            t.append(TensorSpec(tensor: .downProj(l), name: p + "mlp.down_proj.weight", shape: [h, i], split: .colsByMLP))
        }
        return t
    }

    /// Gemma 4 (GEMMA_SPEC §4.2): per-layer head dims and KV heads, no k/v weights in KV
    /// consumers, no v_proj in k_eq_v full layers, PLE, layer scalars, MoE tensors.
    static func gemma4Table(for c: GemmaConfig) -> [TensorSpec] {
        let h = c.hiddenSize, nq = c.numAttentionHeads, L = c.numHiddenLayers, p = c.perLayerInputSize
        var t: [TensorSpec] = [
            TensorSpec(tensor: .embedTokens, name: "embed_tokens.weight", shape: [c.vocabSize, h], split: .rowsByVocab),
            TensorSpec(tensor: .finalNorm, name: "norm.weight", shape: [h], split: .replicated),
        ]
        if p > 0 {
            t.append(TensorSpec(tensor: .perLayerEmbedding, name: "embed_tokens_per_layer.weight", shape: [c.perLayerVocabSize, L * p], split: .rowsByPLEVocab))
            t.append(TensorSpec(tensor: .perLayerModelProjection, name: "per_layer_model_projection.weight", shape: [L * p, h], split: .replicated))
            t.append(TensorSpec(tensor: .perLayerProjectionNorm, name: "per_layer_projection_norm.weight", shape: [p], split: .replicated))
        }
        for l in 0..<L {
            let pre = "layers.\(l).", d = c.layerHeadDims[l], kv = c.layerKVHeads[l], i = c.intermediateSize(layer: l)
            for (tensor, name) in [(LogicalTensor.inputNorm(l), "input_layernorm"), (.postAttentionNorm(l), "post_attention_layernorm"),
                                   (.preFeedforwardNorm(l), "pre_feedforward_layernorm"), (.postFeedforwardNorm(l), "post_feedforward_layernorm")] {
                t.append(TensorSpec(tensor: tensor, name: pre + name + ".weight", shape: [h], split: .replicated))
            }
            t.append(TensorSpec(tensor: .layerScalar(l), name: pre + "layer_scalar", shape: [1], split: .replicated))
            t.append(TensorSpec(tensor: .qProj(l), name: pre + "self_attn.q_proj.weight", shape: [nq * d, h], split: .rowsByQueryHeads))
            t.append(TensorSpec(tensor: .qNorm(l), name: pre + "self_attn.q_norm.weight", shape: [d], split: .replicated))
            if c.hasOwnKV(l) {
                t.append(TensorSpec(tensor: .kProj(l), name: pre + "self_attn.k_proj.weight", shape: [kv * d, h], split: .rowsByKVHeads))
                t.append(TensorSpec(tensor: .kNorm(l), name: pre + "self_attn.k_norm.weight", shape: [d], split: .replicated))
                if c.hasVProj(l) {
                    t.append(TensorSpec(tensor: .vProj(l), name: pre + "self_attn.v_proj.weight", shape: [kv * d, h], split: .rowsByKVHeads))
                }
            }
            t.append(TensorSpec(tensor: .oProj(l), name: pre + "self_attn.o_proj.weight", shape: [h, nq * d], split: .colsByQueryHeads))
            t.append(TensorSpec(tensor: .gateProj(l), name: pre + "mlp.gate_proj.weight", shape: [i, h], split: .rowsByMLP))
            t.append(TensorSpec(tensor: .upProj(l), name: pre + "mlp.up_proj.weight", shape: [i, h], split: .rowsByMLP))
            t.append(TensorSpec(tensor: .downProj(l), name: pre + "mlp.down_proj.weight", shape: [h, i], split: .colsByMLP))
            if p > 0 {
                t.append(TensorSpec(tensor: .perLayerInputGate(l), name: pre + "per_layer_input_gate.weight", shape: [p, h], split: .replicated))
                t.append(TensorSpec(tensor: .perLayerProjection(l), name: pre + "per_layer_projection.weight", shape: [h, p], split: .replicated))
                t.append(TensorSpec(tensor: .postPerLayerInputNorm(l), name: pre + "post_per_layer_input_norm.weight", shape: [h], split: .replicated))
            }
            if c.isMoE, let e = c.numExperts, let ie = c.moeIntermediateSize {
                t.append(TensorSpec(tensor: .routerProj(l), name: pre + "router.proj.weight", shape: [e, h], split: .replicated))
                t.append(TensorSpec(tensor: .routerScale(l), name: pre + "router.scale", shape: [h], split: .replicated))
                t.append(TensorSpec(tensor: .routerPerExpertScale(l), name: pre + "router.per_expert_scale", shape: [e], split: .replicated))
                t.append(TensorSpec(tensor: .expertsGateUp(l), name: pre + "experts.gate_up_proj", shape: [e, 2 * ie, h], split: .experts))
                t.append(TensorSpec(tensor: .expertsDown(l), name: pre + "experts.down_proj", shape: [e, h, ie], split: .experts))
                t.append(TensorSpec(tensor: .preFeedforwardNorm2(l), name: pre + "pre_feedforward_layernorm_2.weight", shape: [h], split: .replicated))
                t.append(TensorSpec(tensor: .postFeedforwardNorm1(l), name: pre + "post_feedforward_layernorm_1.weight", shape: [h], split: .replicated))
                t.append(TensorSpec(tensor: .postFeedforwardNorm2(l), name: pre + "post_feedforward_layernorm_2.weight", shape: [h], split: .replicated))
            }
        }
        return t
    }

    /// Gemma 4 exports may still hold k/v weights of KV-consumer layers; transformers ignores
    /// them (`_keys_to_ignore_on_load_unexpected`), and so does this loader.
    static func ignorable(_ shortName: String, config c: GemmaConfig) -> Bool {
        guard c.generation == .gemma4, c.firstKVSharedLayer < c.numHiddenLayers else { return false }
        for l in c.firstKVSharedLayer..<c.numHiddenLayers {
            let pre = "layers.\(l).self_attn."
            if [pre + "k_proj.weight", pre + "v_proj.weight", pre + "k_norm.weight"].contains(shortName) { return true }
        }
        return false
    }

    /// Matches the names in a checkpoint against the table: returns logical tensor -> full
    /// file name. Throws on a missing tensor, an unexpected one, or a wrong shape.
    public static func resolve(config c: GemmaConfig, names: [String: [Int]]) throws -> [LogicalTensor: String] {
        let table = table(for: c)
        // Strip the decoder prefix; skip other towers.
        var byShortName: [String: String] = [:]
        var lmHead: String?
        for full in names.keys.sorted() {
            if skippedPrefixes.contains(where: { full.hasPrefix($0) }) { continue }
            if lmHeadNames.contains(full) { lmHead = full; continue }
            guard let prefix = decoderPrefixes.first(where: { full.hasPrefix($0) }) else {
                throw TensorTableError.unexpected(full)
            }
            byShortName[String(full.dropFirst(prefix.count))] = full
        }
        var out: [LogicalTensor: String] = [:]
        for spec in table {
            guard let full = byShortName.removeValue(forKey: spec.name) else {
                throw TensorTableError.missing("model." + spec.name)
            }
            let shape = names[full] ?? []
            if shape != spec.shape { throw TensorTableError.wrongShape(name: full, expected: spec.shape, got: shape) }
            out[spec.tensor] = full
        }
        if let leftover = byShortName.filter({ !ignorable($0.key, config: c) }).values.sorted().first {
            throw TensorTableError.unexpected(leftover)
        }
        if let lmHead {
            let expected = [c.vocabSize, c.hiddenSize]
            if names[lmHead] != expected { throw TensorTableError.wrongShape(name: lmHead, expected: expected, got: names[lmHead] ?? []) }
            out[.lmHead] = lmHead
        }
        return out
    }
}
