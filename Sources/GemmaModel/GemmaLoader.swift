// Loading one rank's shard from a Hugging Face model directory or a GGUF file: config -> plan
// (refused before any weight is read when it cannot split, including splits that would cut a
// quantization block) -> tensor table check -> each rank copies only its rows/columns from the
// memory-mapped files, in the stored encoding (or quantized on load with `quantize`). Errors
// are agreed across ranks so every rank reports the same text. Formats: WeightSource.swift,
// GGUFModel.swift.
import Foundation
import GemmaFormats
import GemmaKernels
import GemmaParallel

/// Sizes the caller chooses at load.
public struct GemmaLoadOptions: Sendable {
    /// Context per slot; nil or 0 = the model's max_position_embeddings (capped by it).
    public var maxContext: Int?
    /// Concurrent sequences (KV-cache slots).
    public var slots: Int
    /// Most tokens per `forward`.
    public var maxBatchTokens: Int
    /// Compute threads of this rank.
    public var threads: Int
    /// Re-encode safetensors matrices on load (`--quant q8_0|q4_0`); nil keeps the stored dtype.
    /// GGUF files refuse it (their tensors are already encoded).
    public var quantize: WeightType?

    public init(maxContext: Int? = nil, slots: Int = 1, maxBatchTokens: Int = 512, threads: Int = 1, quantize: WeightType? = nil) {
        self.maxContext = maxContext
        self.slots = slots
        self.maxBatchTokens = maxBatchTokens
        self.threads = threads
        self.quantize = quantize
    }
}

public enum GemmaLoadError: Error, CustomStringConvertible, Equatable {
    case badOptions(String)
    case noLMHead

    public var description: String {
        switch self {
        case let .badOptions(m): return m
        case .noLMHead: return "tie_word_embeddings is false but the checkpoint has no lm_head.weight"
        }
    }
}

extension ShardPlan {
    /// The plan of a Gemma 1-3 config over `ranks` ranks (uniform layers). `mlpAlign` > 1
    /// (block-quantized down_proj) allows uneven MLP shards of whole blocks (GEMMA_SPEC A3.1).
    public init(config c: GemmaConfig, ranks: Int, mlpAlign: Int = 1) throws {
        // Per-layer shapes: uniform for Gemma 1-3; Gemma 4 head dims, KV heads, MLP widths per layer.
        try self.init(ranks: ranks, vocabSize: c.vocabSize, layers: c.layerDims,
                      mlpAlign: mlpAlign, allowUnevenMLP: mlpAlign > 1)
    }
}

extension GemmaShard {
    /// Loads this rank's shard of the model at `path`: a GGUF file or a Hugging Face model
    /// directory. Every rank calls it; any rank's failure makes every rank throw
    /// `CommunicatorError.remote` with the same message.
    public static func load(path: URL, comm: any Communicator, options: GemmaLoadOptions = GemmaLoadOptions()) throws -> GemmaShard {
        var shard: GemmaShard?
        var failure: Error?
        do { shard = try loadLocal(path: path, comm: comm, options: options) } catch { failure = error }
        try comm.agree(failure)
        guard let shard else { throw GemmaLoadError.badOptions("loader returned nothing") }
        return shard
    }

    /// `load(path:)` for a Hugging Face directory (kept for callers that know it is one).
    public static func load(directory: URL, comm: any Communicator, options: GemmaLoadOptions = GemmaLoadOptions()) throws -> GemmaShard {
        try load(path: directory, comm: comm, options: options)
    }

    /// The per-rank part of `load`, without agreement (tests that want the raw error).
    public static func loadLocal(path: URL, comm: any Communicator, options: GemmaLoadOptions) throws -> GemmaShard {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path.path, isDirectory: &isDirectory) else {
            throw MappedFileError.cannotOpen(file: path.path, reason: "no such file or directory")
        }
        if isDirectory.boolValue {
            let config = try GemmaConfig.load(directory: path)
            try config.checkSupported()
            let plan = try ShardPlan(config: config, ranks: comm.size, mlpAlign: options.quantize?.blockSize ?? 1)
            try checkOptions(options)
            if let q = options.quantize, ![.q8_0, .q4_0, .f16, .bf16, .f32].contains(q) {
                throw ModelLoadError.unsupportedQuantizeType(q.description)
            }
            let source = try SafetensorsWeightSource(directory: path, config: config, quantize: options.quantize)
            return try build(config: config, plan: plan, source: source, comm: comm, options: options,
                             stopTokens: config.stopTokenIds(directory: path))
        }
        let file = try GGUFFile(path: path.path)
        let config = try GemmaConfig(gguf: file)
        try config.checkSupported()
        if options.quantize != nil { throw ModelLoadError.quantizeNeedsSafetensors(path.path) }
        let source = try GGUFWeightSource(file: file, config: config)
        let align = try (0..<config.numHiddenLayers).map { try source.blockSize(.downProj($0)) }.max() ?? 1
        let plan = try ShardPlan(config: config, ranks: comm.size, mlpAlign: align)
        try checkOptions(options)
        return try build(config: config, plan: plan, source: source, comm: comm, options: options,
                         stopTokens: source.stopTokenIds(config: config))
    }

    /// The per-rank part of `load(directory:)`.
    public static func loadLocal(directory: URL, comm: any Communicator, options: GemmaLoadOptions) throws -> GemmaShard {
        try loadLocal(path: directory, comm: comm, options: options)
    }

    static func checkOptions(_ options: GemmaLoadOptions) throws {
        guard options.slots >= 1, options.maxBatchTokens >= 1, options.threads >= 1 else {
            throw GemmaLoadError.badOptions("slots, maxBatchTokens and threads must be at least 1")
        }
    }

    /// Builds this rank's shard from any weight source once config and plan are settled.
    static func build(config: GemmaConfig, plan: ShardPlan, source: any ModelWeightSource, comm: any Communicator,
                      options: GemmaLoadOptions, stopTokens: [Int]) throws -> GemmaShard {
        if !config.tieWordEmbeddings && !source.has(.lmHead) { throw GemmaLoadError.noLMHead }
        let r = comm.rank
        // o_proj is split by its input columns at head boundaries: each rank's range must
        // start and end on a block of o_proj's encoding.
        for i in 0..<config.numHiddenLayers {
            let bs = try source.blockSize(.oProj(i))
            guard bs > 1 else { continue }
            for s in plan.layers[i] {
                let cols = (s.qHeads.lowerBound * s.headDim)..<(s.qHeads.upperBound * s.headDim)
                if cols.lowerBound % bs != 0 || cols.upperBound % bs != 0 {
                    throw ModelLoadError.headsCutBlocks(layer: i, tensor: "o_proj", blockSize: bs,
                                                        columns: cols, ranks: plan.ranks)
                }
            }
        }

        if config.generation == .gemma4 {   // Gemma4Loader.swift (owned by helper gemma4)
            return try buildGemma4(config: config, plan: plan, source: source, comm: comm, options: options, stopTokens: stopTokens)
        }
        func matrix(_ t: LogicalTensor, rows: Range<Int>? = nil, cols: Range<Int>? = nil) throws -> WeightMatrix {
            try source.matrix(t, rows: rows, cols: cols)
        }
        /// A norm vector as its multiplier: 1 + w for Gemma 1-3 safetensors, as stored otherwise.
        func norm(_ t: LogicalTensor) throws -> [Float] {
            let w = try source.vector(t)
            return config.normAddsOne ? w.map { 1 + $0 } : w
        }

        var layers: [LayerWeights] = []
        for i in 0..<config.numHiddenLayers {
            let s = plan.layers[i][r]
            let d = s.headDim
            let qRows = (s.qHeads.lowerBound * d)..<(s.qHeads.upperBound * d)
            let kvRows = (s.kvHeads.lowerBound * d)..<(s.kvHeads.upperBound * d)
            layers.append(LayerWeights(
                type: config.layerTypes[i], shard: s,
                inputNorm: try norm(.inputNorm(i)),
                postAttentionNorm: try norm(.postAttentionNorm(i)),
                preFeedforwardNorm: config.hasPostNorms ? try norm(.preFeedforwardNorm(i)) : [],
                postFeedforwardNorm: config.hasPostNorms ? try norm(.postFeedforwardNorm(i)) : [],
                qNorm: config.hasQKNorm ? try norm(.qNorm(i)) : [],
                kNorm: config.hasQKNorm ? try norm(.kNorm(i)) : [],
                q: ColumnParallelLinear(weight: try matrix(.qProj(i), rows: qRows)),
                k: ColumnParallelLinear(weight: try matrix(.kProj(i), rows: kvRows)),
                v: ColumnParallelLinear(weight: try matrix(.vProj(i), rows: kvRows)),
                o: RowParallelLinear(weight: try matrix(.oProj(i), cols: qRows)),
                gate: ColumnParallelLinear(weight: try matrix(.gateProj(i), rows: s.mlpColumns)),
                up: ColumnParallelLinear(weight: try matrix(.upProj(i), rows: s.mlpColumns)),
                down: RowParallelLinear(weight: try matrix(.downProj(i), cols: s.mlpColumns))))
        }
        return try assemble(config: config, plan: plan, source: source, comm: comm, options: options, layers: layers,
                            ple: nil, finalNorm: try norm(.finalNorm), stopTokens: stopTokens)
    }

    /// The part every generation shares once its layers are loaded: this rank's embedding rows,
    /// the LM head rows when untied, then the shard with its KV cache and scratch.
    static func assemble(config: GemmaConfig, plan: ShardPlan, source: any ModelWeightSource, comm: any Communicator,
                         options: GemmaLoadOptions, layers: [LayerWeights], ple: PLEWeights?, finalNorm: [Float],
                         stopTokens: [Int]) throws -> GemmaShard {
        let requested = options.maxContext ?? 0
        let maxContext = requested > 0 ? min(requested, config.maxPositionEmbeddings) : config.maxPositionEmbeddings
        let vocab = plan.vocabRanges[comm.rank]
        let embedding = VocabParallelEmbedding(weight: try source.matrix(.embedTokens, rows: vocab, cols: nil), vocabRange: vocab)
        var lmHead: VocabParallelEmbedding?
        if source.has(.lmHead) {
            lmHead = VocabParallelEmbedding(weight: try source.matrix(.lmHead, rows: vocab, cols: nil), vocabRange: vocab)
        }
        let shard = GemmaShard(config: config, plan: plan, comm: comm, pool: ThreadPool(threads: options.threads), layers: layers,
                               embedding: embedding, lmHead: lmHead, finalNorm: finalNorm,
                               maxContext: maxContext, slots: options.slots, maxBatchTokens: options.maxBatchTokens, ple: ple)
        shard.stopTokenIds = stopTokens
        return shard
    }

    /// Bytes of weights this rank holds.
    public var weightBytes: Int {
        var total = embedding.weight.byteCount + (lmHead?.weight.byteCount ?? 0) + finalNorm.count * 4
        for l in layers {
            total += [l.q.weight, l.k.weight, l.v.weight, l.o.weight, l.gate.weight, l.up.weight, l.down.weight].reduce(0) { $0 + $1.byteCount }
            total += 4 * (l.inputNorm.count + l.postAttentionNorm.count + l.preFeedforwardNorm.count + l.postFeedforwardNorm.count + l.qNorm.count + l.kNorm.count)
        }
        return total + gemma4ExtraWeightBytes
    }

    /// Bytes of K and V this rank caches per token of one slot.
    public var kvBytesPerToken: Int { cache.bytesPerToken }
}
