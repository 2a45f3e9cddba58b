// Uneven splits (`ShardPlan(..., weights:)`, the `--split` share vector): shares in whole
// units, at least one per rank, within one unit of the exact quota, KV groups kept whole
// when there are enough KV heads, and the even split when the shares are equal.
import Testing
import GemmaTestSupport
@testable import GemmaParallel

@Suite struct ShardPlanWeightsTests {
    /// Every rank's range is non-empty, the ranges tile 0..<size in rank order, and each is
    /// within one unit of its exact quota.
    func checkTiling(_ ranges: [Range<Int>], size: Int, unit: Int, weights: [Double]) {
        #expect(ranges.count == weights.count)
        var next = 0
        let total = weights.reduce(0, +)
        for (r, range) in ranges.enumerated() {
            #expect(range.lowerBound == next && !range.isEmpty, "\(ranges)")
            #expect(range.lowerBound % unit == 0 && range.count % unit == 0)
            let quota = Double(size / unit) * weights[r] / total
            #expect(abs(Double(range.count / unit) - quota) < 1 || range.count == unit, "rank \(r): \(range.count / unit) units, quota \(quota)")
            next = range.upperBound
        }
        #expect(next == size)
    }

    @Test func equalSharesGiveTheEvenSplit() throws {
        let configs: [(vocab: Int, dims: LayerDims, ranks: Int, align: Int)] = [
            (262_144, LayerDims(numHeads: 4, numKVHeads: 1, headDim: 256, intermediateSize: 2048), 2, 256),
            (262_144, LayerDims(numHeads: 4, numKVHeads: 1, headDim: 256, intermediateSize: 2048), 4, 256),
            (256, LayerDims(numHeads: 8, numKVHeads: 4, headDim: 16, intermediateSize: 128), 4, 32),
            (256, LayerDims(numHeads: 16, numKVHeads: 8, headDim: 16, intermediateSize: 512), 2, 32),
        ]
        for c in configs {
            let even = try ShardPlan(ranks: c.ranks, vocabSize: c.vocab, layers: [c.dims], mlpAlign: c.align)
            let weighted = try ShardPlan(ranks: c.ranks, vocabSize: c.vocab, layers: [c.dims], mlpAlign: c.align,
                                         weights: Array(repeating: 1, count: c.ranks))
            #expect(weighted == even, "\(c)")
        }
    }

    @Test func threeRanksOnTheDefaultModelsShape() throws {
        // Gemma 3 270M: 4 query heads, 1 KV head, head_dim 256, intermediate 2048 (Q4_K: 256-blocks).
        let dims = LayerDims(numHeads: 4, numKVHeads: 1, headDim: 256, intermediateSize: 2048)
        let plan = try ShardPlan(ranks: 3, vocabSize: 262_144, layers: [dims], mlpAlign: 256, weights: [1, 1, 1])
        #expect(plan.layers[0].map(\.qHeads) == [0..<2, 2..<3, 3..<4])
        #expect(plan.layers[0].map(\.kvHeads) == [0..<1, 0..<1, 0..<1])  // the one KV head on every rank
        #expect(plan.layers[0].map(\.mlpColumns) == [0..<768, 768..<1536, 1536..<2048])
        #expect(plan.vocabRanges.map(\.count) == [87_382, 87_381, 87_381])
        #expect(plan.replicatesKV)
    }

    @Test func kvGroupsStayWholeWhenEveryRankCanHaveOne() throws {
        // A 16-head, 8-KV-head layer on 3 ranks: 8 groups of 2 heads as 3/3/2 groups.
        let dims = LayerDims(numHeads: 16, numKVHeads: 8, headDim: 128, intermediateSize: 2112)
        let plan = try ShardPlan(ranks: 3, vocabSize: 262_144, layers: [dims], mlpAlign: 32, weights: [1, 1, 1])
        #expect(plan.layers[0].map(\.qHeads) == [0..<6, 6..<12, 12..<16])
        #expect(plan.layers[0].map(\.kvHeads) == [0..<3, 3..<6, 6..<8])
        #expect(!plan.replicatesKV)
        for shard in plan.layers[0] {
            for h in 0..<shard.qHeads.count {
                #expect(shard.localKVHead(forLocalQueryHead: h) == (shard.qHeads.lowerBound + h) / 2 - shard.kvHeads.lowerBound)
            }
        }
        // A machine with twice the share gets twice the heads, columns and vocabulary.
        let skewed = try ShardPlan(ranks: 3, vocabSize: 262_144, layers: [dims], mlpAlign: 32, weights: [2, 1, 1])
        #expect(skewed.layers[0].map { $0.qHeads.count } == [8, 4, 4])
        #expect(skewed.layers[0].map { $0.mlpColumns.count } == [1056, 544, 512])
        #expect(skewed.vocabRanges.map(\.count) == [131_072, 65_536, 65_536])
    }

    @Test func randomSharesTileEveryDimension() throws {
        var rng = SplitMix64(seed: 15)
        for _ in 0..<200 {
            let ranks = Int(rng.next() % 7) + 1
            let weights = (0..<ranks).map { _ in Double(rng.uniform()) * 15 + 0.1 }
            let unit = [1, 32, 256][Int(rng.next() % 3)]
            let size = unit * (ranks + Int(rng.next() % 300))
            let ranges = try ShardPlan.partition(size, weights: weights, dimension: "d", unit: unit)
            checkTiling(ranges, size: size, unit: unit, weights: weights)
        }
    }

    @Test func impossibleSplitsNameTheReason() {
        let dims = LayerDims(numHeads: 4, numKVHeads: 1, headDim: 256, intermediateSize: 2048)
        #expect(throws: ShardPlanError.badWeights([1, 1], ranks: 3)) {
            try ShardPlan(ranks: 3, vocabSize: 256, layers: [dims], weights: [1, 1])
        }
        #expect(throws: ShardPlanError.badWeights([1, 0, 1], ranks: 3)) {
            try ShardPlan(ranks: 3, vocabSize: 256, layers: [dims], weights: [1, 0, 1])
        }
        #expect(throws: ShardPlanError.tooFewUnits(dimension: "num_attention_heads (layer 0)", size: 4, ranks: 5, unit: 1)) {
            try ShardPlan(ranks: 5, vocabSize: 256, layers: [dims], weights: [1, 1, 1, 1, 1])
        }
        let error = ShardPlanError.tooFewUnits(dimension: "intermediate_size (layer 0)", size: 512, ranks: 3, unit: 256)
        #expect(error.description == "cannot split intermediate_size (layer 0) = 512 across 3 ranks: 2 blocks of 256 is fewer than one per rank")
    }
}
