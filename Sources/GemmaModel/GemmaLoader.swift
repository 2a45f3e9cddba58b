// Loading one rank's shard from a Hugging Face model directory or a GGUF file: config -> plan
// (refused before any weight is read when it cannot split, including splits that would cut a
// quantization block) -> tensor table check -> each rank copies only its rows/columns from the
// memory-mapped files, in the stored encoding (or quantized on load with `quantize`). Errors
// are agreed across ranks so every rank reports the same text. Which tensors a config has and
// how each is split: TensorTable.swift; formats: WeightSource.swift, GGUFMetadata.swift.
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
    /// One positive share per rank (`--split`): rank r gets about split[r] / sum(split) of the
    /// query heads, MLP columns, vocabulary and KV cache (ShardPlan's uneven split); nil is the
    /// even split.
    public var split: [Double]?
    /// `--weights-from-root`: rank 0 reads the model and sends every rank its slices over the
    /// communicator (RootWeightSource.swift); other ranks need no copy of the file.
    public var weightsFromRoot: Bool
    /// With `weightsFromRoot`: a worker's slice travels in pieces of whole rows of at most this
    /// many values (4M: 16 MiB even as f32), bounding what rank 0 holds beyond its own share.
    public var streamPieceValues = 1 << 22

    /// How the KV cache stores keys and values (`--kv-type`); f16 by default, as llama.cpp.
    /// Every rank must load with the same type (`load` checks).
    public var kvType: KVCacheType

    /// `--overlap on`: a batch of at least `GemmaShard.overlapMinimumRows` rows runs each dense
    /// layer as two halves, so one half's all-reduces travel while the other half computes.
    public var overlap = false

    public init(maxContext: Int? = nil, slots: Int = 1, maxBatchTokens: Int = 512, threads: Int = 1, quantize: WeightType? = nil,
                split: [Double]? = nil, kvType: KVCacheType = .f16, weightsFromRoot: Bool = false, overlap: Bool = false) {
        self.weightsFromRoot = weightsFromRoot
        self.overlap = overlap
        self.maxContext = maxContext
        self.slots = slots
        self.maxBatchTokens = maxBatchTokens
        self.threads = threads
        self.quantize = quantize
        self.split = split
        self.kvType = kvType
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
    /// The plan of a config over `ranks` ranks. `mlpAlign` > 1 (block-quantized down_proj)
    /// allows uneven MLP shards of whole blocks (GEMMA_SPEC A3.1). `split` (one share per
    /// rank) asks for the uneven split in those shares instead of the even one.
    public init(config c: GemmaConfig, ranks: Int, mlpAlign: Int = 1, split: [Double]? = nil) throws {
        // Per-layer shapes: uniform for Gemma 1-3; Gemma 4 head dims, KV heads, MLP widths per layer.
        try self.init(ranks: ranks, vocabSize: c.vocabSize, layers: c.layerDims,
                      mlpAlign: mlpAlign, allowUnevenMLP: mlpAlign > 1, weights: split)
    }
}

extension GemmaShard {
    /// Loads this rank's shard of the model at `path`: a GGUF file or a Hugging Face model
    /// directory. Every rank calls it; any rank's failure makes every rank throw
    /// `CommunicatorError.remote` with the same message.
    public static func load(path: URL, comm: any Communicator, options: GemmaLoadOptions = GemmaLoadOptions()) throws -> GemmaShard {
        var shard: GemmaShard?
        var failure: Error?
        // Ranks that cached in different types would still agree on every message but compute
        // different attention: refused on every rank with the types each asked for.
        let asked = try comm.allGather([Float(KVCacheType.allCases.firstIndex(of: options.kvType)!)])
        if Set(asked).count > 1 {
            let names = asked.map { KVCacheType.allCases[Int($0)].rawValue }
            try comm.agree(GemmaLoadError.badOptions("ranks disagree on --kv-type (rank order: \(names.joined(separator: ", "))); every rank must use the same type"))
        }
        do { shard = try loadLocal(path: path, comm: comm, options: options) } catch { failure = error }
        try comm.agree(failure)
        guard let shard else { throw GemmaLoadError.badOptions("loader returned nothing") }
        WeightArena.pack(shard.weightBuffers)  // small matrices onto huge pages, in reading order
        releaseFreeHeapMemory()  // the loading temporaries' freed heap (see there)
        return shard
    }

    /// `load(path:)` for a Hugging Face directory (kept for callers that know it is one).
    public static func load(directory: URL, comm: any Communicator, options: GemmaLoadOptions = GemmaLoadOptions()) throws -> GemmaShard {
        try load(path: directory, comm: comm, options: options)
    }

    /// The per-rank part of `load`, without agreement (tests that want the raw error).
    public static func loadLocal(path: URL, comm: any Communicator, options: GemmaLoadOptions) throws -> GemmaShard {
        try checkOptions(options)
        let opened: (source: any ModelWeightSource, config: GemmaConfig, mlpAlign: Int, stopTokens: [Int])
        if options.weightsFromRoot && comm.size > 1 {
            // Only rank 0 opens the file; the others never look at `path`.
            let source = try RootStreamedWeightSource.connect(path: path.path, comm: comm) {
                try open(path: path, options: options)
            }
            source.chunkValues = options.streamPieceValues
            let m = source.manifest
            try checkStreamable(config: m.config, source: source, ranks: comm.size)
            opened = (source, m.config, m.mlpAlign, m.stopTokens)
        } else if ShardFiles.isShardDirectory(path) {
            // `gemma-node shard` output: this rank's own file holds exactly its slices.
            if options.quantize != nil { throw ModelLoadError.quantizeNeedsSafetensors(path.path) }
            let source = try ShardFileWeightSource(directory: path, rank: comm.rank, ranks: comm.size, split: options.split)
            let m = source.manifest
            opened = (source, m.config, m.mlpAlign, m.stopTokens)
        } else {
            opened = try open(path: path, options: options)
        }
        let plan = try ShardPlan(config: opened.config, ranks: comm.size, mlpAlign: opened.mlpAlign, split: options.split)
        try checkKVType(options.kvType, config: opened.config)
        return try build(config: opened.config, plan: plan, source: opened.source, comm: comm, options: options,
                         stopTokens: opened.stopTokens)
    }

    /// Opens a GGUF file or a Hugging Face directory as a weight source, with its config, the
    /// block size MLP splits must respect and the ids that end generation.
    static func open(path: URL, options: GemmaLoadOptions) throws
        -> (source: any ModelWeightSource, config: GemmaConfig, mlpAlign: Int, stopTokens: [Int]) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path.path, isDirectory: &isDirectory) else {
            throw MappedFileError.cannotOpen(file: path.path, reason: "no such file or directory")
        }
        if isDirectory.boolValue {
            let config = try GemmaConfig.load(directory: path)
            try config.checkSupported()
            if let q = options.quantize, ![.q8_0, .q4_0, .f16, .bf16, .f32].contains(q) {
                throw ModelLoadError.unsupportedQuantizeType(q.description)
            }
            let source = try SafetensorsWeightSource(directory: path, config: config, quantize: options.quantize)
            return (source, config, options.quantize?.blockSize ?? 1, config.stopTokenIds(directory: path))
        }
        let file = try GGUFFile(path: path.path)
        let config = try GemmaConfig(gguf: file)
        try config.checkSupported()
        if options.quantize != nil { throw ModelLoadError.quantizeNeedsSafetensors(path.path) }
        let source = try GGUFWeightSource(file: file, config: config)
        let align = try (0..<config.numHiddenLayers).map { try source.blockSize(.downProj($0)) }.max() ?? 1
        return (source, config, align, source.stopTokenIds(config: config))
    }

    /// Streaming needs every rank to ask for the same tensors in the same order. MoE layers
    /// split by whole experts (when expert blocks cannot be cut per rank) read a different
    /// number of experts per rank, so they are refused rather than left to hang.
    static func checkStreamable(config: GemmaConfig, source: any ModelWeightSource, ranks: Int) throws {
        guard config.isMoE else { return }
        let dims = try MoEDims(config: config)
        let block = try (0..<config.numHiddenLayers).map { try source.blockSize(.expertsDown($0)) }.max() ?? 1
        if try MoEPlan.shards(dims: dims, ranks: ranks, blockSize: block).strategy != .columnSplit {
            throw RootStreamError.unsupported("this MoE model splits by whole experts at \(ranks) ranks (expert blocks cannot be cut per rank); every rank needs the file")
        }
    }

    /// The per-rank part of `load(directory:)`.
    public static func loadLocal(directory: URL, comm: any Communicator, options: GemmaLoadOptions) throws -> GemmaShard {
        try loadLocal(path: directory, comm: comm, options: options)
    }

    /// q8_0 stores blocks of 32 values per head row: a head dim that is not a multiple of 32
    /// is refused before any weight is read (f32 and f16 hold any head dim).
    static func checkKVType(_ type: KVCacheType, config: GemmaConfig) throws {
        for (i, dims) in config.layerDims.enumerated() where !type.holds(headDim: dims.headDim) {
            throw GemmaLoadError.badOptions("--kv-type \(type) stores blocks of \(type.blockSize) values, but layer \(i) has head dim \(dims.headDim) (not a multiple of \(type.blockSize)); use --kv-type f16 or f32")
        }
    }

    static func checkOptions(_ options: GemmaLoadOptions) throws {
        guard options.slots >= 1, options.maxBatchTokens >= 1, options.threads >= 1 else {
            throw GemmaLoadError.badOptions("slots, maxBatchTokens and threads must be at least 1")
        }
    }

    /// Builds this rank's shard from any weight source once config and plan are settled: one
    /// loop for every generation (TensorTable.swift says which tensors a config has), each
    /// matrix cut to this rank's rows or columns by its table row's split.
    static func build(config: GemmaConfig, plan: ShardPlan, source: any ModelWeightSource, comm: any Communicator,
                      options: GemmaLoadOptions, stopTokens: [Int]) throws -> GemmaShard {
        if !config.tieWordEmbeddings && !source.has(.lmHead) { throw GemmaLoadError.noLMHead }
        let r = comm.rank, h = config.hiddenSize
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

        let splits = Dictionary(TensorTable.specs(for: config).map { ($0.tensor, $0.split) }, uniquingKeysWith: { first, _ in first })
        /// This rank's rows and columns of `t` (nil = all), by its split; `s` is the layer's shard.
        func slice(_ t: LogicalTensor, _ s: LayerShard? = nil) throws -> (rows: Range<Int>?, cols: Range<Int>?) {
            let d = s?.headDim ?? 0
            let qRange = s.map { ($0.qHeads.lowerBound * d)..<($0.qHeads.upperBound * d) }
            switch splits[t] ?? .replicated {
            case .replicated, .experts: return (nil, nil)   // experts: MoEBlock.load reads its own slices
            case .rowsByQueryHeads: return (qRange, nil)
            case .colsByQueryHeads: return (nil, qRange)
            case .rowsByKVHeads: return (s.map { ($0.kvHeads.lowerBound * d)..<($0.kvHeads.upperBound * d) }, nil)
            case .rowsByMLP: return (s?.mlpColumns, nil)
            case .colsByMLP: return (nil, s?.mlpColumns)
            case .rowsByVocab: return (plan.vocabRanges[r], nil)
            case .rowsByPLEVocab:
                return (try ShardPlan.partition(config.perLayerVocabSize, ranks: comm.size, dimension: "vocab_size_per_layer_input",
                                                unit: 1, uneven: true)[r], nil)
            }
        }
        func matrix(_ t: LogicalTensor, _ s: LayerShard? = nil) throws -> WeightMatrix {
            let (rows, cols) = try slice(t, s)
            return try source.matrix(t, rows: rows, cols: cols)
        }
        /// A norm vector as its multiplier: 1 + w for Gemma 1-3 safetensors, as stored otherwise.
        func norm(_ t: LogicalTensor) throws -> [Float] {
            let w = try source.vector(t)
            return config.normAddsOne ? w.map { 1 + $0 } : w
        }
        /// Stand-in for a projection the layer does not have (KV consumers, k_eq_v's v_proj).
        func absent() throws -> ColumnParallelLinear { ColumnParallelLinear(weight: try WeightMatrix(type: .f32, rows: 0, cols: h)) }

        // MoE: experts split by columns (every rank holds a 1/N slice of every expert: balanced
        // whatever the routing; docs/MOE.md), or whole experts per rank when the expert down
        // projection's quant blocks cannot be cut per rank; router replicated; one scratch.
        var moeDims: MoEDims?, moeShard: MoERankShard?
        let moeScratch = MoEScratch()
        if config.isMoE {
            let dims = try MoEDims(config: config)
            let block = try (0..<config.numHiddenLayers).map { try source.blockSize(.expertsDown($0)) }.max() ?? 1
            moeDims = dims
            moeShard = try MoEPlan.shards(dims: dims, ranks: comm.size, blockSize: block).shards[r]
        }
        let box = UnsafeSendableBox(source)

        var layers: [LayerWeights] = []
        for i in 0..<config.numHiddenLayers {
            let s = plan.layers[i][r]
            let ownKV = config.hasOwnKV(i), ownV = config.hasVProj(i)
            var scalar: Float = 1
            if config.hasLayerScalar {
                let stored = try source.vector(.layerScalar(i))
                guard stored.count == 1 else { throw TensorTableError.wrongShape(name: "layers.\(i).layer_scalar", expected: [1], got: [stored.count]) }
                scalar = stored[0]
            }
            var ple: PLELayerWeights?
            if config.perLayerInputSize > 0 {
                ple = PLELayerWeights(gate: try matrix(.perLayerInputGate(i)), projection: try matrix(.perLayerProjection(i)),
                                      postNorm: try norm(.postPerLayerInputNorm(i)))
            }
            var moe: MoEBlock?
            if let moeDims, let moeShard {
                // The 3-D expert tensors are read as their 2-D views ([E·2Ie, H], [E·H, Ie]).
                let reader = MoETensorReader(
                    matrix: { t, rows, cols in try box.value.matrix(t.logical(layer: i), rows: rows, cols: cols) },
                    floats: { t in try box.value.vector(t.logical(layer: i)) })
                moe = try MoEBlock.load(dims: moeDims, shard: moeShard, read: reader, scratch: moeScratch)
            }
            layers.append(LayerWeights(
                type: config.layerTypes[i], shard: s,
                inputNorm: try norm(.inputNorm(i)),
                postAttentionNorm: try norm(.postAttentionNorm(i)),
                preFeedforwardNorm: config.hasPostNorms ? try norm(.preFeedforwardNorm(i)) : [],
                postFeedforwardNorm: config.hasPostNorms ? try norm(.postFeedforwardNorm(i)) : [],
                qNorm: config.hasQKNorm ? try norm(.qNorm(i)) : [],
                kNorm: config.hasQKNorm && ownKV ? try norm(.kNorm(i)) : [],
                q: ColumnParallelLinear(weight: try matrix(.qProj(i), s)),
                k: ownKV ? ColumnParallelLinear(weight: try matrix(.kProj(i), s)) : try absent(),
                v: ownV ? ColumnParallelLinear(weight: try matrix(.vProj(i), s)) : try absent(),
                o: RowParallelLinear(weight: try matrix(.oProj(i), s)),
                gate: ColumnParallelLinear(weight: try matrix(.gateProj(i), s)),
                up: ColumnParallelLinear(weight: try matrix(.upProj(i), s)),
                down: RowParallelLinear(weight: try matrix(.downProj(i), s)),
                kvSource: ownKV ? nil : config.kvSourceLayer(i),
                hasVProj: ownV,
                layerScalar: scalar,
                ple: ple,
                moe: moe,
                postFeedforwardNorm1: moe == nil ? [] : try norm(.postFeedforwardNorm1(i)),
                postFeedforwardNorm2: moe == nil ? [] : try norm(.postFeedforwardNorm2(i))))
        }
        var ple: PLEWeights?
        if config.perLayerInputSize > 0 {
            let rows = try slice(.perLayerEmbedding).rows ?? 0..<config.perLayerVocabSize
            ple = PLEWeights(table: VocabParallelEmbedding(weight: try source.matrix(.perLayerEmbedding, rows: rows, cols: nil), vocabRange: rows),
                             modelProjection: try matrix(.perLayerModelProjection),
                             projectionNorm: try norm(.perLayerProjectionNorm),
                             vocabSize: config.perLayerVocabSize)
        }
        return try assemble(config: config, plan: plan, source: source, comm: comm, options: options, layers: layers,
                            ple: ple, finalNorm: try norm(.finalNorm), stopTokens: stopTokens)
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
                               maxContext: maxContext, slots: options.slots, maxBatchTokens: options.maxBatchTokens, ple: ple,
                               kvType: options.kvType)
        shard.stopTokenIds = stopTokens
        shard.overlap = options.overlap
        return shard
    }

    /// Bytes of weights this rank reads to decode one token, by the planner's rule
    /// (`RankReport.decodeReadBytes`): everything it holds, except lookup tables (with a
    /// separate LM head the embedding table, and Gemma 4's PLE table: one row each) and MoE
    /// experts (the top-k of them: topK / numExperts of their bytes). `bench`'s roofline divides
    /// the measured bandwidth by it.
    public var weightBytesReadPerToken: Int {
        var read = weightBytes
        if lmHead != nil { read -= embedding.weight.byteCount - embedding.weight.rowBytes }
        if let ple { read -= ple.table.weight.byteCount - ple.table.weight.rowBytes }
        let active = config.activeExpertFraction
        for l in layers {
            if let m = l.moe { read -= m.expertBytes - Int((Double(m.expertBytes) * active).rounded()) }
        }
        return read
    }

    /// Every weight buffer this rank holds, in the order a decode step reads them (embedding,
    /// PLE model projection, per layer attention, MLP, experts, PLE injection; then the LM
    /// head and the PLE table), for `WeightArena.pack`. A tied LM head is the embedding
    /// (`lmHead` nil), so no buffer is listed twice.
    var weightBuffers: [AlignedBuffer] {
        var out: [AlignedBuffer] = [embedding.weight.storage]
        if let ple { out.append(ple.modelProjection.storage) }
        for l in layers {
            out += [l.q.weight, l.k.weight, l.v.weight, l.o.weight, l.gate.weight, l.up.weight, l.down.weight].map(\.storage)
            if let m = l.moe {
                out.append(m.router.proj.storage)
                for e in m.experts { out += [e.gateUp.storage, e.down.storage] }
            }
            if let p = l.ple { out += [p.gate.storage, p.projection.storage] }
        }
        if let lmHead { out.append(lmHead.weight.storage) }
        if let ple { out.append(ple.table.weight.storage) }
        return out
    }

    /// Bytes of weights this rank holds: its weight buffers (`weightBuffers`, so a matrix
    /// missing there would show as a difference from the planner's figure) and its f32 norms
    /// and scalars.
    public var weightBytes: Int {
        let total = weightBuffers.reduce(0) { $0 + $1.byteCount }  // no buffer is listed twice
        var floats = finalNorm.count
        for l in layers {
            floats += l.inputNorm.count + l.postAttentionNorm.count + l.preFeedforwardNorm.count + l.postFeedforwardNorm.count
            floats += l.qNorm.count + l.kNorm.count
            if let p = l.ple { floats += p.postNorm.count }
            if config.hasLayerScalar { floats += 1 }
            if let m = l.moe {
                floats += m.router.scale.count + m.router.perExpertScale.count + m.preNorm.count
                floats += l.postFeedforwardNorm1.count + l.postFeedforwardNorm2.count
            }
        }
        if let ple { floats += ple.projectionNorm.count }
        return total + 4 * floats
    }

    /// Bytes of K and V this rank caches per token of one slot.
    public var kvBytesPerToken: Int { cache.bytesPerToken }
}
