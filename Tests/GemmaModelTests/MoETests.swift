// The MoE block against a direct double-precision computation of GEMMA_SPEC §3.4.3 (written
// out loop by loop here, independent of MoE.swift): unsharded, and at 2 and 4 in-process
// ranks with both sharding strategies (partials summed by the all-reduce); on random tensors
// and on the gemma4_moe fixture's real safetensors layout. Plus the plan, the loader's 1/N
// memory and bad input.
import Foundation
import Testing
@testable import GemmaModel
import GemmaFormats
import GemmaKernels
import GemmaParallel
import GemmaTestSupport


/// Full f32 tensors of one MoE layer in checkpoint layout.
struct MoETensors: Sendable {
    let dims: MoEDims
    var routerProj: [Float]      // [E, H]
    var routerScale: [Float]     // [H]
    var perExpertScale: [Float]  // [E]
    var preNorm2: [Float]        // [H]
    var gateUp: [Float]          // [E, 2Ie, H]
    var down: [Float]            // [E, H, Ie]

    static func random(_ dims: MoEDims, seed: UInt64) -> MoETensors {
        var g = SplitMix64(seed: seed)
        let e = dims.experts, h = dims.hidden, ie = dims.expertIntermediate
        // Router logits of order 1 so the softmax is neither flat nor one-hot.
        return MoETensors(dims: dims, routerProj: g.floats(e * h, scale: 3), routerScale: g.floats(h, scale: 1).map { 1 + 0.5 * $0 },
                          perExpertScale: g.floats(e).map { 1 + 0.5 * $0 }, preNorm2: g.floats(h).map { 1 + 0.5 * $0 },
                          gateUp: g.floats(e * 2 * ie * h, scale: 0.3), down: g.floats(e * h * ie, scale: 0.3))
    }

    func block(_ shard: MoERankShard, scratch: MoEScratch = MoEScratch()) throws -> MoEBlock {
        try MoEBlock.fromFloats(dims: dims, shard: shard, routerProj: routerProj, routerScale: routerScale, perExpertScale: perExpertScale,
                                preNorm2: preNorm2, gateUp: gateUp, down: down, scratch: scratch)
    }
}

/// GEMMA_SPEC §3.4.3 in doubles, token by token. Also returns, per token, the gap between the
/// k-th and (k+1)-th probability: a test whose inputs put two experts within float rounding
/// of each other at the cut would be testing tie-breaking, not the math, so callers check it.
func directMoE(_ w: MoETensors, residual x: [Float], tokens t: Int) -> (out: [Float], minGap: Double) {
    let d = w.dims, h = d.hidden, e = d.experts, ie = d.expertIntermediate, k = d.topK
    var out = [Float](repeating: 0, count: t * h)
    var minGap = Double.infinity
    for i in 0..<t {
        let r = (0..<h).map { Double(x[i * h + $0]) }
        let ms = r.reduce(0) { $0 + $1 * $1 } / Double(h)
        let inv = 1 / (ms + Double(d.eps)).squareRoot()
        let z = (0..<h).map { r[$0] * inv * Double(w.routerScale[$0]) / Double(h).squareRoot() }
        let logits = (0..<e).map { ex in (0..<h).reduce(0.0) { $0 + z[$1] * Double(w.routerProj[ex * h + $1]) } }
        let m = logits.max()!
        let p = logits.map { exp($0 - m) }
        let sum = p.reduce(0, +)
        let probs = p.map { $0 / sum }
        let ranked = (0..<e).sorted { probs[$0] > probs[$1] || (probs[$0] == probs[$1] && $0 < $1) }
        if k < e { minGap = min(minGap, probs[ranked[k - 1]] - probs[ranked[k]]) }
        let chosen = Array(ranked[0..<k])
        let total = chosen.reduce(0.0) { $0 + probs[$1] }
        let eIn = (0..<h).map { r[$0] * inv * Double(w.preNorm2[$0]) }
        for ex in chosen {
            let weight = probs[ex] / total * Double(w.perExpertScale[ex])
            var act = [Double](repeating: 0, count: ie)
            for c in 0..<ie {
                var gate = 0.0, up = 0.0
                for j in 0..<h {
                    gate += Double(w.gateUp[(ex * 2 * ie + c) * h + j]) * eIn[j]
                    up += Double(w.gateUp[(ex * 2 * ie + ie + c) * h + j]) * eIn[j]
                }
                act[c] = 0.5 * gate * (1 + tanh(0.7978845608028654 * (gate + 0.044715 * gate * gate * gate))) * up
            }
            for o in 0..<h {
                var y = 0.0
                for c in 0..<ie { y += Double(w.down[(ex * h + o) * ie + c]) * act[c] }
                out[i * h + o] += Float(weight * y)
            }
        }
    }
    return (out, minGap)
}

/// Runs the block on `ranks` in-process ranks (each builds only its shard) and returns every
/// rank's all-reduced output.
func shardedMoE(_ w: MoETensors, residual: [Float], tokens t: Int, ranks: Int, strategy: MoEStrategy) throws -> [[Float]] {
    let shards = try MoEPlan.shards(dims: w.dims, ranks: ranks, strategy: strategy)
    return try LocalCommunicator.run(ranks: ranks) { comm -> [Float] in
        let block = try w.block(shards[comm.rank])
        var out = [Float](repeating: .nan, count: t * w.dims.hidden)
        try residual.withUnsafeBufferPointer { x in
            try out.withUnsafeMutableBufferPointer { o in
                block(residual: x.baseAddress!, tokens: t, into: o.baseAddress!, pool: ThreadPool(threads: 1))
                try comm.allReduceSum(o)
            }
        }
        return out
    }
}

func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// A 2-D tensor already in a block format, sliced by raw row bytes (as a GGUF shard read is).
struct QuantizedTensor: Sendable {
    let type: WeightType
    let rows: Int, cols: Int
    let bytes: [UInt8]

    init(raw: [UInt8], type: WeightType, rows: Int, cols: Int) {
        self.type = type
        self.rows = rows
        self.cols = cols
        bytes = raw
    }

    init(_ type: WeightType, rows: Int, cols: Int, values: [Float]) throws {
        self.type = type
        self.rows = rows
        self.cols = cols
        let rb = try #require(type.rowBytes(cols))
        var out = [UInt8](repeating: 0, count: rb * rows)
        try values.withUnsafeBufferPointer { v in
            try out.withUnsafeMutableBytes { o in
                for r in 0..<rows { try quantize(type, v.baseAddress! + r * cols, count: cols, into: o.baseAddress! + r * rb) }
            }
        }
        bytes = out
    }

    /// The stored values back as f32 (what the kernels multiply by).
    func dequantized() -> [Float] {
        var out = [Float](repeating: 0, count: rows * cols)
        let rb = type.rowBytes(cols) ?? 0
        bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { o in
                for r in 0..<rows { dequantize(type, src.baseAddress! + r * rb, count: cols, into: o.baseAddress! + r * cols) }
            }
        }
        return out
    }

    /// Rows `rr`, columns `cc` (whole blocks) as a WeightMatrix.
    func slice(_ rr: Range<Int>, _ cc: Range<Int>) throws -> WeightMatrix {
        let bs = type.blockSize
        guard cc.lowerBound % bs == 0, cc.count % bs == 0, rr.upperBound <= rows, cc.upperBound <= cols else {
            throw MoEError.shape(tensor: "quantized slice", expected: "whole \(type) blocks within [\(rows), \(cols)]", got: "rows \(rr) cols \(cc)")
        }
        let m = try WeightMatrix(type: type, rows: rr.count, cols: cc.count)
        let rb = type.rowBytes(cols) ?? 0, off = cc.lowerBound / bs * type.bytesPerBlock
        bytes.withUnsafeBytes { src in
            for (i, r) in rr.enumerated() {
                (m.storage.pointer + i * m.rowBytes).copyMemory(from: src.baseAddress! + r * rb + off, byteCount: m.rowBytes)
            }
        }
        return m
    }
}

/// A reader with Q8_0 experts and an f32 router (as the 26B GGUFs keep small tensors in float).
func quantizedReader(_ w: MoETensors, type: WeightType) throws -> MoETensorReader {
    let d = w.dims
    let gu = try QuantizedTensor(type, rows: d.experts * 2 * d.expertIntermediate, cols: d.hidden, values: w.gateUp)
    let dn = try QuantizedTensor(type, rows: d.experts * d.hidden, cols: d.expertIntermediate, values: w.down)
    let small = MoETensorReader.inMemory([.routerProj: ([d.experts, d.hidden], w.routerProj), .routerScale: ([1, d.hidden], w.routerScale),
                                          .perExpertScale: ([1, d.experts], w.perExpertScale), .preNorm2: ([1, d.hidden], w.preNorm2)])
    return MoETensorReader(
        matrix: { t, rows, cols in
            switch t {
            case .gateUp: return try gu.slice(rows, cols)
            case .down: return try dn.slice(rows, cols)
            default: return try small.matrix(t, rows, cols)
            }
        },
        floats: small.floats)
}

@Suite struct MoETests {
    // Two shapes: the fixture's (E 8, k 2) and one with uneven expert and column splits at 4
    // ranks (E 10 -> 3/3/2/2 experts; Ie 22 -> 6/6/5/5 columns, rotating per expert) and k 4.
    static let shapes: [(h: Int, e: Int, k: Int, ie: Int)] = [(64, 8, 2, 16), (48, 10, 4, 22)]

    @Test(arguments: [1, 2, 4], MoEStrategy.allCases)
    func matchesDirectComputation(ranks: Int, strategy: MoEStrategy) throws {
        for (n, s) in Self.shapes.enumerated() {
            let dims = try MoEDims(hidden: s.h, experts: s.e, topK: s.k, expertIntermediate: s.ie, eps: 1e-6)
            let w = MoETensors.random(dims, seed: UInt64(17 + n))
            for t in [1, 7] {
                var g = SplitMix64(seed: UInt64(100 + t))
                let x = g.floats(t * s.h, scale: 2)
                let (want, gap) = directMoE(w, residual: x, tokens: t)
                // The k-th and (k+1)-th probabilities must differ by far more than float error (~1e-7).
                #expect(gap > 1e-4, "inputs too close to a routing tie (gap \(gap))")
                let outs = try shardedMoE(w, residual: x, tokens: t, ranks: ranks, strategy: strategy)
                let scale = want.reduce(0) { max($0, abs($1)) }
                #expect(scale > 0.1, "a block that outputs ~0 would pass trivially")
                for (r, got) in outs.enumerated() {
                    // f32 sums of <= 64 products of O(1) values against doubles: a few ulp of the
                    // O(1) outputs; 1e-5 relative leaves ~10x margin and is far below any
                    // misrouted expert or wrong column (O(1) errors).
                    #expect(maxAbsDiff(got, want) <= 1e-5 * max(1, scale), "shape \(s) T \(t) rank \(r): \(maxAbsDiff(got, want))")
                }
            }
        }
    }

    /// The two strategies and every rank count agree with each other bit for bit up to the
    /// order of the all-reduce sum (a few ulp).
    @Test func strategiesAgree() throws {
        let dims = try MoEDims(hidden: 48, experts: 10, topK: 4, expertIntermediate: 22, eps: 1e-6)
        let w = MoETensors.random(dims, seed: 5)
        var g = SplitMix64(seed: 9)
        let t = 33
        let x = g.floats(t * 48, scale: 2)
        let base = try shardedMoE(w, residual: x, tokens: t, ranks: 1, strategy: .columnSplit)[0]
        for ranks in [2, 4] {
            for strategy in MoEStrategy.allCases {
                let got = try shardedMoE(w, residual: x, tokens: t, ranks: ranks, strategy: strategy)[0]
                #expect(maxAbsDiff(got, base) <= 1e-5, "\(strategy) x\(ranks)")
            }
        }
    }

    /// Small steps run experts side by side on the pool's threads (one dispatch per layer),
    /// large ones split each matmul over the threads: same kernels per row, so the outputs
    /// must be bit-identical to the single-thread run, for both paths and both strategies.
    @Test func threadedPathsAreBitIdentical() throws {
        let dims = try MoEDims(hidden: 48, experts: 10, topK: 4, expertIntermediate: 22, eps: 1e-6)
        let w = MoETensors.random(dims, seed: 21)
        var g = SplitMix64(seed: 22)
        for t in [1, 3, MoEBlock.groupedTokenLimit, MoEBlock.groupedTokenLimit + 5] {
            let x = g.floats(t * 48, scale: 2)
            for strategy in MoEStrategy.allCases {
                for shard in try MoEPlan.shards(dims: dims, ranks: 2, strategy: strategy) {
                    let block = try w.block(shard)
                    var outs: [[Float]] = []
                    for threads in [1, 2, 3] {
                        var out = [Float](repeating: .nan, count: t * 48)
                        x.withUnsafeBufferPointer { xp in
                            out.withUnsafeMutableBufferPointer { o in
                                block(residual: xp.baseAddress!, tokens: t, into: o.baseAddress!, pool: ThreadPool(threads: threads))
                            }
                        }
                        outs.append(out)
                    }
                    #expect(outs[1] == outs[0] && outs[2] == outs[0], "T \(t) \(strategy) \(shard)")
                    #expect(outs[0].contains { $0 != 0 } || shard.experts.count < dims.experts)
                }
            }
        }
    }

    @Test func routerMatchesTransformersRules() throws {
        // E 4, k 2; proj rows chosen so two experts tie exactly: expert 1 and 3 have the same
        // row, larger than the others. A stable descending sort picks 1 before 3.
        let h = 4
        let dims = try MoEDims(hidden: h, experts: 4, topK: 2, expertIntermediate: 2, eps: 1e-6)
        let proj: [Float] = [0.1, 0, 0, 0,  1, 1, 1, 1,  0, 0.2, 0, 0,  1, 1, 1, 1]
        let router = try MoERouter(proj: try WeightMatrix.f32(rows: 4, cols: h, values: proj), scale: [1, 1, 1, 1],
                                   perExpertScale: [1, 2, 1, 0.5])
        var idx = [Int32](repeating: -1, count: 2), wts = [Float](repeating: 0, count: 2)
        var z = [Float](repeating: 0, count: h), logits = [Float](repeating: 0, count: 4)
        let x: [Float] = [1, 1, 1, 1]
        x.withUnsafeBufferPointer { xp in
            router.route(xp.baseAddress!, tokens: 1, topK: 2, eps: dims.eps, indices: &idx, weights: &wts, z: &z, logits: &logits,
                         pool: ThreadPool(threads: 1))
        }
        #expect(idx == [1, 3])
        // Renormalised to 1/2 each, then times per_expert_scale (2 and 0.5).
        #expect(abs(wts[0] - 1.0) < 1e-6 && abs(wts[1] - 0.25) < 1e-6, "\(wts)")
    }

    /// A non-finite residual (e.g. an overflowing checkpoint) yields NaN outputs, not a trap.
    @Test func nanResidualDoesNotTrap() throws {
        let dims = try MoEDims(hidden: 16, experts: 4, topK: 2, expertIntermediate: 8, eps: 1e-6)
        let block = try MoETensors.random(dims, seed: 2).block(MoERankShard(experts: 0..<4, columns: 0..<8))
        var x = [Float](repeating: 1, count: 2 * 16)
        x[3] = .nan
        let (idx, _) = x.withUnsafeBufferPointer { block.routing(residual: $0.baseAddress!, tokens: 2, pool: ThreadPool(threads: 1)) }
        #expect(Array(idx[0..<2]) == [0, 1])  // token 0: all-NaN probabilities -> lowest free ids
        #expect(idx.allSatisfy { (0..<4).contains($0) })
        var out = [Float](repeating: 0, count: 2 * 16)
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { block(residual: xp.baseAddress!, tokens: 2, into: $0.baseAddress!, pool: ThreadPool(threads: 1)) }
        }
        #expect(out[0..<16].allSatisfy { $0.isNaN })
        #expect(out[16..<32].allSatisfy { $0.isFinite })
    }

    @Test func planSplitsOnBlocksAndExperts() throws {
        let big = try MoEDims(hidden: 2816, experts: 128, topK: 8, expertIntermediate: 704, eps: 1e-6)
        let col = try MoEPlan.shards(dims: big, ranks: 4, strategy: .columnSplit, blockSize: 32)
        #expect(col.map { $0.columns(of: 0).count } == [192, 192, 160, 160])
        #expect(col.map { $0.columns(of: 1).count } == [192, 160, 160, 192])
        #expect(col.map(\.columnsByExpert[0]) == [0..<192, 192..<384, 384..<544, 544..<704])
        #expect(col.allSatisfy { $0.experts == 0..<128 })
        // Every expert's columns are covered exactly once, in rank order, on 32-block boundaries.
        for e in 0..<128 {
            let ranges = col.map { $0.columns(of: e) }
            #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == 704)
            #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
            #expect(ranges.allSatisfy { $0.lowerBound % 32 == 0 && $0.count % 32 == 0 })
        }
        // The wider shares rotate: every rank holds the same columns over all experts.
        #expect(col.allSatisfy { $0.totalColumns == 128 * 176 })
        let ep = try MoEPlan.shards(dims: big, ranks: 4, strategy: .expertParallel, blockSize: 256)
        #expect(ep.map(\.experts) == [0..<32, 32..<64, 64..<96, 96..<128])
        #expect(ep.allSatisfy { $0.columnsByExpert.allSatisfy { $0 == 0..<704 } })
        // 704 is not a whole number of 256-blocks: K-quant expert down cannot be column-split.
        #expect(throws: ShardPlanError.self) { try MoEPlan.shards(dims: big, ranks: 2, strategy: .columnSplit, blockSize: 256) }
        #expect(throws: ShardPlanError.self) { try MoEPlan.shards(dims: big, ranks: 256, strategy: .expertParallel) }
        // The default: column split where the blocks allow it, else whole experts.
        #expect(try MoEPlan.shards(dims: big, ranks: 4, blockSize: 32).strategy == .columnSplit)
        let fallback = try MoEPlan.shards(dims: big, ranks: 2, blockSize: 256)
        #expect(fallback.strategy == .expertParallel && fallback.shards.map(\.experts) == [0..<64, 64..<128])
        #expect(try MoEPlan.shards(dims: big, ranks: 32, blockSize: 32).strategy == .expertParallel)  // 22 blocks < 32 ranks
    }

    @Test(arguments: MoEStrategy.allCases)
    func eachRankHoldsItsShareOfExperts(strategy: MoEStrategy) throws {
        // Ie 18 over 4 ranks: 5/5/4/4 columns, rotating, so 36 columns per rank over 8 experts.
        let dims = try MoEDims(hidden: 64, experts: 8, topK: 2, expertIntermediate: 18, eps: 1e-6)
        let w = MoETensors.random(dims, seed: 3)
        let full = try w.block(MoERankShard(experts: 0..<8, columns: 0..<18)).expertBytes
        #expect(full == 8 * 3 * 64 * 18 * 4)
        for ranks in [2, 4] {
            let shards = try MoEPlan.shards(dims: dims, ranks: ranks, strategy: strategy)
            let bytes = try shards.map { try w.block($0).expertBytes }
            #expect(bytes.reduce(0, +) == full)
            #expect(bytes.allSatisfy { $0 == full / ranks }, "\(bytes)")
        }
    }

    @Test func badShapesAreRefused() throws {
        #expect(throws: MoEError.self) { try MoEDims(hidden: 8, experts: 4, topK: 5, expertIntermediate: 2, eps: 1e-6) }
        #expect(throws: MoEError.self) { try MoEDims(hidden: 8, experts: 4, topK: 0, expertIntermediate: 2, eps: 1e-6) }
        let dims = try MoEDims(hidden: 8, experts: 4, topK: 2, expertIntermediate: 2, eps: 1e-6)
        var w = MoETensors.random(dims, seed: 1)
        w.routerScale.removeLast()
        #expect(throws: MoEError.self) { try w.block(MoERankShard(experts: 0..<4, columns: 0..<2)) }
        w = MoETensors.random(dims, seed: 1)
        w.down.removeLast()
        #expect(throws: MoEError.self) { try w.block(MoERankShard(experts: 0..<4, columns: 0..<2)) }
        w = MoETensors.random(dims, seed: 1)
        // A shard outside the tensors: the reader refuses the slice.
        #expect(throws: MoEError.self) { try w.block(MoERankShard(experts: 0..<5, columns: 0..<2)) }
    }

    /// Q8_0 experts (block-aligned column slices cut from the stored bytes, as from a GGUF): every
    /// strategy and rank count against the unsharded Q8_0 block, and that against the direct
    /// computation on the dequantized weights.
    @Test func quantizedExpertsShardExactly() throws {
        // Ie 160 = 5 blocks of 32: column split gives 96/64 (R 2) and 64/32/32/32 (R 4),
        // the wider share rotating per expert.
        let dims = try MoEDims(hidden: 64, experts: 8, topK: 3, expertIntermediate: 160, eps: 1e-6)
        var w = MoETensors.random(dims, seed: 11)
        let read = try quantizedReader(w, type: .q8_0)
        w.gateUp = try QuantizedTensor(.q8_0, rows: 8 * 320, cols: 64, values: w.gateUp).dequantized()
        w.down = try QuantizedTensor(.q8_0, rows: 8 * 64, cols: 160, values: w.down).dequantized()
        var g = SplitMix64(seed: 12)
        let t = 9
        let x = g.floats(t * 64, scale: 2)
        let (want, gap) = directMoE(w, residual: x, tokens: t)
        #expect(gap > 1e-4)
        let scale = want.reduce(0) { max($0, abs($1)) }
        func run(_ ranks: Int, _ strategy: MoEStrategy) throws -> [Float] {
            let shards = try MoEPlan.shards(dims: dims, ranks: ranks, strategy: strategy, blockSize: 32)
            return try LocalCommunicator.run(ranks: ranks) { comm -> [Float] in
                let block = try MoEBlock.load(dims: dims, shard: shards[comm.rank], read: read, scratch: MoEScratch())
                var out = [Float](repeating: .nan, count: t * 64)
                try x.withUnsafeBufferPointer { xp in
                    try out.withUnsafeMutableBufferPointer { o in
                        block(residual: xp.baseAddress!, tokens: t, into: o.baseAddress!, pool: ThreadPool(threads: 1))
                        try comm.allReduceSum(o)
                    }
                }
                return out
            }[0]
        }
        let base = try run(1, .columnSplit)
        // The kernels quantize activations to int8 per 32-block (docs/KERNELS.md): ~0.4% per
        // block, so vs exact doubles allow 2% of the output scale; a wrong expert or column
        // would be O(scale).
        #expect(maxAbsDiff(base, want) <= 2e-2 * scale, "\(maxAbsDiff(base, want)) vs scale \(scale)")
        for ranks in [2, 4] {
            for strategy in MoEStrategy.allCases {
                // Column slices start on block boundaries, so every rank quantizes the same
                // activation blocks as the unsharded run: only the float summation order differs.
                let got = try run(ranks, strategy)
                #expect(maxAbsDiff(got, base) <= 1e-5 * max(1, scale), "\(strategy) x\(ranks): \(maxAbsDiff(got, base))")
            }
        }
    }

    /// A router handed over in a block format (quantize-on-load) is kept as f32 values.
    @Test func routerStaysFloat() throws {
        let dims = try MoEDims(hidden: 64, experts: 8, topK: 2, expertIntermediate: 32, eps: 1e-6)
        let w = MoETensors.random(dims, seed: 31)
        let q = try quantizedReader(w, type: .q8_0)
        let quantRouter = try QuantizedTensor(.q8_0, rows: 8, cols: 64, values: w.routerProj)
        let reader = MoETensorReader(
            matrix: { t, rows, cols in t == .routerProj ? try quantRouter.slice(rows, cols) : try q.matrix(t, rows, cols) },
            floats: q.floats)
        let block = try MoEBlock.load(dims: dims, shard: MoERankShard(experts: 0..<8, columns: 0..<32), read: reader, scratch: MoEScratch())
        #expect(block.router.proj.type == .f32)
        #expect(block.router.proj.byteCount == 8 * 64 * 4)
        let values = Array(UnsafeBufferPointer(start: block.router.proj.storage.pointer.assumingMemoryBound(to: Float.self), count: 8 * 64))
        #expect(values == w.routerProj)
    }

    /// The real checkpoint layout: gemma4_moe's safetensors (HF [E, 2Ie, H] gate_up with gate rows
    /// first, [E, H, Ie] down) read through the slicing loader at 1, 2 and 4 ranks, both strategies,
    /// every layer, against the direct computation on the same tensors.
    @Test func fixtureLayersThroughSafetensorsReader() throws {
        let dir = TestPaths.fixture("hf/gemma4_moe")
        let archive = try SafetensorsArchive(directory: dir)
        let dims = try MoEDims(hidden: 64, experts: 8, topK: 2, expertIntermediate: 16, eps: 1e-6)
        for layer in 0..<3 {
            @Sendable func name(_ t: MoETensor) -> String { "model." + t.hfName(layer: layer) }
            let full = MoETensors(dims: dims, routerProj: try archive.floats(name(.routerProj)), routerScale: try archive.floats(name(.routerScale)),
                                  perExpertScale: try archive.floats(name(.perExpertScale)), preNorm2: try archive.floats(name(.preNorm2)),
                                  gateUp: try archive.floats(name(.gateUp)), down: try archive.floats(name(.down)))
            let reader = MoETensorReader(
                matrix: { t, rows, cols in
                    let info = try archive.info(name(t))
                    let m = try WeightMatrix(type: info.dtype.weightType, rows: rows.count, cols: cols.count)
                    try archive.copySlice(name(t), rows: rows, cols: cols, into: m.storage.pointer)
                    return m
                },
                floats: { t in try archive.floats(name(t)) })
            var g = SplitMix64(seed: UInt64(40 + layer))
            let t = 6
            let x = g.floats(t * 64, scale: 2)
            let (want, gap) = directMoE(full, residual: x, tokens: t)
            #expect(gap > 1e-5)
            let scale = want.reduce(0) { max($0, abs($1)) }
            for ranks in [1, 2, 4] {
                for strategy in MoEStrategy.allCases {
                    let shards = try MoEPlan.shards(dims: dims, ranks: ranks, strategy: strategy)
                    let outs = try LocalCommunicator.run(ranks: ranks) { comm -> [Float] in
                        let block = try MoEBlock.load(dims: dims, shard: shards[comm.rank], read: reader, scratch: MoEScratch())
                        var out = [Float](repeating: .nan, count: t * 64)
                        try x.withUnsafeBufferPointer { xp in
                            try out.withUnsafeMutableBufferPointer { o in
                                block(residual: xp.baseAddress!, tokens: t, into: o.baseAddress!, pool: ThreadPool(threads: 2))
                                try comm.allReduceSum(o)
                            }
                        }
                        return out
                    }
                    // Same bound as above (f32 vs double on O(scale) outputs).
                    for got in outs { #expect(maxAbsDiff(got, want) <= 1e-5 * max(1, scale), "layer \(layer) \(strategy) x\(ranks)") }
                }
            }
        }
    }
}
