// Loading one rank's shard from a Hugging Face model directory: config -> plan (refused
// before any weight is read when it cannot split) -> tensor table check -> each rank copies
// only its rows/columns from the memory-mapped files, in the stored dtype. Errors are agreed
// across ranks so every rank reports the same text.
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

    public init(maxContext: Int? = nil, slots: Int = 1, maxBatchTokens: Int = 512, threads: Int = 1) {
        self.maxContext = maxContext
        self.slots = slots
        self.maxBatchTokens = maxBatchTokens
        self.threads = threads
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
    /// The plan of a Gemma 1-3 config over `ranks` ranks (uniform layers).
    public init(config c: GemmaConfig, ranks: Int) throws {
        let dims = LayerDims(numHeads: c.numAttentionHeads, numKVHeads: c.numKeyValueHeads, headDim: c.headDim,
                             intermediateSize: c.intermediateSize)
        try self.init(ranks: ranks, vocabSize: c.vocabSize, layers: Array(repeating: dims, count: c.numHiddenLayers))
    }
}

extension GemmaShard {
    /// Loads this rank's shard of the model in `directory`. Every rank calls it; any rank's
    /// failure makes every rank throw `CommunicatorError.remote` with the same message.
    public static func load(directory: URL, comm: any Communicator, options: GemmaLoadOptions = GemmaLoadOptions()) throws -> GemmaShard {
        var shard: GemmaShard?
        var failure: Error?
        do { shard = try loadLocal(directory: directory, comm: comm, options: options) } catch { failure = error }
        try comm.agree(failure)
        guard let shard else { throw GemmaLoadError.badOptions("loader returned nothing") }
        return shard
    }

    /// The per-rank part of `load`, without agreement (tests that want the raw error).
    public static func loadLocal(directory: URL, comm: any Communicator, options: GemmaLoadOptions) throws -> GemmaShard {
        let config = try GemmaConfig.load(directory: directory)
        try config.checkSupported()
        let plan = try ShardPlan(config: config, ranks: comm.size)
        guard options.slots >= 1, options.maxBatchTokens >= 1, options.threads >= 1 else {
            throw GemmaLoadError.badOptions("slots, maxBatchTokens and threads must be at least 1")
        }
        let requested = options.maxContext ?? 0
        let maxContext = requested > 0 ? min(requested, config.maxPositionEmbeddings) : config.maxPositionEmbeddings
        let archive = try SafetensorsArchive(directory: directory)
        let names = try TensorNames.resolve(config: config, names: archive.tensors.mapValues(\.shape))
        if !config.tieWordEmbeddings && names[.lmHead] == nil { throw GemmaLoadError.noLMHead }
        let r = comm.rank

        func name(_ t: LogicalTensor) throws -> String {
            guard let n = names[t] else { throw TensorTableError.missing("\(t)") }
            return n
        }
        /// Rows `rows` and columns `cols` of a 2-D tensor, in its stored dtype.
        func matrix(_ t: LogicalTensor, rows: Range<Int>? = nil, cols: Range<Int>? = nil) throws -> WeightMatrix {
            let n = try name(t)
            let info = try archive.info(n)
            let rr = rows ?? 0..<info.rows, cc = cols ?? 0..<info.cols
            let m = try WeightMatrix(type: info.dtype.weightType, rows: rr.count, cols: cc.count)
            try archive.copySlice(n, rows: rr, cols: cc, into: m.storage.pointer)
            archive.evict(n)
            return m
        }
        /// A norm vector as its multiplier: 1 + w for Gemma 1-3 checkpoints.
        func norm(_ t: LogicalTensor) throws -> [Float] {
            let w = try archive.floats(try name(t))
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
        let vocab = plan.vocabRanges[r]
        let embedding = VocabParallelEmbedding(weight: try matrix(.embedTokens, rows: vocab), vocabRange: vocab)
        var lmHead: VocabParallelEmbedding?
        if names[.lmHead] != nil {
            lmHead = VocabParallelEmbedding(weight: try matrix(.lmHead, rows: vocab), vocabRange: vocab)
        }
        let shard = GemmaShard(config: config, plan: plan, comm: comm, pool: ThreadPool(threads: options.threads), layers: layers,
                               embedding: embedding, lmHead: lmHead, finalNorm: try norm(.finalNorm),
                               maxContext: maxContext, slots: options.slots, maxBatchTokens: options.maxBatchTokens)
        shard.stopTokenIds = config.stopTokenIds(directory: directory)
        return shard
    }

    /// Bytes of weights this rank holds.
    public var weightBytes: Int {
        var total = embedding.weight.byteCount + (lmHead?.weight.byteCount ?? 0) + finalNorm.count * 4
        for l in layers {
            total += [l.q.weight, l.k.weight, l.v.weight, l.o.weight, l.gate.weight, l.up.weight, l.down.weight].reduce(0) { $0 + $1.byteCount }
            total += 4 * (l.inputNorm.count + l.postAttentionNorm.count + l.preFeedforwardNorm.count + l.postFeedforwardNorm.count + l.qNorm.count + l.kNorm.count)
        }
        return total
    }

    /// Bytes of K and V this rank caches per token of one slot.
    public var kvBytesPerToken: Int { cache.bytesPerToken }
}
