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
    /// A share vector that does not fit the rank count or has a share that is not positive.
    case badWeights([Double], ranks: Int)
    /// Fewer whole units than ranks: some rank would get none.
    case tooFewUnits(dimension: String, size: Int, ranks: Int, unit: Int)

    public var description: String {
        switch self {
        case let .indivisible(dimension, size, ranks, unit):
            if unit > 1 {
                return "cannot split \(dimension) = \(size) across \(ranks) ranks: it is not a whole number of \(unit)-value blocks"
            }
            return "cannot split \(dimension) = \(size) evenly across \(ranks) ranks (\(size) is not a multiple of \(ranks))"
        case let .badRankCount(n): return "the number of ranks must be at least 1, got \(n)"
        case let .badWeights(w, ranks):
            return "--split needs \(ranks) positive, finite shares (one per rank), got \(w.map { String($0) }.joined(separator: ","))"
        case let .tooFewUnits(dimension, size, ranks, unit):
            let what = unit > 1 ? "\(size / max(unit, 1)) blocks of \(unit)" : "\(size)"
            return "cannot split \(dimension) = \(size) across \(ranks) ranks: \(what) is fewer than one per rank"
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
    ///
    /// With `weights` (one positive share per rank, `--split`) the split is uneven instead:
    /// rank r gets about `weights[r] / sum(weights)` of every dimension, in whole units and at
    /// least one unit each, rounded by `partition(_:weights:...)`. Query heads go in whole KV
    /// groups when there are at least as many KV heads as ranks (no KV head is replicated);
    /// otherwise in single heads, and a KV head is replicated on every rank that holds one of
    /// its query heads. Any rank count works while every dimension has a unit per rank.
    public init(ranks: Int, vocabSize: Int, layers: [LayerDims], mlpAlign: Int = 1, allowUnevenMLP: Bool = false,
                weights: [Double]? = nil) throws {
        guard ranks >= 1 else { throw ShardPlanError.badRankCount(ranks) }
        if let weights, weights.count != ranks || !weights.allSatisfy({ $0.isFinite && $0 > 0 }) {
            throw ShardPlanError.badWeights(weights, ranks: ranks)
        }
        if let weights {
            self.ranks = ranks
            self.vocabSize = vocabSize
            (self.layers, self.vocabRanges) = try Self.weightedSplit(vocabSize: vocabSize, layers: layers, mlpAlign: mlpAlign, weights: weights)
            return
        }
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

    /// The uneven split (see `init`'s `weights`): per-layer shards and vocabulary ranges.
    private static func weightedSplit(vocabSize: Int, layers: [LayerDims], mlpAlign: Int,
                                      weights: [Double]) throws -> ([[LayerShard]], [Range<Int>]) {
        let ranks = weights.count
        var planned: [[LayerShard]] = []
        for (i, dims) in layers.enumerated() {
            guard dims.numKVHeads >= 1, dims.numHeads % dims.numKVHeads == 0 else {
                throw ShardPlanError.indivisible(dimension: "num_attention_heads / num_key_value_heads (layer \(i), \(dims.numHeads) / \(dims.numKVHeads))",
                                                 size: dims.numHeads, ranks: ranks, unit: 1)
            }
            let group = dims.numHeads / dims.numKVHeads
            // Whole KV groups when every rank can have one; single heads (KV replicated) otherwise.
            let headUnit = dims.numKVHeads >= ranks ? group : 1
            let heads = try partition(dims.numHeads, weights: weights, dimension: "num_attention_heads (layer \(i))", unit: headUnit)
            let mlp = try partition(dims.intermediateSize, weights: weights, dimension: "intermediate_size (layer \(i))", unit: mlpAlign)
            planned.append((0..<ranks).map { r in
                let q = heads[r]
                let kv = (q.lowerBound / group)..<((q.upperBound - 1) / group + 1)
                return LayerShard(qHeads: q, kvHeads: kv, mlpColumns: mlp[r], groupSize: group, headDim: dims.headDim)
            })
        }
        return (planned, try partition(vocabSize, weights: weights, dimension: "vocab_size", unit: 1))
    }

    /// Splits `size` into one contiguous range per share, in whole `unit`s, rank r getting
    /// about `weights[r] / sum(weights)` of the units and at least one. Rounding: each rank
    /// starts from the floor of its exact quota (at least 1); units still to give go one at a
    /// time to the rank furthest below its quota, units over the total are taken back from
    /// the rank furthest above it (ties: the lower rank). Equal shares of a divisible size
    /// give the even split.
    public static func partition(_ size: Int, weights: [Double], dimension: String, unit: Int) throws -> [Range<Int>] {
        let ranks = weights.count
        guard ranks >= 1 else { throw ShardPlanError.badRankCount(ranks) }
        guard weights.allSatisfy({ $0.isFinite && $0 > 0 }) else { throw ShardPlanError.badWeights(weights, ranks: ranks) }
        guard unit >= 1, size % unit == 0 else { throw ShardPlanError.indivisible(dimension: dimension, size: size, ranks: ranks, unit: unit) }
        let units = size / unit
        guard units >= ranks else { throw ShardPlanError.tooFewUnits(dimension: dimension, size: size, ranks: ranks, unit: unit) }
        let total = weights.reduce(0, +)
        let quota = weights.map { Double(units) * $0 / total }
        var count = quota.map { max(1, Int($0.rounded(.down))) }
        var given = count.reduce(0, +)
        while given < units {
            var best = 0
            for r in 1..<ranks where quota[r] - Double(count[r]) > quota[best] - Double(count[best]) { best = r }
            count[best] += 1
            given += 1
        }
        while given > units {
            var best = -1
            for r in 0..<ranks where count[r] > 1 && (best < 0 || Double(count[r]) - quota[r] > Double(count[best]) - quota[best]) { best = r }
            count[best] -= 1
            given -= 1
        }
        var out: [Range<Int>] = []
        var start = 0
        for n in count {
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
