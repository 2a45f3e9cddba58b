// Which part of every weight each rank owns under Megatron-style tensor parallelism:
// query heads and the KV heads they use (replicated when fewer KV heads than ranks, vLLM's
// rule), MLP intermediate columns, vocabulary rows. Pure arithmetic, decided before anything
// is loaded, so an impossible split is refused with the reason. See docs/SHARDING.md.

/// Shape of one decoder layer as far as splitting is concerned. Per layer so that models with
/// per-layer head sizes or KV-head counts (Gemma 4) fit the same plan.
public struct LayerDims: Sendable, Equatable {
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var intermediateSize: Int

    public init(numHeads: Int, numKVHeads: Int, headDim: Int, intermediateSize: Int) {
        self.numHeads = numHeads
        self.numKVHeads = numKVHeads
        self.headDim = headDim
        self.intermediateSize = intermediateSize
    }
}

/// A split that cannot be made, naming the dimension, its size and the rank count.
public enum ShardPlanError: Error, CustomStringConvertible, Equatable {
    case indivisible(dimension: String, size: Int, ranks: Int, unit: Int)
    case badRankCount(Int)

    public var description: String {
        switch self {
        case let .indivisible(dimension, size, ranks, unit):
            if unit > 1 {
                return "cannot split \(dimension) = \(size) across \(ranks) ranks: it is not a whole number of \(unit)-value blocks"
            }
            return "cannot split \(dimension) = \(size) evenly across \(ranks) ranks (\(size) is not a multiple of \(ranks))"
        case let .badRankCount(n): return "the number of ranks must be at least 1, got \(n)"
        }
    }
}

/// What one rank owns in one layer.
public struct LayerShard: Sendable, Equatable {
    /// Query heads [global head indices] this rank computes.
    public let qHeads: Range<Int>
    /// KV heads this rank computes and caches (the ones its query heads read). Ranges of
    /// different ranks overlap when KV heads are replicated.
    public let kvHeads: Range<Int>
    /// Intermediate (MLP) columns: rows of gate/up, columns of down.
    public let mlpColumns: Range<Int>
    /// Query heads per KV head (GQA group size) of the whole layer.
    public let groupSize: Int
    public let headDim: Int

    /// Local KV head index used by local query head `h` (0 ..< qHeads.count).
    public func localKVHead(forLocalQueryHead h: Int) -> Int {
        (qHeads.lowerBound + h) / groupSize - kvHeads.lowerBound
    }
}

/// The split of a whole model across `ranks` ranks.
public struct ShardPlan: Sendable, Equatable {
    public let ranks: Int
    public let vocabSize: Int
    /// vocabRanges[r]: embedding rows / logits owned by rank r.
    public let vocabRanges: [Range<Int>]
    /// layers[i][r]: what rank r owns in layer i.
    public let layers: [[LayerShard]]

    /// Plans an even split. Rules (GEMMA_SPEC §5):
    /// - query heads: `numHeads % ranks == 0`, rank r owns a contiguous block;
    /// - KV heads: rank r owns exactly the KV heads its query heads use (consecutive query
    ///   heads share a KV head), so with fewer KV heads than ranks they are replicated;
    /// - MLP columns: `intermediateSize % (ranks * mlpAlign) == 0` unless `allowUnevenMLP`,
    ///   then any split into whole `mlpAlign`-blocks (block-quantized weights, A3.1);
    /// - vocabulary: `vocabSize % ranks == 0`.
    public init(ranks: Int, vocabSize: Int, layers: [LayerDims], mlpAlign: Int = 1, allowUnevenMLP: Bool = false) throws {
        guard ranks >= 1 else { throw ShardPlanError.badRankCount(ranks) }
        self.ranks = ranks
        self.vocabSize = vocabSize
        var planned: [[LayerShard]] = []
        for (i, dims) in layers.enumerated() {
            let heads = try Self.partition(dims.numHeads, ranks: ranks, dimension: "num_attention_heads (layer \(i))", unit: 1, uneven: false)
            guard dims.numKVHeads >= 1, dims.numHeads % dims.numKVHeads == 0 else {
                throw ShardPlanError.indivisible(dimension: "num_attention_heads / num_key_value_heads (layer \(i), \(dims.numHeads) / \(dims.numKVHeads))",
                                                 size: dims.numHeads, ranks: ranks, unit: 1)
            }
            let group = dims.numHeads / dims.numKVHeads
            let mlp = try Self.partition(dims.intermediateSize, ranks: ranks, dimension: "intermediate_size (layer \(i))",
                                         unit: mlpAlign, uneven: allowUnevenMLP)
            planned.append((0..<ranks).map { r in
                let q = heads[r]
                let kv = (q.lowerBound / group)..<((q.upperBound - 1) / group + 1)
                return LayerShard(qHeads: q, kvHeads: kv, mlpColumns: mlp[r], groupSize: group, headDim: dims.headDim)
            })
        }
        self.layers = planned
        // Checked last so that the more telling head/MLP reason is reported first.
        vocabRanges = try Self.partition(vocabSize, ranks: ranks, dimension: "vocab_size", unit: 1, uneven: false)
    }

    /// Splits `size` into `ranks` contiguous ranges of whole `unit`s: equal ones (error when
    /// impossible), or with `uneven` as equal as whole units allow (earlier ranks one more).
    public static func partition(_ size: Int, ranks: Int, dimension: String, unit: Int, uneven: Bool) throws -> [Range<Int>] {
        guard size % unit == 0 else { throw ShardPlanError.indivisible(dimension: dimension, size: size, ranks: ranks, unit: unit) }
        let units = size / unit
        if !uneven {
            guard units % ranks == 0 else { throw ShardPlanError.indivisible(dimension: dimension, size: size, ranks: ranks, unit: unit) }
        } else if units < ranks {
            throw ShardPlanError.indivisible(dimension: dimension, size: size, ranks: ranks, unit: unit)
        }
        var out: [Range<Int>] = []
        var start = 0
        for r in 0..<ranks {
            let n = units / ranks + (r < units % ranks ? 1 : 0)
            out.append((start * unit)..<((start + n) * unit))
            start += n
        }
        return out
    }

    /// Whether any layer replicates KV heads (fewer KV heads than ranks).
    public var replicatesKV: Bool {
        layers.contains { layer in
            zip(layer, layer.dropFirst()).contains { $0.kvHeads.overlaps($1.kvHeads) }
        }
    }
}
