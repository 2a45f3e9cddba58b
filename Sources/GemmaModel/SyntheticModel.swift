// Synthetic GGUF models: a preset config at its true dimensions, random weights, llama.cpp's
// tensor names, metadata keys and (for q4_k) its Q4_K_M quantization mix, and the tokenizer of
// a real GGUF copied in, so the file loads like a downloaded one (here, and in llama.cpp).
// For measuring memory, load time and decode speed at real sizes without downloading them.
//
// Weight statistics (values before quantization; see docs/LARGE_MODELS.md):
// - matrices ~ N(0, 1/fan_in): each projection keeps the variance of its (RMS-normed) input;
// - token_embd ~ N(0, 1/H): the embedding is multiplied by sqrt(H), so the first residual
//   has RMS ~1, and the tied LM head then gives logits with a standard deviation of ~1;
// - PLE table ~ N(0, 1/P) (it is multiplied by sqrt(P)); MoE router ~ N(0, 1), kept F32
//   (llama.cpp never quantizes ffn_gate_inp): the router's input has norm 1 (RMS-normed, times
//   H^-1/2), so routing logits have a standard deviation of ~1: spread, not one-hot;
// - `SynthRouting.decisive` (MoE only; for comparing implementations): every embedding row also
//   carries one shared vector on the first 64 dimensions (+-1 each, so 8 after the sqrt(H)
//   embedding scale in RMS over the row), so every residual keeps a component along its
//   direction u, and per layer `topK` planted experts get router rows N(0, 1) + 60 u: each
//   token then picks the planted experts by a margin of several logits, which rounding cannot
//   flip (with spread routing near-tied choices flip and the flip propagates). The final norm
//   is 0 on those 64 dimensions, so the shared part never reaches the (tied) LM head, where it
//   would add ~100 to every logit and saturate Gemma 4's soft-cap;
// - norms: GGUF stores the multiplier (w + 1 for Gemma 1-3), drawn as 1 + N(0, 0.1^2), i.e.
//   HF's w near 0; Gemma 4's q/k norms are d^-1/4 so that q·k (attention scale 1.0) has a
//   standard deviation of ~1 rather than sqrt(d);
// - post-attention and post-feed-forward norms (the branches added to the residual) are
//   scaled by s = max(1, sqrt(H / (8 L))): the final residual then has RMS ~sqrt(1 + H/4)
//   whatever the depth, of which the embedding is a share 2/sqrt(H). With tied embeddings the
//   logit of the input token is sqrt(H) * rms(x0) / rms(x) standard deviations above the rest;
//   this keeps it at ~2 instead of sqrt(H) / sqrt(1 + 2L) (5-25): greedy decoding no longer
//   repeats the prompt's last token (with the full vocabulary it can still settle on one token
//   after the first step; docs/LARGE_MODELS.md);
// - layer scalars, router scales: 1.
// Speed: per (type, standard deviation) a bank of blocks is quantized once from random
// values; tensors are filled by drawing whole blocks from the bank with a seeded SplitMix64,
// in 8 MiB chunks written at their final offset. The same seed gives the same bytes.
import Foundation
import GemmaFormats
import GemmaKernels

/// Weight encodings `synth` writes.
public enum SynthQuant: String, CaseIterable, Sendable {
    /// llama.cpp's Q4_K_M mix.
    case q4_k
    /// Every matrix Q8_0 (llama.cpp's Q8_0 file type).
    case q8_0
    /// Every matrix BF16.
    case bf16

    /// `general.file_type` (llama.cpp's LLAMA_FTYPE_MOSTLY_*).
    var fileType: UInt32 {
        switch self {
        case .q4_k: return 15
        case .q8_0: return 7
        case .bf16: return 32
        }
    }
}

/// How a synthetic MoE file routes tokens.
public enum SynthRouting: String, CaseIterable, Sendable {
    /// Random router rows: each token's experts spread over all of them, as in a real model.
    case spread
    /// Planted experts per layer that every token picks by a wide margin (see the file header).
    case decisive
}

/// A bad synth request (unknown preset, impossible override, unusable tokenizer source).
public struct SynthError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// How a tensor's values are drawn.
public enum SynthInit: Sendable, Equatable {
    /// N(0, std^2), through the block bank.
    case gaussian(std: Float)
    /// N(0, std^2) plus the file's shared residual vector (`SyntheticModel.sharedVector`) on
    /// every row, through one block bank per column block (decisive routing's embedding).
    case gaussianShared(std: Float)
    /// MoE router rows N(0, std^2), plus `strength` times the shared vector's direction on the
    /// rows of `SyntheticModel.plantedExperts(layer:)`, F32.
    case router(std: Float, strength: Float, layer: Int)
    /// 1 + N(0, jitter^2) times `scale` (norm multipliers), F32.
    case norm(scale: Float, jitter: Float)
    /// Every value the same, F32.
    case constant(Float)
    /// `.norm(scale: 1, jitter:)` with the first `zeroed` values 0 (decisive routing's final norm).
    case normZeroed(jitter: Float, zeroed: Int)
    /// Gemma 4 proportional RoPE divisors: 1 for the first `rotated` pairs, 1e30 after.
    case ropeFreqs(rotated: Int)

    /// `.gaussian` of the same std for `.gaussianShared` (the noise its banks draw), else self.
    var plain: SynthInit {
        if case let .gaussianShared(std) = self { return .gaussian(std: std) }
        return self
    }

    /// Filled from block banks (a quantized or BF16 tensor); F32 tensors are drawn value by value.
    var drawsBlocks: Bool {
        switch self {
        case .gaussian, .gaussianShared: return true
        default: return false
        }
    }
}

/// One tensor of a synthetic file.
public struct SynthTensor: Sendable, Equatable {
    public let name: String
    /// GGUF dims, innermost (columns) first.
    public let dims: [Int]
    public let type: WeightType
    public let initializer: SynthInit

    public var byteCount: Int { (type.rowBytes(dims[0]) ?? 0) * dims.dropFirst().reduce(1, *) }
}

/// The plan of a synthetic GGUF file: config, tensors with types, metadata.
public struct SyntheticModel: Sendable {
    public let presetName: String
    public let config: GemmaConfig
    public let quant: SynthQuant
    public let routing: SynthRouting
    public let tensors: [SynthTensor]

    /// Plans the file for a preset, with the layer count and vocabulary optionally cut down.
    public init(preset: String, quant: SynthQuant, layers: Int? = nil, vocab: Int? = nil, routing: SynthRouting = .spread) throws {
        guard let top = ModelPresets.dictionary(named: preset), let name = ModelPresets.canonicalName(preset) else {
            throw SynthError("unknown preset \"\(preset)\" (presets: \(ModelPresets.names.joined(separator: ", ")))")
        }
        presetName = name
        config = try Self.config(top, layers: layers, vocab: vocab)
        if routing == .decisive && !config.isMoE {
            throw SynthError("decisive routing applies to MoE presets only; \(name) has no experts")
        }
        self.quant = quant
        self.routing = routing
        tensors = try Self.tensorList(config: config, quant: quant, routing: routing)
    }

    /// Norm of the shared vector decisive routing adds to every embedding row (times sqrt(H): the
    /// first residual's RMS along it; the rest of the embedding gives RMS ~1).
    public static let sharedResidualRMS: Float = 8
    /// The dimensions that carry the shared vector (the first ones), where the final norm is 0.
    public static let sharedDimensions = 64
    /// Router row strength along the shared direction for planted experts. The residual's
    /// cosine with that direction is ~0.29 after the last layer of the 26B-A4B preset (8 against
    /// branches of RMS up to ~sqrt(H / 4)), so planted logits lead by ~0.29 * 60 = 17 before the
    /// N(0, 1) parts: a margin of ~10 logits over the best of the other experts.
    public static let plantedStrength: Float = 60

    /// The shared vector of decisive routing (length H, norm `sharedResidualRMS`): random signs
    /// times sharedResidualRMS / sqrt(sharedDimensions) on the first `sharedDimensions`
    /// dimensions, 0 elsewhere; from the file's seed.
    public func sharedVector(seed: UInt64) -> [Float] {
        let h = config.hiddenSize, k = min(Self.sharedDimensions, h)
        var rng = SynthRandom(seed: SynthRandom.mix(seed, 0x5AA4ED))
        let a = Self.sharedResidualRMS / Float(k).squareRoot()
        return (0..<h).map { i in i < k ? (rng.next() & 1 == 0 ? a : -a) : 0 }
    }

    /// The experts of layer `layer` every token picks under decisive routing (`topK` distinct,
    /// ascending), from the file's seed.
    public func plantedExperts(layer: Int, seed: UInt64) -> [Int] {
        let e = config.numExperts ?? 0, k = min(config.topKExperts ?? 0, e)
        var rng = SynthRandom(seed: SynthRandom.mix(seed, 0x9E7A_0000 &+ UInt64(layer)))
        var picked = Set<Int>()
        while picked.count < k { picked.insert(Int(rng.next() % UInt64(e))) }
        return picked.sorted()
    }

    /// The preset's config with `layers` / `vocab` applied. Fewer layers keep the preset's layer
    /// pattern from the start (a Gemma 4 last layer is full, as transformers forces) and scale
    /// Gemma 4 KV sharing down, to the largest count that still has a producer of each type.
    static func config(_ top: [String: Any], layers: Int?, vocab: Int?) throws -> GemmaConfig {
        var text = (top["text_config"] as? [String: Any]) ?? top
        let full = text["num_hidden_layers"] as? Int ?? 0
        if let layers {
            guard layers >= 1, layers <= full else { throw SynthError("--layers must be in 1...\(full) for this preset, got \(layers)") }
            text["num_hidden_layers"] = layers
            if let types = text["layer_types"] as? [String] {
                var cut = Array(types.prefix(layers))
                if (text["model_type"] as? String)?.hasPrefix("gemma4") == true { cut[cut.count - 1] = LayerType.full.rawValue }
                text["layer_types"] = cut
            }
        }
        if let vocab {
            guard vocab >= 256 else { throw SynthError("--vocab must be at least 256, got \(vocab)") }
            text["vocab_size"] = vocab
            if text["vocab_size_per_layer_input"] != nil { text["vocab_size_per_layer_input"] = vocab }
        }
        func decode(_ t: [String: Any]) throws -> GemmaConfig {
            var whole = top
            if top["text_config"] != nil { whole["text_config"] = t } else { whole = t }
            return try GemmaConfig(configDictionary: whole)
        }
        let shared = text["num_kv_shared_layers"] as? Int ?? 0
        if let layers, shared > 0 {
            // Largest shared count <= the preset's proportion that makes a valid config.
            var s = min(layers - 1, Int((Double(shared) * Double(layers) / Double(full)).rounded()))
            while s > 0 {
                text["num_kv_shared_layers"] = s
                if (try? decode(text)) != nil { break }
                s -= 1
            }
            text["num_kv_shared_layers"] = s
        }
        do { return try decode(text) } catch { throw SynthError("the preset with these overrides is not a valid config: \(error)") }
    }

    /// llama.cpp's `use_more_bits`: the first and last eighth of `n`, and every third between.
    static func useMoreBits(_ i: Int, _ n: Int) -> Bool {
        i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
    }

    /// Every tensor of the file, in llama.cpp's names, with the quantization of `quant`.
    static func tensorList(config c: GemmaConfig, quant: SynthQuant, routing: SynthRouting = .spread) throws -> [SynthTensor] {
        let table = TensorTable.table(for: c)
        let attnVCount = table.filter { if case .vProj = $0.tensor { return true } else { return false } }.count
        var attnVIndex = 0
        var out: [SynthTensor] = []
        let h = Float(c.hiddenSize)
        for spec in table {
            let name = spec.ggufName
            let dims = Array(spec.shape.reversed())
            let fanIn = Float(dims[0])
            // 1-D tensors and the router: F32 values, not from the bank.
            switch spec.tensor {
            case .qNorm, .kNorm:
                let scale: Float = c.generation == .gemma4 ? Float(pow(Double(dims[0]), -0.25)) : 1
                out.append(SynthTensor(name: name, dims: dims, type: .f32, initializer: .norm(scale: scale, jitter: 0.1)))
                continue
            case .layerScalar, .routerScale, .routerPerExpertScale:
                out.append(SynthTensor(name: name, dims: dims, type: .f32, initializer: .constant(1)))
                continue
            case let .routerProj(l):
                out.append(SynthTensor(name: name, dims: dims, type: .f32,
                                       initializer: .router(std: 1, strength: routing == .decisive ? plantedStrength : 0, layer: l)))
                continue
            case .postAttentionNorm, .postFeedforwardNorm:
                let s = max(1, (h / Float(8 * c.numHiddenLayers)).squareRoot())
                out.append(SynthTensor(name: name, dims: dims, type: .f32, initializer: .norm(scale: s, jitter: 0.1)))
                continue
            case .finalNorm where routing == .decisive:
                out.append(SynthTensor(name: name, dims: dims, type: .f32, initializer: .normZeroed(jitter: 0.1, zeroed: sharedDimensions)))
                continue
            default:
                if spec.shape.count == 1 {
                    out.append(SynthTensor(name: name, dims: dims, type: .f32, initializer: .norm(scale: 1, jitter: 0.1)))
                    continue
                }
            }
            let std: Float
            switch spec.tensor {
            case .embedTokens: std = 1 / h.squareRoot()
            case .perLayerEmbedding: std = 1 / Float(max(1, c.perLayerInputSize)).squareRoot()
            default: std = 1 / fanIn.squareRoot()
            }
            var type: WeightType
            switch quant {
            case .q8_0: type = .q8_0
            case .bf16: type = .bf16
            case .q4_k:
                type = .q4_K
                switch spec.tensor {
                case .embedTokens, .lmHead: type = .q6_K
                case let .downProj(l), let .expertsDown(l):
                    if useMoreBits(l, c.numHiddenLayers) { type = .q6_K }
                case .vProj:
                    if useMoreBits(attnVIndex, attnVCount) { type = .q6_K }
                    attnVIndex += 1
                default: break
                }
                // llama.cpp's fallback when rows are not whole 256-value super-blocks.
                if dims[0] % 256 != 0 { type = type == .q6_K ? .q8_0 : .q5_0 }
            }
            guard dims[0] % type.blockSize == 0 else {
                throw SynthError("tensor \(name): \(dims[0]) columns are not whole \(type) blocks")
            }
            let shared = routing == .decisive && spec.tensor == .embedTokens
            // One bank per column block: the row must be whole units (BF16 draws 32 values at once).
            if shared && (type == .f32 || dims[0] % max(type.blockSize, 32) != 0) {
                throw SynthError("decisive routing needs \(name) in a block type of whole 32-value units, got \(type) with \(dims[0]) columns")
            }
            out.append(SynthTensor(name: name, dims: dims, type: type, initializer: shared ? .gaussianShared(std: std) : .gaussian(std: std)))
        }
        if c.generation == .gemma4, c.layerTypes.contains(.full) {
            let fullDim = c.headDim(for: .full)
            let partial = c.ropeParameters[.full]?.partialRotaryFactor ?? 1
            let rotated = Int((partial * Double(fullDim / 2)).rounded())
            out.append(SynthTensor(name: "rope_freqs.weight", dims: [fullDim / 2], type: .f32, initializer: .ropeFreqs(rotated: rotated)))
        }
        return out
    }

    /// Bytes of tensor data (without header and padding).
    public var dataBytes: Int { tensors.reduce(0) { $0 + $1.byteCount } }

    /// The GGUF architecture name.
    public var architecture: String { config.generation == .gemma4 ? "gemma4" : "gemma3" }

    /// The metadata llama.cpp's converter writes for this architecture, then the tokenizer
    /// keys of `tokenizer` (cut to the vocabulary size).
    public func writer(tokenizer: GGUFFile) throws -> GGUFWriter {
        let c = config
        var w = GGUFWriter()
        let a = architecture
        func u32(_ v: Int) -> GGUFValue { .uint32(UInt32(v)) }
        try w.add("general.architecture", .string(a))
        try w.add("general.type", .string("model"))
        try w.add("general.name", .string("\(presetName) synthetic (random weights)"))
        try w.add("general.alignment", .uint32(32))
        try w.add("\(a).context_length", u32(c.maxPositionEmbeddings))
        try w.add("\(a).embedding_length", u32(c.hiddenSize))
        try w.add("\(a).block_count", u32(c.numHiddenLayers))
        try w.add("\(a).attention.head_count", u32(c.numAttentionHeads))
        try w.add("\(a).attention.layer_norm_rms_epsilon", .float32(Float(c.rmsNormEps)))
        if let window = c.slidingWindow, c.layerTypes.contains(.sliding) { try w.add("\(a).attention.sliding_window", u32(window)) }
        if c.generation == .gemma4 {
            let L = c.numHiddenLayers
            let ffn = (0..<L).map { c.intermediateSize(layer: $0) }
            try w.add("\(a).feed_forward_length", Set(ffn).count == 1 ? u32(ffn[0]) : .array(elementType: .uint32, values: ffn.map(u32)))
            try w.add("\(a).attention.head_count_kv", Set(c.layerKVHeads).count == 1 ? u32(c.layerKVHeads[0])
                      : .array(elementType: .uint32, values: c.layerKVHeads.map(u32)))
            try w.add("\(a).attention.key_length", u32(c.headDim(for: .full)))
            try w.add("\(a).attention.value_length", u32(c.headDim(for: .full)))
            try w.add("\(a).attention.key_length_swa", u32(c.headDim(for: .sliding)))
            try w.add("\(a).attention.value_length_swa", u32(c.headDim(for: .sliding)))
            try w.add("\(a).attention.sliding_window_pattern", .array(elementType: .bool, values: c.layerTypes.map { .bool($0 == .sliding) }))
            try w.add("\(a).attention.shared_kv_layers", u32(c.numKvSharedLayers ?? 0))
            try w.add("\(a).rope.freq_base", .float32(Float(c.ropeParameters[.full]?.ropeTheta ?? 1e6)))
            try w.add("\(a).rope.freq_base_swa", .float32(Float(c.ropeParameters[.sliding]?.ropeTheta ?? 1e4)))
            // As llama.cpp's converter writes them: RoPE spans each layer type's whole head (the
            // full layers' partial rotation is in rope_freqs); without them llama.cpp rotates
            // sliding heads by the full layers' head dim and stops on an assertion.
            try w.add("\(a).rope.dimension_count", u32(c.headDim(for: .full)))
            try w.add("\(a).rope.dimension_count_swa", u32(c.headDim(for: .sliding)))
            if let cap = c.finalLogitSoftcapping { try w.add("\(a).final_logit_softcapping", .float32(Float(cap))) }
            // Written even when 0 (no PLE), as the converter does: llama.cpp requires the key.
            try w.add("\(a).embedding_length_per_layer_input", u32(c.perLayerInputSize))
            if c.isMoE, let e = c.numExperts, let k = c.topKExperts, let ie = c.moeIntermediateSize {
                try w.add("\(a).expert_count", u32(e))
                try w.add("\(a).expert_used_count", u32(k))
                try w.add("\(a).expert_feed_forward_length", u32(ie))
            }
        } else {
            try w.add("\(a).feed_forward_length", u32(c.intermediateSize))
            try w.add("\(a).attention.head_count_kv", u32(c.numKeyValueHeads))
            try w.add("\(a).attention.key_length", u32(c.headDim))
            try w.add("\(a).attention.value_length", u32(c.headDim))
            try w.add("\(a).rope.freq_base", .float32(Float(c.ropeParameters[.full]?.ropeTheta ?? 1e6)))
            if let full = c.ropeParameters[.full], full.ropeType == "linear", let f = full.factor {
                try w.add("\(a).rope.scaling.type", .string("linear"))
                try w.add("\(a).rope.scaling.factor", .float32(Float(f)))
            }
        }
        // The tokenizer, every key in file order; per-token arrays cut to the vocabulary.
        let sourceVocab: Int
        do { sourceVocab = try tokenizer.stringArray("tokenizer.ggml.tokens").count } catch {
            throw SynthError("\(tokenizer.path) has no usable tokenizer.ggml.tokens: \(error)")
        }
        guard sourceVocab >= c.vocabSize else {
            throw SynthError("the tokenizer of \(tokenizer.path) has \(sourceVocab) tokens, fewer than the vocabulary of \(c.vocabSize)")
        }
        for key in tokenizer.metadataKeys where key.hasPrefix("tokenizer.") {
            guard var v = tokenizer.value(key) else { continue }
            if case let .array(t, values) = v, values.count == sourceVocab { v = .array(elementType: t, values: Array(values.prefix(c.vocabSize))) }
            if key.hasSuffix("_token_id"), let id = v.intValue, id >= c.vocabSize { continue }
            try w.add(key, v)
        }
        try w.add("general.quantization_version", .uint32(2))
        try w.add("general.file_type", .uint32(quant.fileType))
        for t in tensors {
            try w.addTensor(GGUFTensorEntry(name: t.name, dims: t.dims, typeID: t.type.rawValue, byteCount: t.byteCount))
        }
        return w
    }

    /// The generator of tensor `index`'s values.
    static func random(tensor index: Int, seed: UInt64) -> SynthRandom {
        SynthRandom(seed: SynthRandom.mix(seed, UInt64(index) &+ 0x5EED))
    }

    /// `v / |v|`, or empty for an empty or zero vector.
    static func unit(_ v: [Float]) -> [Float] {
        let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return norm > 0 ? v.map { $0 / norm } : []
    }

    /// The values of a tensor drawn value by value (F32: norms, scalars, the router), as `write`
    /// stores them. `shared`: decisive routing's shared vector (else empty).
    func floatValues(of t: SynthTensor, rng: inout SynthRandom, seed: UInt64, shared: [Float]) -> [Float] {
        let direction = Self.unit(shared)
        let count = t.dims.reduce(1, *)
        var values = [Float](repeating: 0, count: count)
        for i in 0..<count {
            switch t.initializer {
            case let .gaussian(std): values[i] = rng.normal() * std
            case let .gaussianShared(std): values[i] = rng.normal() * std + (shared.isEmpty ? 0 : shared[i % shared.count])
            case let .router(std, _, _): values[i] = rng.normal() * std
            case let .norm(scale, jitter): values[i] = scale * (1 + jitter * rng.normal())
            case let .normZeroed(jitter, zeroed):
                let n = rng.normal()
                values[i] = i < zeroed ? 0 : 1 + jitter * n
            case let .constant(v): values[i] = v
            case let .ropeFreqs(rotated): values[i] = i < rotated ? 1 : 1e30
            }
        }
        if case let .router(_, strength, layer) = t.initializer, strength > 0, !direction.isEmpty {
            let h = t.dims[0]
            for e in plantedExperts(layer: layer, seed: seed) {
                for j in 0..<h { values[e * h + j] += strength * direction[j] }
            }
        }
        return values
    }

    /// A tensor's values as `write` stores them, for F32 tensors (tests).
    public func floatValues(ofTensor name: String, seed: UInt64) -> [Float]? {
        guard let index = tensors.firstIndex(where: { $0.name == name }), tensors[index].type == .f32 else { return nil }
        var rng = Self.random(tensor: index, seed: seed)
        return floatValues(of: tensors[index], rng: &rng, seed: seed, shared: routing == .decisive ? sharedVector(seed: seed) : [])
    }

    /// Writes the file: header, then every tensor from the block banks in chunks.
    /// `progress(done, total)` is called after each chunk with data bytes written so far.
    public func write(to path: String, tokenizer: GGUFFile, seed: UInt64, progress: (Int, Int) -> Void = { _, _ in }) throws {
        let w = try writer(tokenizer: tokenizer)
        let sink = try GGUFFileSink(path: path, writer: w)
        let total = dataBytes
        var done = 0
        var banks: [BankKey: BlockBank] = [:]
        let chunkCap = 8 << 20
        var chunk = [UInt8](repeating: 0, count: chunkCap)
        let shared = routing == .decisive ? sharedVector(seed: seed) : []
        for (index, t) in tensors.enumerated() {
            var rng = Self.random(tensor: index, seed: seed)
            switch t.initializer {
            case _ where t.initializer.drawsBlocks && t.type != .f32:
                // One bank, or (shared) one per column block, each with its slice of the vector
                // (a column whose slice is all zero uses the plain bank: the same bytes).
                guard case let .gaussian(std) = t.initializer.plain else { break }
                let key = BankKey(type: t.type, std: std)
                if banks[key] == nil { banks[key] = try BlockBank(type: t.type, std: std, seed: seed) }
                let plain = banks[key]!
                var columnBanks = [plain]
                if case .gaussianShared = t.initializer {
                    let unitValues = max(t.type.blockSize, 32)
                    columnBanks = try (0..<(t.dims[0] / unitValues)).map { j in
                        let mean = Array(shared[(j * unitValues)..<((j + 1) * unitValues)])
                        return mean.allSatisfy { $0 == 0 } ? plain : try BlockBank(type: t.type, std: std, seed: seed, mean: mean)
                    }
                }
                // The banks' blocks side by side, so the loop below reads one buffer.
                let unitBytes = plain.unitBytes, bankCount = plain.count, bankBytes = bankCount * unitBytes
                let allBanks = columnBanks.count == 1 ? plain.bytes : columnBanks.flatMap(\.bytes)
                let units = t.byteCount / unitBytes
                let perChunk = chunkCap / unitBytes
                var u = 0
                while u < units {
                    let n = min(perChunk, units - u)
                    chunk.withUnsafeMutableBytes { dst in
                        allBanks.withUnsafeBytes { src in
                            let d = dst.baseAddress!, s = src.baseAddress!
                            let mask = UInt64(bankCount - 1), columns = columnBanks.count
                            for i in 0..<n {
                                let pick = Int(rng.next() & mask)
                                (d + i * unitBytes).copyMemory(from: s + ((u + i) % columns) * bankBytes + pick * unitBytes, byteCount: unitBytes)
                            }
                        }
                    }
                    try chunk.withUnsafeBytes { try sink.write(tensor: index, at: u * unitBytes, UnsafeRawBufferPointer(rebasing: $0[0..<n * unitBytes])) }
                    u += n
                    done += n * unitBytes
                    progress(done, total)
                }
            default:
                let values = floatValues(of: t, rng: &rng, seed: seed, shared: shared)
                try values.withUnsafeBytes { try sink.write(tensor: index, at: 0, $0) }
                done += t.byteCount
                progress(done, total)
            }
        }
        try sink.close()
    }
}

struct BankKey: Hashable {
    let type: WeightType
    let std: Float
}

/// A few thousand real blocks of one type, quantized once from N(0, std^2) values; tensors are
/// filled by drawing whole blocks from it. A unit is one block (32 values for BF16).
struct BlockBank {
    /// Power of two, so a draw is a mask.
    let count: Int
    let unitBytes: Int
    let bytes: [UInt8]

    /// Values quantized per bank: 2^18 (1024 Q4_K blocks, 8192 Q8_0 blocks).
    static let valuesPerBank = 1 << 18

    /// `mean` (one unit's values, or empty): added to every block, a column block's share of a
    /// vector every row carries.
    init(type: WeightType, std: Float, seed: UInt64, mean: [Float] = []) throws {
        let unitValues = max(type.blockSize, 32)
        unitBytes = type.rowBytes(unitValues)!
        count = Self.valuesPerBank / unitValues
        var rng = SynthRandom(seed: SynthRandom.mix(seed, UInt64(type.rawValue) << 32 | UInt64(std.bitPattern)))
        let values = (0..<Self.valuesPerBank).map { i in rng.normal() * std + (mean.isEmpty ? 0 : mean[i % unitValues]) }
        var out = [UInt8](repeating: 0, count: count * unitBytes)
        try values.withUnsafeBufferPointer { v in
            try out.withUnsafeMutableBytes { try quantize(type, v.baseAddress!, count: v.count, into: $0.baseAddress!) }
        }
        bytes = out
    }
}

/// SplitMix64 (the generator of the test support, repeated here for the binary).
struct SynthRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    static func mix(_ a: UInt64, _ b: UInt64) -> UInt64 {
        var r = SynthRandom(seed: a ^ (b &* 0x9E37_79B9_7F4A_7C15))
        return r.next()
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Standard normal (Box-Muller on 24-bit uniforms).
    mutating func normal() -> Float {
        let u = max(Float(next() >> 40) / Float(1 << 24), 1e-7), v = Float(next() >> 40) / Float(1 << 24)
        return (-2 * Foundation.log(u)).squareRoot() * Foundation.cos(2 * .pi * v)
    }
}
