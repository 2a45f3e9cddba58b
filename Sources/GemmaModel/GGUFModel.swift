// GGUF files (llama.cpp / Ollama) as a model: metadata -> the same `GemmaConfig` a config.json
// gives (through `init(configDictionary:)`, renaming keys), tensor names -> the same
// `LogicalTensor` cases, shapes checked against the same table. GEMMA_SPEC §4.3, §4.4, A1.1, A1.2.
//
// Facts a GGUF does not store, and the rule used (the one llama.cpp uses):
// - Norm weights of gemma/gemma2/gemma3 files already hold the multiplier (1 + w): normAddsOne = false.
// - query_pre_attn_scalar: head_dim, except the 27B size class (Gemma 2: 46 layers, Gemma 3: 62
//   layers) where it is hidden_size / num_heads.
// - Gemma 3 sliding-layer RoPE base: rope.freq_base_swa when present, else 10000; the layer pattern:
//   attention.sliding_window_pattern when present, else every 6th layer global.
// - Linear RoPE scaling applies to global layers only (as GemmaConfig does for config.json).
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
        if arch == "gemma4" {   // Gemma4GGUF.swift (helper gemma4)
            let dict = try Self.gemma4Dictionary(gguf: f)
            do { self = try GemmaConfig(configDictionary: dict) } catch { throw ModelLoadError.badMetadata(file: f.path, reason: "\(error)") }
            normAddsOne = false
            return
        }
        func key(_ k: String) -> String { "\(arch).\(k)" }
        func optInt(_ k: String) throws -> Int? { f.value(key(k)) == nil ? nil : try f.int(key(k)) }
        func optDouble(_ k: String) throws -> Double? { f.value(key(k)) == nil ? nil : try f.float(key(k)) }

        let embedding = try f.tensor("token_embd.weight")
        guard embedding.dims.count == 2 else {
            throw ModelLoadError.badMetadata(file: f.path, reason: "token_embd.weight has \(embedding.dims.count) dimensions, expected 2")
        }
        let hidden = try f.int(key("embedding_length"))
        let layers = try f.int(key("block_count"))
        let heads = try f.int(key("attention.head_count"))
        // head_count_kv may be absent (= head_count) or, in some converters, a per-layer array.
        var kvHeads = heads
        if let v = f.value(key("attention.head_count_kv")) {
            if let one = v.intValue {
                kvHeads = one
            } else {
                let all = try f.intArray(key("attention.head_count_kv"))
                guard let first = all.first, all.allSatisfy({ $0 == first }) else {
                    throw ModelLoadError.badMetadata(file: f.path, reason: "\(key("attention.head_count_kv")) differs between layers, which \(arch) does not do")
                }
                kvHeads = first
            }
        }
        guard heads > 0, layers > 0, hidden > 0 else {
            throw ModelLoadError.badMetadata(file: f.path, reason: "block_count, embedding_length and attention.head_count must be positive")
        }
        let headDim = try optInt("attention.key_length") ?? hidden / heads
        var dict: [String: Any] = [
            "model_type": arch,
            "vocab_size": embedding.dims[1],
            "hidden_size": hidden,
            "intermediate_size": try f.int(key("feed_forward_length")),
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kvHeads,
            "head_dim": headDim,
            "rms_norm_eps": try optDouble("attention.layer_norm_rms_epsilon") ?? 1e-6,
            "max_position_embeddings": try optInt("context_length") ?? 8192,
            "hidden_activation": "gelu_pytorch_tanh",
            "tie_word_embeddings": !f.hasTensor("output.weight"),
            // Absent soft-caps mean "off" in a GGUF (the converter writes them only when set).
            "attn_logit_softcapping": try optDouble("attn_logit_softcapping") ?? NSNull(),
            "final_logit_softcapping": try optDouble("final_logit_softcapping") ?? NSNull(),
        ]
        if f.value("tokenizer.ggml.bos_token_id") != nil { dict["bos_token_id"] = try f.int("tokenizer.ggml.bos_token_id") }
        if f.value("tokenizer.ggml.eos_token_id") != nil { dict["eos_token_id"] = try f.int("tokenizer.ggml.eos_token_id") }

        let bigSizeClass = (arch == "gemma2" && layers == 46) || (arch == "gemma3" && layers == 62)
        dict["query_pre_attn_scalar"] = bigSizeClass ? Double(hidden / heads) : Double(headDim)

        // Layer types.
        let window = try optInt("attention.sliding_window")
        var sliding = [Bool](repeating: false, count: layers)
        switch arch {
        case "gemma2":
            sliding = (0..<layers).map { $0 % 2 == 0 }
        case "gemma3":
            if window != nil {
                if let v = f.value(key("attention.sliding_window_pattern")) {
                    if let p = v.intValue {
                        sliding = (0..<layers).map { p > 0 && ($0 + 1) % p != 0 }
                    } else {
                        let flags = try f.boolArray(key("attention.sliding_window_pattern"))
                        guard flags.count == layers else {
                            throw ModelLoadError.badMetadata(file: f.path, reason: "\(key("attention.sliding_window_pattern")) has \(flags.count) entries for \(layers) layers")
                        }
                        sliding = flags
                    }
                } else {
                    sliding = (0..<layers).map { ($0 + 1) % 6 != 0 }
                }
            }
        default:
            break
        }
        if sliding.contains(true) {
            guard let window, window > 0 else {
                throw ModelLoadError.badMetadata(file: f.path, reason: "\(key("attention.sliding_window")) is missing but \(arch) has sliding-window layers")
            }
            dict["sliding_window"] = window
        }
        dict["layer_types"] = sliding.map { $0 ? LayerType.sliding.rawValue : LayerType.full.rawValue }

        // RoPE: one base for Gemma 1/2, global + local bases for Gemma 3.
        let theta = try optDouble("rope.freq_base") ?? 10000
        var full: [String: Any] = ["rope_type": "default", "rope_theta": theta]
        if f.value(key("rope.scaling.type")) != nil, try f.string(key("rope.scaling.type")) == "linear",
           let factor = try optDouble("rope.scaling.factor"), factor != 1 {
            full["rope_type"] = "linear"
            full["factor"] = factor
        }
        let local: [String: Any] = arch == "gemma3"
            ? ["rope_type": "default", "rope_theta": try optDouble("rope.freq_base_swa") ?? 10000]
            : full
        dict["rope_parameters"] = [LayerType.full.rawValue: full, LayerType.sliding.rawValue: local]

        do {
            self = try GemmaConfig(configDictionary: dict)
        } catch {
            throw ModelLoadError.badMetadata(file: f.path, reason: "\(error)")
        }
        normAddsOne = false
    }
}

/// The GGUF names of the logical tensors of one architecture (GEMMA_SPEC §4.3).
enum GGUFTensorNames {
    static func name(_ t: LogicalTensor, generation: GemmaGeneration) -> String {
        switch t {
        case .embedTokens: return "token_embd.weight"
        case .finalNorm: return "output_norm.weight"
        case .lmHead: return "output.weight"
        case let .inputNorm(i): return "blk.\(i).attn_norm.weight"
        // Gemma 1's pre-MLP norm is HF's post_attention_layernorm and GGUF's ffn_norm.
        case let .postAttentionNorm(i): return generation == .gemma1 ? "blk.\(i).ffn_norm.weight" : "blk.\(i).post_attention_norm.weight"
        case let .preFeedforwardNorm(i): return "blk.\(i).ffn_norm.weight"
        case let .postFeedforwardNorm(i): return "blk.\(i).post_ffw_norm.weight"
        case let .qProj(i): return "blk.\(i).attn_q.weight"
        case let .kProj(i): return "blk.\(i).attn_k.weight"
        case let .vProj(i): return "blk.\(i).attn_v.weight"
        case let .oProj(i): return "blk.\(i).attn_output.weight"
        case let .qNorm(i): return "blk.\(i).attn_q_norm.weight"
        case let .kNorm(i): return "blk.\(i).attn_k_norm.weight"
        case let .gateProj(i): return "blk.\(i).ffn_gate.weight"
        case let .upProj(i): return "blk.\(i).ffn_up.weight"
        case let .downProj(i): return "blk.\(i).ffn_down.weight"
        // Gemma 4 (GEMMA_SPEC §4.3, A1.3)
        case .perLayerEmbedding: return "per_layer_token_embd.weight"
        case .perLayerModelProjection: return "per_layer_model_proj.weight"
        case .perLayerProjectionNorm: return "per_layer_proj_norm.weight"
        case let .perLayerInputGate(i): return "blk.\(i).inp_gate.weight"
        case let .perLayerProjection(i): return "blk.\(i).proj.weight"
        case let .postPerLayerInputNorm(i): return "blk.\(i).post_norm.weight"
        case let .layerScalar(i): return "blk.\(i).layer_output_scale.weight"
        case let .routerProj(i): return "blk.\(i).ffn_gate_inp.weight"
        case let .routerScale(i): return "blk.\(i).ffn_gate_inp.scale"
        case let .routerPerExpertScale(i): return "blk.\(i).ffn_down_exps.scale"
        case let .expertsGateUp(i): return "blk.\(i).ffn_gate_up_exps.weight"
        case let .expertsDown(i): return "blk.\(i).ffn_down_exps.weight"
        case let .preFeedforwardNorm2(i): return "blk.\(i).pre_ffw_norm_2.weight"
        case let .postFeedforwardNorm1(i): return "blk.\(i).post_ffw_norm_1.weight"
        case let .postFeedforwardNorm2(i): return "blk.\(i).post_ffw_norm_2.weight"
        }
    }
}

/// A GGUF file as a weight source: rank slices are read from the file (pread) in the stored
/// encoding (split on block boundaries), so no source page enters the rank's resident set.
final class GGUFWeightSource: ModelWeightSource {
    let file: GGUFFile
    var path: String { file.path }
    let tensors: [LogicalTensor: GGUFTensorInfo]

    /// Checks every tensor against the table for `config`: missing, unexpected, wrongly shaped
    /// or of a type this program cannot read are errors naming the file and the tensor.
    init(file: GGUFFile, config: GemmaConfig) throws {
        self.file = file
        var found: [LogicalTensor: GGUFTensorInfo] = [:]
        var specs = TensorNames.table(for: config)
        if !config.tieWordEmbeddings {
            specs.append(TensorSpec(tensor: .lmHead, name: "lm_head.weight", shape: [config.vocabSize, config.hiddenSize], split: .rowsByVocab))
        }
        var unclaimed = Set(file.tensors.map(\.name))
        for spec in specs {
            let name = GGUFTensorNames.name(spec.tensor, generation: config.generation)
            guard let info = try? file.tensor(name) else {
                throw ModelLoadError.badMetadata(file: file.path, reason: "tensor \(name) (\(spec.name)) is missing")
            }
            let shape = Array(info.dims.reversed())
            let expected = spec.shape
            guard shape == expected else {
                throw ModelLoadError.badMetadata(file: file.path, reason: "tensor \(name) has shape \(shape), expected \(expected) (\(spec.name))")
            }
            _ = try file.weightType(of: info)
            guard info.rowByteCount != nil else {
                throw ModelLoadError.badMetadata(file: file.path, reason: "tensor \(name): rows of \(info.columns) values are not whole \(info.type?.description ?? "?") blocks")
            }
            found[spec.tensor] = info
            unclaimed.remove(name)
        }
        if config.generation == .gemma4 { unclaimed = unclaimed.filter { !GemmaConfig.gemma4IgnorableGGUFTensor($0, config: config) } }
        if let extra = unclaimed.sorted().first {
            throw ModelLoadError.badMetadata(file: file.path, reason: "unexpected tensor \(extra) (not part of a \(config.generation.rawValue) text decoder)")
        }
        tensors = found
    }

    private func info(_ t: LogicalTensor) throws -> GGUFTensorInfo {
        guard let i = tensors[t] else { throw ModelLoadError.badMetadata(file: path, reason: "no tensor for \(t)") }
        return i
    }

    func has(_ t: LogicalTensor) -> Bool { tensors[t] != nil }

    func matrix(_ t: LogicalTensor, rows: Range<Int>?, cols: Range<Int>?) throws -> WeightMatrix {
        let i = try info(t)
        return try file.weightMatrix(of: i, rows: rows, columns: cols)
    }

    func vector(_ t: LogicalTensor) throws -> [Float] {
        let i = try info(t)
        let type = try file.weightType(of: i)
        let bytes = try file.columnBytes(of: i, rows: 0..<i.rows, columns: 0..<i.columns)
        var out = [Float](repeating: 0, count: i.elementCount)
        bytes.withUnsafeBytes { raw in
            guard let src = raw.baseAddress else { return }
            out.withUnsafeMutableBufferPointer { buf in
                if let p = buf.baseAddress { dequantize(type, src, count: i.elementCount, into: p) }
            }
        }
        return out
    }

    func blockSize(_ t: LogicalTensor) throws -> Int { try file.weightType(of: try info(t)).blockSize }

    /// Ids that end generation: EOS, the end-of-turn id if the file names one, and the id of
    /// `<end_of_turn>` (llama.cpp treats it as end of generation for Gemma).
    func stopTokenIds(config: GemmaConfig) -> [Int] {
        var ids = config.eosTokenIds
        if let eot = file.value("tokenizer.ggml.eot_token_id")?.intValue { ids.append(eot) }
        // Found in the file's bytes: decoding the vocabulary here would cost every rank ~37 MiB.
        if let i = file.firstIndex(of: "<end_of_turn>", inStringArray: "tokenizer.ggml.tokens") {
            ids.append(i)
        }
        var seen = Set<Int>()
        return ids.filter { seen.insert($0).inserted }
    }
}
