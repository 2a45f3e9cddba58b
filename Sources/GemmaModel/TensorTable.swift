// The one table of decoder tensors, Gemma 1-4: one row per kind of tensor with its Hugging
// Face name, its GGUF name, its shape, how it is split across ranks and when a checkpoint holds
// it. Both weight sources (WeightSource.swift) check a file against the rows expanded for its
// config (missing, unexpected and wrongly shaped tensors are errors naming the tensor), and the
// loader (GemmaLoader.swift) cuts each rank's slice by the row's split. A new variant is new
// rows (and presence rules), not a new file. GEMMA_SPEC §4.1-§4.3, §5.

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
    /// Gemma 4 GGUF `rope_freqs`: read into the config (proportional RoPE), not a weight.
    case ropeFrequencies
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

/// Whether a checkpoint of a given config holds a tensor.
public enum TensorPresence: Sendable, Equatable {
    /// Must be there, with the row's shape.
    case required
    /// Used when there (a separate LM head; absent means tied embeddings).
    case optional
    /// Skipped when there: unused by the model (Gemma 4 exports may keep k/v weights of
    /// KV-consumer layers, which transformers ignores too) or read as metadata.
    case ignored
    /// Not part of this config: a file holding it is refused as unexpected.
    case absent
}

/// One tensor of one config, expanded from a `TensorRow`.
public struct TensorSpec: Sendable {
    public let tensor: LogicalTensor
    /// Hugging Face name without the model prefix, e.g. `layers.3.self_attn.q_proj.weight`;
    /// nil for a tensor only GGUF files hold.
    public let hfName: String?
    /// GGUF name, e.g. `blk.3.attn_q.weight`.
    public let ggufName: String
    /// PyTorch shape [out, in] (or [n] for norms); a GGUF tensor's dims reversed.
    public let shape: [Int]
    public let split: TensorSplit
    public let presence: TensorPresence

    /// The name messages use: the Hugging Face one where there is one.
    public var name: String { hfName ?? ggufName }
}

/// One row of the table: a kind of tensor, declared once for every generation.
struct TensorRow: Sendable {
    enum Scope: Sendable {
        /// One tensor per model, named after the decoder prefix.
        case model
        /// One tensor per layer; `{L}` in the names is the layer index.
        case layer
        /// The LM head: a Hugging Face name outside the decoder prefix (`TensorTable.headPrefixes`).
        case head
    }
    let scope: Scope
    let tensor: @Sendable (Int) -> LogicalTensor
    let hf: String?
    let gguf: String
    /// GGUF name in `general.architecture = gemma` files where it differs.
    var ggufGemma1: String? = nil
    let shape: @Sendable (GemmaConfig, Int) -> [Int]
    let split: TensorSplit
    let presence: @Sendable (GemmaConfig, Int) -> TensorPresence
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

public enum TensorTable {
    /// Prefixes of the text decoder, tried in this order (GEMMA_SPEC §4.1).
    public static let decoderPrefixes = ["model.language_model.", "language_model.model.", "model."]
    /// Tensors of other towers in multimodal checkpoints, skipped by rule.
    public static let skippedPrefixes = ["vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.",
                                         "model.audio_tower.", "model.embed_vision.", "model.embed_audio.", "audio_tower.", "embed_vision.", "embed_audio."]
    /// Prefixes of a separate LM head's Hugging Face name (used if present, else tied).
    public static let headPrefixes = ["", "language_model."]

    // Presence rules.
    private static let always: @Sendable (GemmaConfig, Int) -> TensorPresence = { _, _ in .required }
    private static func when(_ rule: @escaping @Sendable (GemmaConfig, Int) -> Bool) -> @Sendable (GemmaConfig, Int) -> TensorPresence {
        { c, l in rule(c, l) ? .required : .absent }
    }
    private static let postNorms = when { c, _ in c.hasPostNorms }
    private static let ple = when { c, _ in c.perLayerInputSize > 0 }
    private static let moe = when { c, _ in c.isMoE && c.numExperts != nil && c.moeIntermediateSize != nil }
    /// k_proj / k_norm: a layer with its own K/V; KV consumers (Gemma 4) may still carry them, unused.
    private static let ownKV: @Sendable (GemmaConfig, Int) -> TensorPresence = { c, l in c.hasOwnKV(l) ? .required : .ignored }

    // Shape rules.
    private static let hidden: @Sendable (GemmaConfig, Int) -> [Int] = { c, _ in [c.hiddenSize] }
    private static let headDim: @Sendable (GemmaConfig, Int) -> [Int] = { c, l in [c.layerHeadDims[l]] }
    private static let kvProj: @Sendable (GemmaConfig, Int) -> [Int] = { c, l in [c.layerKVHeads[l] * c.layerHeadDims[l], c.hiddenSize] }
    private static let experts: @Sendable (GemmaConfig) -> Int = { $0.numExperts ?? 0 }
    private static let expertWidth: @Sendable (GemmaConfig) -> Int = { $0.moeIntermediateSize ?? 0 }

    /// Every kind of decoder tensor of Gemma 1-4. Per layer, rows are in checkpoint order.
    static let rows: [TensorRow] = [
        TensorRow(scope: .model, tensor: { _ in .embedTokens }, hf: "embed_tokens.weight", gguf: "token_embd.weight",
                  shape: { c, _ in [c.vocabSize, c.hiddenSize] }, split: .rowsByVocab, presence: always),
        TensorRow(scope: .model, tensor: { _ in .finalNorm }, hf: "norm.weight", gguf: "output_norm.weight",
                  shape: hidden, split: .replicated, presence: always),
        // Gemma 4 per-layer embeddings (PLE).
        TensorRow(scope: .model, tensor: { _ in .perLayerEmbedding }, hf: "embed_tokens_per_layer.weight", gguf: "per_layer_token_embd.weight",
                  shape: { c, _ in [c.perLayerVocabSize, c.numHiddenLayers * c.perLayerInputSize] }, split: .rowsByPLEVocab, presence: ple),
        TensorRow(scope: .model, tensor: { _ in .perLayerModelProjection }, hf: "per_layer_model_projection.weight", gguf: "per_layer_model_proj.weight",
                  shape: { c, _ in [c.numHiddenLayers * c.perLayerInputSize, c.hiddenSize] }, split: .replicated, presence: ple),
        TensorRow(scope: .model, tensor: { _ in .perLayerProjectionNorm }, hf: "per_layer_projection_norm.weight", gguf: "per_layer_proj_norm.weight",
                  shape: { c, _ in [c.perLayerInputSize] }, split: .replicated, presence: ple),
        TensorRow(scope: .model, tensor: { _ in .ropeFrequencies }, hf: nil, gguf: "rope_freqs.weight",
                  shape: { _, _ in [] }, split: .replicated, presence: { c, _ in c.generation == .gemma4 ? .ignored : .absent }),

        // Norms. Gemma 1's pre-MLP norm is HF's post_attention_layernorm and GGUF's ffn_norm.
        TensorRow(scope: .layer, tensor: { .inputNorm($0) }, hf: "layers.{L}.input_layernorm.weight", gguf: "blk.{L}.attn_norm.weight",
                  shape: hidden, split: .replicated, presence: always),
        TensorRow(scope: .layer, tensor: { .postAttentionNorm($0) }, hf: "layers.{L}.post_attention_layernorm.weight",
                  gguf: "blk.{L}.post_attention_norm.weight", ggufGemma1: "blk.{L}.ffn_norm.weight",
                  shape: hidden, split: .replicated, presence: always),
        TensorRow(scope: .layer, tensor: { .preFeedforwardNorm($0) }, hf: "layers.{L}.pre_feedforward_layernorm.weight", gguf: "blk.{L}.ffn_norm.weight",
                  shape: hidden, split: .replicated, presence: postNorms),
        TensorRow(scope: .layer, tensor: { .postFeedforwardNorm($0) }, hf: "layers.{L}.post_feedforward_layernorm.weight", gguf: "blk.{L}.post_ffw_norm.weight",
                  shape: hidden, split: .replicated, presence: postNorms),
        TensorRow(scope: .layer, tensor: { .layerScalar($0) }, hf: "layers.{L}.layer_scalar", gguf: "blk.{L}.layer_output_scale.weight",
                  shape: { _, _ in [1] }, split: .replicated, presence: when { c, _ in c.hasLayerScalar }),

        // Attention: per-layer head dims and KV heads (uniform before Gemma 4); no k/v in KV
        // consumers, no v_proj in k_eq_v full layers (GEMMA_SPEC §4.2).
        TensorRow(scope: .layer, tensor: { .qProj($0) }, hf: "layers.{L}.self_attn.q_proj.weight", gguf: "blk.{L}.attn_q.weight",
                  shape: { c, l in [c.numAttentionHeads * c.layerHeadDims[l], c.hiddenSize] }, split: .rowsByQueryHeads, presence: always),
        TensorRow(scope: .layer, tensor: { .qNorm($0) }, hf: "layers.{L}.self_attn.q_norm.weight", gguf: "blk.{L}.attn_q_norm.weight",
                  shape: headDim, split: .replicated, presence: when { c, _ in c.hasQKNorm }),
        TensorRow(scope: .layer, tensor: { .kProj($0) }, hf: "layers.{L}.self_attn.k_proj.weight", gguf: "blk.{L}.attn_k.weight",
                  shape: kvProj, split: .rowsByKVHeads, presence: ownKV),
        TensorRow(scope: .layer, tensor: { .kNorm($0) }, hf: "layers.{L}.self_attn.k_norm.weight", gguf: "blk.{L}.attn_k_norm.weight",
                  shape: headDim, split: .replicated, presence: { c, l in c.hasQKNorm ? ownKV(c, l) : .absent }),
        TensorRow(scope: .layer, tensor: { .vProj($0) }, hf: "layers.{L}.self_attn.v_proj.weight", gguf: "blk.{L}.attn_v.weight",
                  shape: kvProj, split: .rowsByKVHeads, presence: { c, l in c.hasVProj(l) ? .required : c.hasOwnKV(l) ? .absent : .ignored }),
        TensorRow(scope: .layer, tensor: { .oProj($0) }, hf: "layers.{L}.self_attn.o_proj.weight", gguf: "blk.{L}.attn_output.weight",
                  shape: { c, l in [c.hiddenSize, c.numAttentionHeads * c.layerHeadDims[l]] }, split: .colsByQueryHeads, presence: always),

        // Dense MLP (double-wide in Gemma 4 KV-consumer layers with use_double_wide_mlp).
        TensorRow(scope: .layer, tensor: { .gateProj($0) }, hf: "layers.{L}.mlp.gate_proj.weight", gguf: "blk.{L}.ffn_gate.weight",
                  shape: { c, l in [c.intermediateSize(layer: l), c.hiddenSize] }, split: .rowsByMLP, presence: always),
        TensorRow(scope: .layer, tensor: { .upProj($0) }, hf: "layers.{L}.mlp.up_proj.weight", gguf: "blk.{L}.ffn_up.weight",
                  shape: { c, l in [c.intermediateSize(layer: l), c.hiddenSize] }, split: .rowsByMLP, presence: always),
        TensorRow(scope: .layer, tensor: { .downProj($0) }, hf: "layers.{L}.mlp.down_proj.weight", gguf: "blk.{L}.ffn_down.weight",
                  shape: { c, l in [c.hiddenSize, c.intermediateSize(layer: l)] }, split: .colsByMLP, presence: always),

        // Gemma 4 PLE, per layer.
        TensorRow(scope: .layer, tensor: { .perLayerInputGate($0) }, hf: "layers.{L}.per_layer_input_gate.weight", gguf: "blk.{L}.inp_gate.weight",
                  shape: { c, _ in [c.perLayerInputSize, c.hiddenSize] }, split: .replicated, presence: ple),
        TensorRow(scope: .layer, tensor: { .perLayerProjection($0) }, hf: "layers.{L}.per_layer_projection.weight", gguf: "blk.{L}.proj.weight",
                  shape: { c, _ in [c.hiddenSize, c.perLayerInputSize] }, split: .replicated, presence: ple),
        TensorRow(scope: .layer, tensor: { .postPerLayerInputNorm($0) }, hf: "layers.{L}.post_per_layer_input_norm.weight", gguf: "blk.{L}.post_norm.weight",
                  shape: hidden, split: .replicated, presence: ple),

        // Gemma 4 MoE block: router replicated, experts [E, ·, ·] split by MoEPlan (docs/MOE.md).
        TensorRow(scope: .layer, tensor: { .routerProj($0) }, hf: "layers.{L}.router.proj.weight", gguf: "blk.{L}.ffn_gate_inp.weight",
                  shape: { c, _ in [experts(c), c.hiddenSize] }, split: .replicated, presence: moe),
        TensorRow(scope: .layer, tensor: { .routerScale($0) }, hf: "layers.{L}.router.scale", gguf: "blk.{L}.ffn_gate_inp.scale",
                  shape: hidden, split: .replicated, presence: moe),
        TensorRow(scope: .layer, tensor: { .routerPerExpertScale($0) }, hf: "layers.{L}.router.per_expert_scale", gguf: "blk.{L}.ffn_down_exps.scale",
                  shape: { c, _ in [experts(c)] }, split: .replicated, presence: moe),
        TensorRow(scope: .layer, tensor: { .expertsGateUp($0) }, hf: "layers.{L}.experts.gate_up_proj", gguf: "blk.{L}.ffn_gate_up_exps.weight",
                  shape: { c, _ in [experts(c), 2 * expertWidth(c), c.hiddenSize] }, split: .experts, presence: moe),
        TensorRow(scope: .layer, tensor: { .expertsDown($0) }, hf: "layers.{L}.experts.down_proj", gguf: "blk.{L}.ffn_down_exps.weight",
                  shape: { c, _ in [experts(c), c.hiddenSize, expertWidth(c)] }, split: .experts, presence: moe),
        TensorRow(scope: .layer, tensor: { .preFeedforwardNorm2($0) }, hf: "layers.{L}.pre_feedforward_layernorm_2.weight", gguf: "blk.{L}.pre_ffw_norm_2.weight",
                  shape: hidden, split: .replicated, presence: moe),
        TensorRow(scope: .layer, tensor: { .postFeedforwardNorm1($0) }, hf: "layers.{L}.post_feedforward_layernorm_1.weight", gguf: "blk.{L}.post_ffw_norm_1.weight",
                  shape: hidden, split: .replicated, presence: moe),
        TensorRow(scope: .layer, tensor: { .postFeedforwardNorm2($0) }, hf: "layers.{L}.post_feedforward_layernorm_2.weight", gguf: "blk.{L}.post_ffw_norm_2.weight",
                  shape: hidden, split: .replicated, presence: moe),

        // A separate LM head: used when the checkpoint has one, tied to the embedding otherwise.
        TensorRow(scope: .head, tensor: { _ in .lmHead }, hf: "lm_head.weight", gguf: "output.weight",
                  shape: { c, _ in [c.vocabSize, c.hiddenSize] }, split: .rowsByVocab, presence: { _, _ in .optional }),
    ]

    /// The rows expanded for a config, absent ones left out: model tensors, each layer's, then
    /// the LM head.
    public static func specs(for c: GemmaConfig) -> [TensorSpec] {
        func expand(_ row: TensorRow, _ l: Int) -> TensorSpec? {
            let presence = row.presence(c, l)
            guard presence != .absent else { return nil }
            func named(_ pattern: String) -> String { pattern.replacingOccurrences(of: "{L}", with: String(l)) }
            let gguf = c.generation == .gemma1 ? (row.ggufGemma1 ?? row.gguf) : row.gguf
            return TensorSpec(tensor: row.tensor(l), hfName: row.hf.map(named), ggufName: named(gguf),
                              shape: row.shape(c, l), split: row.split, presence: presence)
        }
        var out = rows.filter { $0.scope == .model }.compactMap { expand($0, 0) }
        let layerRows = rows.filter { $0.scope == .layer }
        for l in 0..<c.numHiddenLayers { out += layerRows.compactMap { expand($0, l) } }
        return out + rows.filter { $0.scope == .head }.compactMap { expand($0, 0) }
    }

    /// The Hugging Face name (after the decoder prefix) of `t`, a tensor of layer `layer`
    /// (any layer for model-wide tensors); nil for a GGUF-only tensor.
    public static func hfName(_ t: LogicalTensor, layer: Int) -> String? {
        rows.first { $0.tensor(layer) == t }?.hf?.replacingOccurrences(of: "{L}", with: String(layer))
    }

    /// The tensors every checkpoint of `c` must hold.
    public static func table(for c: GemmaConfig) -> [TensorSpec] { specs(for: c).filter { $0.presence == .required } }

    /// Matches the names in a Hugging Face checkpoint against the table: returns logical
    /// tensor -> full file name. Throws on a missing tensor, an unexpected one, or a wrong shape.
    public static func resolve(config c: GemmaConfig, names: [String: [Int]]) throws -> [LogicalTensor: String] {
        let hfSpecs = specs(for: c).filter { $0.hfName != nil }
        let headNames = hfSpecs.filter { $0.tensor == .lmHead }.flatMap { s in headPrefixes.map { $0 + (s.hfName ?? "") } }
        // Strip the decoder prefix; skip other towers.
        var byShortName: [String: String] = [:]
        var lmHead: String?
        for full in names.keys.sorted() {
            if skippedPrefixes.contains(where: { full.hasPrefix($0) }) { continue }
            if headNames.contains(full) { lmHead = full; continue }
            guard let prefix = decoderPrefixes.first(where: { full.hasPrefix($0) }) else {
                throw TensorTableError.unexpected(full)
            }
            byShortName[String(full.dropFirst(prefix.count))] = full
        }
        var out: [LogicalTensor: String] = [:]
        var ignored: Set<String> = []
        for spec in hfSpecs {
            guard let name = spec.hfName else { continue }
            switch spec.presence {
            case .required:
                guard let full = byShortName.removeValue(forKey: name) else { throw TensorTableError.missing("model." + name) }
                let shape = names[full] ?? []
                if shape != spec.shape { throw TensorTableError.wrongShape(name: full, expected: spec.shape, got: shape) }
                out[spec.tensor] = full
            case .ignored:
                ignored.insert(name)
            case .optional, .absent:
                continue
            }
        }
        if let leftover = byShortName.filter({ !ignored.contains($0.key) }).values.sorted().first {
            throw TensorTableError.unexpected(leftover)
        }
        if let lmHead, let spec = hfSpecs.first(where: { $0.tensor == .lmHead }) {
            if names[lmHead] != spec.shape { throw TensorTableError.wrongShape(name: lmHead, expected: spec.shape, got: names[lmHead] ?? []) }
            out[.lmHead] = lmHead
        }
        return out
    }
}
