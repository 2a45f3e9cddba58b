// The Gemma 4 mixture-of-experts block (26B-A4B, GEMMA_SPEC §3.4.3): replicated router, top-k
// GeGLU experts sharded over ranks (whole experts per rank, or a column slice of every expert),
// and the weighted sum of the selected experts as this rank's PARTIAL [T, H]. The caller
// all-reduces it together with the dense MLP's partial (one collective for the whole FFN).
//
// Dimension legend:  T tokens   H hidden   E experts   K top-k   Ie expert intermediate
//                    IR intermediate columns of each held expert on this rank
import Foundation
import GemmaKernels
import GemmaParallel

/// Sizes of one MoE block (every MoE layer of a model has the same).
public struct MoEDims: Sendable, Equatable {
    public let hidden: Int
    public let experts: Int
    public let topK: Int
    public let expertIntermediate: Int
    /// RMSNorm epsilon of the router norm and pre_feedforward_layernorm_2.
    public let eps: Float

    public init(hidden: Int, experts: Int, topK: Int, expertIntermediate: Int, eps: Float) throws {
        guard hidden > 0, experts > 0, expertIntermediate > 0 else {
            throw MoEError.badDims("hidden_size \(hidden), num_experts \(experts) and moe_intermediate_size \(expertIntermediate) must be positive")
        }
        guard topK >= 1, topK <= experts else {
            throw MoEError.badDims("top_k_experts \(topK) must be in 1...num_experts (\(experts))")
        }
        self.hidden = hidden
        self.experts = experts
        self.topK = topK
        self.expertIntermediate = expertIntermediate
        self.eps = eps
    }

    /// The MoE sizes of a Gemma 4 config with `enable_moe_block`; throws naming the missing field.
    public init(config c: GemmaConfig) throws {
        guard let e = c.numExperts else { throw MoEError.badDims("enable_moe_block needs num_experts") }
        guard let k = c.topKExperts else { throw MoEError.badDims("enable_moe_block needs top_k_experts") }
        guard let i = c.moeIntermediateSize else { throw MoEError.badDims("enable_moe_block needs moe_intermediate_size") }
        try self.init(hidden: c.hiddenSize, experts: e, topK: k, expertIntermediate: i, eps: Float(c.rmsNormEps))
    }

    /// Parameters of one expert (gate + up + down).
    public var paramsPerExpert: Int { 3 * hidden * expertIntermediate }
}

/// How the experts are spread over ranks. Both give each rank a partial [T, H] that the
/// FFN all-reduce sums; neither needs a collective of its own (docs/MOE.md compares them).
public enum MoEStrategy: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Every rank holds all E experts, columns [a, b) of each expert's intermediate axis
    /// (HF `moe_tp_experts`, "packed_colwise" gate_up + rowwise down). Perfectly balanced.
    case columnSplit = "column"
    /// Rank r holds a contiguous range of whole experts and computes only the tokens routed
    /// to them; ranks whose experts no token chose contribute zeros.
    case expertParallel = "expert"

    public var description: String { rawValue }
}

/// The part of every MoE layer one rank holds.
public struct MoERankShard: Sendable, Equatable {
    /// Global ids of the experts held (all E for column split).
    public let experts: Range<Int>
    /// Intermediate columns held of each held expert, `columnsByExpert[e - experts.lowerBound]`
    /// (0..<Ie for expert parallel).
    public let columnsByExpert: [Range<Int>]

    /// The same columns of every held expert.
    public init(experts: Range<Int>, columns: Range<Int>) {
        self.experts = experts
        self.columnsByExpert = Array(repeating: columns, count: experts.count)
    }

    public init(experts: Range<Int>, columnsByExpert: [Range<Int>]) {
        self.experts = experts
        self.columnsByExpert = columnsByExpert
    }

    /// Columns held of global expert `e` (which must be in `experts`).
    public func columns(of e: Int) -> Range<Int> { columnsByExpert[e - experts.lowerBound] }
    /// Widest slice held (scratch sizing).
    public var maxWidth: Int { columnsByExpert.map(\.count).max() ?? 0 }
    /// Intermediate columns held over all experts (memory is proportional to it).
    public var totalColumns: Int { columnsByExpert.reduce(0) { $0 + $1.count } }
}

/// Splits a MoE block over ranks.
public enum MoEPlan {
    /// The default split (docs/MOE.md): column split, balanced at decode; expert parallel when
    /// the expert intermediate axis cannot be cut into `ranks` whole blocks of `blockSize`
    /// (e.g. a 256-block down_proj of 704 columns, or more ranks than 32-blocks).
    public static func shards(dims: MoEDims, ranks: Int, blockSize: Int = 1) throws -> (strategy: MoEStrategy, shards: [MoERankShard]) {
        if let column = try? shards(dims: dims, ranks: ranks, strategy: .columnSplit, blockSize: blockSize) {
            return (.columnSplit, column)
        }
        return (.expertParallel, try shards(dims: dims, ranks: ranks, strategy: .expertParallel, blockSize: blockSize))
    }

    /// One shard per rank. `blockSize` is the quant block length along the expert down_proj's
    /// input axis (1 for float weights; 32 or 256 for GGUF blocks): column-split ranges are
    /// whole blocks, as equal as that allows (GEMMA_SPEC A3.1, e.g. 704 = 22 x 32 over 4 ranks
    /// -> 192/192/160/160). Expert-parallel ranges are whole experts, earlier ranks one more
    /// when E % ranks != 0.
    public static func shards(dims: MoEDims, ranks: Int, strategy: MoEStrategy, blockSize: Int = 1) throws -> [MoERankShard] {
        guard ranks >= 1 else { throw MoEError.badDims("need at least one rank, got \(ranks)") }
        switch strategy {
        case .expertParallel:
            let ranges = try ShardPlan.partition(dims.experts, ranks: ranks, dimension: "num_experts", unit: 1, uneven: true)
            return ranges.map { MoERankShard(experts: $0, columns: 0..<dims.expertIntermediate) }
        case .columnSplit:
            let ranges = try ShardPlan.partition(dims.expertIntermediate, ranks: ranks, dimension: "moe_intermediate_size",
                                                 unit: max(1, blockSize), uneven: true)
            // When blocks do not divide evenly (704 = 22 x 32 over 4 ranks: 192/192/160/160) the
            // wider shares rotate with the expert id: expert e gives rank r the share of size
            // sizes[(r + e) % R]. Every rank then holds the same columns over all experts (equal
            // memory when R divides E) and a token's K experts average out at decode, instead
            // of ranks 0-1 always being the slowest.
            let sizes = ranges.map(\.count)
            var byRank = [[Range<Int>]](repeating: [], count: ranks)
            for e in 0..<dims.experts {
                var start = 0
                for r in 0..<ranks {
                    let n = sizes[(r + e) % ranks]
                    byRank[r].append(start..<(start + n))
                    start += n
                }
            }
            return byRank.map { MoERankShard(experts: 0..<dims.experts, columnsByExpert: $0) }
        }
    }
}

/// Errors of building or loading a MoE block.
public enum MoEError: Error, CustomStringConvertible, Equatable {
    case badDims(String)
    case shape(tensor: String, expected: String, got: String)
    case mixedTypes(tensor: String)

    public var description: String {
        switch self {
        case let .badDims(m): return "MoE: \(m)"
        case let .shape(t, e, g): return "MoE tensor \(t): expected \(e), got \(g)"
        case let .mixedTypes(t): return "MoE tensor \(t): gate and up slices came back in different types"
        }
    }
}

/// The replicated router: z = RMSNorm_noweight(r) * scale * H^-0.5, softmax(z Wᵀ) in f32,
/// top-k, renormalise to 1, times per_expert_scale of the chosen experts (exactly
/// transformers' Gemma4TextRouter).
public struct MoERouter: Sendable {
    /// [E, H]
    public let proj: WeightMatrix
    /// [H]
    public let scale: [Float]
    /// [E]
    public let perExpertScale: [Float]

    public init(proj: WeightMatrix, scale: [Float], perExpertScale: [Float]) throws {
        guard scale.count == proj.cols else {
            throw MoEError.shape(tensor: "router.scale", expected: "[\(proj.cols)]", got: "[\(scale.count)]")
        }
        guard perExpertScale.count == proj.rows else {
            throw MoEError.shape(tensor: "router.per_expert_scale", expected: "[\(proj.rows)]", got: "[\(perExpertScale.count)]")
        }
        self.proj = proj
        self.scale = scale
        self.perExpertScale = perExpertScale
    }

    /// Routes `tokens` rows of `x` ([T, H]): writes indices[t*K + s] (descending probability,
    /// lower expert id first on ties like a stable sort) and their final weights.
    /// `z` needs T*H floats and `logits` T*E floats of scratch.
    public func route(_ x: UnsafePointer<Float>, tokens t: Int, topK k: Int, eps: Float,
                      indices: UnsafeMutablePointer<Int32>, weights: UnsafeMutablePointer<Float>,
                      z: UnsafeMutablePointer<Float>, logits: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let h = proj.cols, e = proj.rows
        let root = 1 / Float(h).squareRoot()
        scale.withUnsafeBufferPointer { s in
            for i in 0..<t {
                let xr = x + i * h, zr = z + i * h
                var ss: Float = 0
                for j in 0..<h { ss += xr[j] * xr[j] }
                // torch: x * pow(mean + eps, -0.5), then * scale * H^-0.5 (left to right)
                let inv = powf(ss / Float(h) + eps, -0.5)
                for j in 0..<h { zr[j] = xr[j] * inv * s[j] * root }
            }
        }
        matmul(proj, x: z, xStride: h, tokens: t, y: logits, yStride: e, pool: pool)
        for i in 0..<t {
            let l = logits + i * e
            var m = -Float.infinity
            for j in 0..<e { m = max(m, l[j]) }
            var sum: Float = 0
            for j in 0..<e { l[j] = expf(l[j] - m); sum += l[j] }
            for j in 0..<e { l[j] /= sum }
            // Top-k by repeated selection: K <= E is small (8 of 128); strict > keeps the
            // lowest id among equal probabilities.
            let idx = indices + i * k, w = weights + i * k
            var total: Float = 0
            for s in 0..<k {
                var best = -1
                var bestP = -Float.infinity
                for j in 0..<e where l[j] > bestP {
                    var taken = false
                    for u in 0..<s where Int(idx[u]) == j { taken = true; break }
                    if !taken { best = j; bestP = l[j] }
                }
                if best < 0 {
                    // Only when probabilities are NaN (a non-finite residual): take the lowest
                    // free id so indices stay valid and the NaN flows on instead of trapping.
                    best = (0..<e).first { j in !(0..<s).contains { Int(idx[$0]) == j } } ?? 0
                    bestP = l[best]
                }
                idx[s] = Int32(best)
                w[s] = bestP
                total += bestP
            }
            for s in 0..<k { w[s] = w[s] / total * perExpertScale[Int(idx[s])] }
        }
    }
}

/// One expert's slice on this rank.
public struct ExpertWeights: Sendable {
    /// [2 * IR, H]: gate rows [a, b) then up rows [a, b) of the stored gate_up_proj[e]
    /// (so one matmul yields [gate | up] per token and the GeGLU product stays local).
    public let gateUp: WeightMatrix
    /// [H, IR]: columns [a, b) of down_proj[e].
    public let down: WeightMatrix

    public var byteCount: Int { gateUp.byteCount + down.byteCount }
}

/// Scratch of the MoE forward, grown on demand and shared by every MoE layer of a shard
/// (layers run one at a time). Not for concurrent use.
public final class MoEScratch: @unchecked Sendable {
    var capacityTokens = 0
    var capacityWidth = 0
    // "rows" = max(T, min(T, groupedTokenLimit) * K): grouped steps give every (token, slot)
    // pair its own row so experts running side by side never share one.
    var z = AlignedBuffer(byteCount: 0)        // [rows, H] router input, then gathered expert input
    var logits = AlignedBuffer(byteCount: 0)   // [T, E]
    var eIn = AlignedBuffer(byteCount: 0)      // [T, H] pre_feedforward_layernorm_2(residual)
    var gu = AlignedBuffer(byteCount: 0)       // [rows, 2 * max IR]
    var y = AlignedBuffer(byteCount: 0)        // [rows, H] expert output rows
    var indices: [Int32] = []                  // [T, K]
    var weights: [Float] = []                  // [T, K]
    var order: [Int32] = []                    // [T * K] (token, slot) pairs grouped by expert
    var starts: [Int] = []                     // [E + 1] offsets into `order`
    var experts = 0
    var singles: [ThreadPool] = []

    public init() {}

    /// `count` single-thread pools (0 workers each: matmul runs inline on the calling thread,
    /// with its own activation scratch).
    func singleThreadPools(_ count: Int) -> [ThreadPool] {
        while singles.count < count { singles.append(ThreadPool(threads: 1)) }
        return singles
    }

    func reserve(tokens t: Int, dims d: MoEDims, width: Int) {
        func floats(_ c: Int) -> AlignedBuffer { AlignedBuffer(byteCount: c * MemoryLayout<Float>.stride) }
        let rowsNeeded = max(t, min(t, MoEBlock.groupedTokenLimit) * d.topK)
        if t > capacityTokens || d.experts > experts || z.byteCount < rowsNeeded * d.hidden * 4 || y.byteCount < rowsNeeded * d.hidden * 4 {
            capacityTokens = max(t, capacityTokens)
            experts = max(experts, d.experts)
            let n = capacityTokens
            // z, gu, y hold one row per (token, slot) pair in grouped steps (<= groupedTokenLimit tokens).
            let rows = max(n, min(n, MoEBlock.groupedTokenLimit) * d.topK)
            z = floats(rows * d.hidden); logits = floats(n * experts); eIn = floats(n * d.hidden); y = floats(rows * d.hidden)
            gu = floats(rows * 2 * max(width, capacityWidth))
            capacityWidth = max(width, capacityWidth)
            indices = []
        } else if width > capacityWidth {
            capacityWidth = width
            gu = floats(max(capacityTokens, min(capacityTokens, MoEBlock.groupedTokenLimit) * d.topK) * 2 * width)
        }
        if indices.count < capacityTokens * d.topK {
            indices = [Int32](repeating: 0, count: capacityTokens * d.topK)
            weights = [Float](repeating: 0, count: capacityTokens * d.topK)
            order = [Int32](repeating: 0, count: capacityTokens * d.topK)
        }
        if starts.count < d.experts + 1 { starts = [Int](repeating: 0, count: d.experts + 1) }
    }
}

/// One MoE layer on this rank: router (replicated), pre_feedforward_layernorm_2, and the
/// experts this rank holds.
public struct MoEBlock: Sendable {
    public let dims: MoEDims
    public let shard: MoERankShard
    public let router: MoERouter
    /// pre_feedforward_layernorm_2 multiplier [H] (Gemma 4 norms multiply by w, no +1).
    public let preNorm: [Float]
    /// experts[j] is global expert shard.experts.lowerBound + j.
    public let experts: [ExpertWeights]
    public let scratch: MoEScratch
    /// Whether decode-sized steps run experts side by side on the pool (default; false splits
    /// every expert's matmuls over the threads instead — benchmarks compare the two).
    public var groupedDecode = true

    public init(dims: MoEDims, shard: MoERankShard, router: MoERouter, preNorm: [Float], experts: [ExpertWeights], scratch: MoEScratch) throws {
        guard router.proj.rows == dims.experts, router.proj.cols == dims.hidden else {
            throw MoEError.shape(tensor: "router.proj", expected: "[\(dims.experts), \(dims.hidden)]", got: "[\(router.proj.rows), \(router.proj.cols)]")
        }
        guard preNorm.count == dims.hidden else {
            throw MoEError.shape(tensor: "pre_feedforward_layernorm_2", expected: "[\(dims.hidden)]", got: "[\(preNorm.count)]")
        }
        guard shard.experts.lowerBound >= 0, shard.experts.upperBound <= dims.experts,
              shard.columnsByExpert.count == shard.experts.count,
              shard.columnsByExpert.allSatisfy({ $0.lowerBound >= 0 && $0.upperBound <= dims.expertIntermediate && !$0.isEmpty }) else {
            throw MoEError.badDims("shard \(shard.experts) / \(shard.columnsByExpert.count) column ranges does not fit \(dims.experts) experts of \(dims.expertIntermediate) columns")
        }
        guard experts.count == shard.experts.count else {
            throw MoEError.badDims("\(experts.count) expert slices for the \(shard.experts.count) experts of the shard")
        }
        for (j, x) in experts.enumerated() {
            let e = shard.experts.lowerBound + j
            let ir = shard.columnsByExpert[j].count
            guard x.gateUp.rows == 2 * ir, x.gateUp.cols == dims.hidden else {
                throw MoEError.shape(tensor: "experts.gate_up_proj[\(e)] slice", expected: "[\(2 * ir), \(dims.hidden)]", got: "[\(x.gateUp.rows), \(x.gateUp.cols)]")
            }
            guard x.down.rows == dims.hidden, x.down.cols == ir else {
                throw MoEError.shape(tensor: "experts.down_proj[\(e)] slice", expected: "[\(dims.hidden), \(ir)]", got: "[\(x.down.rows), \(x.down.cols)]")
            }
        }
        self.dims = dims
        self.shard = shard
        self.router = router
        self.preNorm = preNorm
        self.experts = experts
        self.scratch = scratch
    }

    /// Bytes of expert weights this rank holds (the part that scales with E; the router and
    /// norms are replicated and tiny).
    public var expertBytes: Int { experts.reduce(0) { $0 + $1.byteCount } }
    /// Bytes of the replicated router + norm.
    public var replicatedBytes: Int { router.proj.byteCount + 4 * (router.scale.count + router.perExpertScale.count + preNorm.count) }

    /// This rank's partial MoE output for `tokens` rows of `residual` ([T, H], the stream
    /// entering the FFN block, NOT normed) into `partial` ([T, H], overwritten). Summing the
    /// partials of all ranks gives Σ_k w_k · expert_k(pre_feedforward_layernorm_2(residual)),
    /// before post_feedforward_layernorm_2 (which the caller applies after the all-reduce).
    /// No communication.
    public func callAsFunction(residual: UnsafePointer<Float>, tokens t: Int, into partial: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let h = dims.hidden, k = dims.topK, irMax = shard.maxWidth
        let s = scratch
        s.reserve(tokens: t, dims: dims, width: irMax)
        let z = s.z.floats().baseAddress!, eIn = s.eIn.floats().baseAddress!
        let gu = s.gu.floats().baseAddress!, y = s.y.floats().baseAddress!
        s.indices.withUnsafeMutableBufferPointer { idx in
            s.weights.withUnsafeMutableBufferPointer { w in
                router.route(residual, tokens: t, topK: k, eps: dims.eps, indices: idx.baseAddress!, weights: w.baseAddress!,
                             z: z, logits: s.logits.floats().baseAddress!, pool: pool)
            }
        }
        normalize(residual, rows: t, into: eIn)
        partial.initialize(repeating: 0, count: t * h)

        // Group the (token, slot) pairs by expert (counting sort, tokens ascending within an
        // expert) so each held expert runs once over all its tokens.
        let local = shard.experts
        for e in 0...dims.experts { s.starts[e] = 0 }
        for j in 0..<(t * k) { s.starts[Int(s.indices[j]) + 1] += 1 }
        for e in 0..<dims.experts { s.starts[e + 1] += s.starts[e] }
        var fill = Array(s.starts[0..<dims.experts])
        for j in 0..<(t * k) {
            let e = Int(s.indices[j])
            s.order[fill[e]] = Int32(j)
            fill[e] += 1
        }

        // The held experts that some token chose, ascending.
        var hit: [Int] = []
        for e in local where s.starts[e + 1] > s.starts[e] { hit.append(e) }
        let order = s.order, starts = s.starts
        let ctx = UnsafeSendableBox((eIn: eIn, z: z, gu: gu, y: y))
        /// Expert e over its n tokens, rows [base, base + n) of the z / gu / y scratch.
        func runExpert(_ e: Int, base: Int, pool: ThreadPool) {
            let c = ctx.value
            let x = experts[e - local.lowerBound]
            let ir = x.down.cols
            let first = starts[e], n = starts[e + 1] - first
            // Rows of gu keep the widest stride so experts of different widths never overlap.
            let zr = c.z + base * h, gr = c.gu + base * 2 * irMax, yr = c.y + base * h
            // Gather the tokens' normed rows (one token: read eIn in place).
            let input: UnsafePointer<Float>
            if t == 1 {
                input = UnsafePointer(c.eIn)
            } else {
                for r in 0..<n { (zr + r * h).update(from: c.eIn + (Int(order[first + r]) / k) * h, count: h) }
                input = UnsafePointer(zr)
            }
            matmul(x.gateUp, x: input, xStride: h, tokens: n, y: gr, yStride: 2 * ir, pool: pool)
            for r in 0..<n {
                let row = gr + r * 2 * ir
                geluMul(row, row + ir, count: ir)  // gate = gelu_tanh(gate) * up, SIMD (GemmaKernels)
            }
            matmul(x.down, x: gr, xStride: 2 * ir, tokens: n, y: yr, yStride: h, pool: pool)
        }
        /// partial[token] += w · y for expert e's rows (starting at scratch row `base`).
        func accumulate(_ e: Int, base: Int) {
            let first = starts[e], n = starts[e + 1] - first
            for r in 0..<n {
                let pair = Int(order[first + r])
                let wt = s.weights[pair]
                let yr = y + (base + r) * h, out = partial + (pair / k) * h
                for c in 0..<h { out[c] += yr[c] * wt }
            }
        }

        if groupedDecode && pool.threads > 1 && t <= MoEBlock.groupedTokenLimit && hit.count > 1 {
            // Decode-sized steps: one pool dispatch for the whole layer, held experts spread
            // over the threads, each expert's two small matmuls on that thread's private
            // single-thread pool (instead of 2 dispatches per expert; every row is still
            // computed by the same kernel, so the result is identical). Rows are laid out by
            // the (token, slot) order, so experts never share scratch rows.
            let singles = s.singleThreadPools(pool.threads)
            pool.parallelForThreads(hit.count) { begin, end, thread in
                for j in begin..<end { runExpert(hit[j], base: starts[hit[j]], pool: singles[thread]) }
            }
            // Experts in ascending id, each adding w · y into its tokens' rows: the same
            // accumulation order as transformers' index_add_ loop.
            for e in hit { accumulate(e, base: starts[e]) }
        } else {
            for e in hit {
                runExpert(e, base: 0, pool: pool)
                accumulate(e, base: 0)
            }
        }
    }

    /// Steps of at most this many tokens run their experts side by side on the pool's threads
    /// (one dispatch per layer); larger ones split each expert's matmuls over the threads.
    public static let groupedTokenLimit = 8

    /// pre_feedforward_layernorm_2 (torch: x * pow(mean(x²) + eps, -0.5) * w).
    func normalize(_ x: UnsafePointer<Float>, rows: Int, into out: UnsafeMutablePointer<Float>) {
        let h = dims.hidden
        preNorm.withUnsafeBufferPointer { w in
            for r in 0..<rows {
                let xr = x + r * h, o = out + r * h
                var ss: Float = 0
                for j in 0..<h { ss += xr[j] * xr[j] }
                let inv = powf(ss / Float(h) + dims.eps, -0.5)
                for j in 0..<h { o[j] = xr[j] * inv * w[j] }
            }
        }
    }

    /// The experts one token chose (global ids) and their weights, as this rank's router
    /// computes them (tests, debugging, imbalance statistics).
    public func routing(residual: UnsafePointer<Float>, tokens t: Int, pool: ThreadPool) -> (indices: [Int32], weights: [Float]) {
        let s = scratch
        s.reserve(tokens: t, dims: dims, width: shard.maxWidth)
        var idx = [Int32](repeating: 0, count: t * dims.topK)
        var w = [Float](repeating: 0, count: t * dims.topK)
        idx.withUnsafeMutableBufferPointer { ib in
            w.withUnsafeMutableBufferPointer { wb in
                router.route(residual, tokens: t, topK: dims.topK, eps: dims.eps, indices: ib.baseAddress!, weights: wb.baseAddress!,
                             z: s.z.floats().baseAddress!, logits: s.logits.floats().baseAddress!, pool: pool)
            }
        }
        return (idx, w)
    }
}

// MARK: Loading

// Building one rank's MoE block from a checkpoint: only the rank's experts / columns are
// read (the 3-D expert tensors are addressed as 2-D row/column slices), so a rank holds
// about 1/N of the expert weights. Works for any source that can cut a 2-D slice
// (safetensors, GGUF, in-memory arrays for tests).

/// The checkpoint tensors of one MoE layer, with the 2-D view `MoETensorReader` slices.
public enum MoETensor: Sendable, Hashable, CustomStringConvertible {
    /// [E, H]
    case routerProj
    /// [H] (no `.weight` suffix in HF)
    case routerScale
    /// [E] (no `.weight` suffix in HF)
    case perExpertScale
    /// HF [E, 2·Ie, H] viewed as [E·2Ie, H]: expert e's gate rows are e·2Ie + (0..<Ie), its up
    /// rows e·2Ie + Ie + (0..<Ie). GGUF `ffn_gate_up_exps` (ne [H, 2Ie, E]) has the same view.
    case gateUp
    /// HF [E, H, Ie] viewed as [E·H, Ie]: expert e's rows are e·H + (0..<H).
    case down
    /// pre_feedforward_layernorm_2 [H]
    case preNorm2

    /// The table's tensor of this kind in layer `i` (TensorTable.swift holds its names and shapes).
    public func logical(layer i: Int) -> LogicalTensor {
        switch self {
        case .routerProj: return .routerProj(i)
        case .routerScale: return .routerScale(i)
        case .perExpertScale: return .routerPerExpertScale(i)
        case .gateUp: return .expertsGateUp(i)
        case .down: return .expertsDown(i)
        case .preNorm2: return .preFeedforwardNorm2(i)
        }
    }

    /// The name after the model prefix in a Hugging Face checkpoint (e.g. after "model.language_model."), from the table.
    public func hfName(layer i: Int) -> String { TensorTable.hfName(logical(layer: i), layer: i) ?? "" }

    public var description: String { hfName(layer: 0).replacingOccurrences(of: "layers.0.", with: "") }
}

/// How the MoE loader reads one layer's tensors.
public struct MoETensorReader: Sendable {
    /// Rows `rows` and columns `cols` of the tensor's 2-D view (see `MoETensor`), in its
    /// stored type; must throw when the range is outside the tensor.
    public let matrix: @Sendable (_ tensor: MoETensor, _ rows: Range<Int>, _ cols: Range<Int>) throws -> WeightMatrix
    /// A whole small tensor as f32 (router.scale, per_expert_scale, the norm).
    public let floats: @Sendable (_ tensor: MoETensor) throws -> [Float]

    public init(matrix: @escaping @Sendable (MoETensor, Range<Int>, Range<Int>) throws -> WeightMatrix,
                floats: @escaping @Sendable (MoETensor) throws -> [Float]) {
        self.matrix = matrix
        self.floats = floats
    }

    /// A reader over full f32 arrays held in memory (tests; small checkpoints already converted).
    /// `tensors[t]` is (2-D view shape [rows, cols], values row-major).
    public static func inMemory(_ tensors: [MoETensor: (shape: [Int], values: [Float])]) -> MoETensorReader {
        MoETensorReader(
            matrix: { t, rows, cols in
                guard let (shape, values) = tensors[t] else { throw MoEError.shape(tensor: "\(t)", expected: "a tensor", got: "none") }
                guard shape.count == 2, rows.lowerBound >= 0, rows.upperBound <= shape[0], cols.lowerBound >= 0, cols.upperBound <= shape[1] else {
                    throw MoEError.shape(tensor: "\(t)", expected: "a slice of \(shape)", got: "rows \(rows), cols \(cols)")
                }
                var slice: [Float] = []
                slice.reserveCapacity(rows.count * cols.count)
                for r in rows { slice.append(contentsOf: values[(r * shape[1] + cols.lowerBound)..<(r * shape[1] + cols.upperBound)]) }
                return try WeightMatrix.f32(rows: rows.count, cols: cols.count, values: slice)
            },
            floats: { t in
                guard let (_, values) = tensors[t] else { throw MoEError.shape(tensor: "\(t)", expected: "a tensor", got: "none") }
                return values
            })
    }
}

extension MoEBlock {
    /// This rank's block of one layer, reading only the slices `shard` names: for each held
    /// expert e, gate rows [a, b) and up rows [Ie + a, Ie + b) (packed into one [2·IR, H]
    /// matrix) and down columns [a, b). Router and norm are read whole (replicated).
    public static func load(dims: MoEDims, shard: MoERankShard, read: MoETensorReader, scratch: MoEScratch) throws -> MoEBlock {
        let h = dims.hidden, ie = dims.expertIntermediate
        // The router must see float weights: a block-format matmul also quantizes its input to
        // int8, and the rounding flips near-tied top-k choices against transformers (llama.cpp
        // keeps ffn_gate_inp in F32 for the same reason). A router that comes back in a block
        // format (quantize-on-load, or stored so) is replaced by its f32 values.
        var proj = try read.matrix(.routerProj, 0..<dims.experts, 0..<h)
        if proj.type.blockSize > 1 {
            let values = try read.floats(.routerProj)
            guard values.count == dims.experts * h else {
                throw MoEError.shape(tensor: "router.proj", expected: "\(dims.experts * h) values", got: "\(values.count)")
            }
            proj = try WeightMatrix.f32(rows: dims.experts, cols: h, values: values)
        }
        let router = try MoERouter(proj: proj, scale: try read.floats(.routerScale), perExpertScale: try read.floats(.perExpertScale))
        var experts: [ExpertWeights] = []
        experts.reserveCapacity(shard.experts.count)
        for e in shard.experts {
            let a = shard.columns(of: e).lowerBound, b = shard.columns(of: e).upperBound
            let gate = try read.matrix(.gateUp, (e * 2 * ie + a)..<(e * 2 * ie + b), 0..<h)
            let up = try read.matrix(.gateUp, (e * 2 * ie + ie + a)..<(e * 2 * ie + ie + b), 0..<h)
            let down = try read.matrix(.down, (e * h)..<((e + 1) * h), a..<b)
            experts.append(ExpertWeights(gateUp: try stack(gate, up, tensor: "experts.gate_up_proj[\(e)]"), down: down))
        }
        return try MoEBlock(dims: dims, shard: shard, router: router, preNorm: try read.floats(.preNorm2),
                            experts: experts, scratch: scratch)
    }

    /// The block from full f32 arrays in checkpoint layout (every rank passes the same full
    /// tensors; only `shard`'s part is kept). For tests and small models.
    public static func fromFloats(dims: MoEDims, shard: MoERankShard, routerProj: [Float], routerScale: [Float], perExpertScale: [Float],
                                  preNorm2: [Float], gateUp: [Float], down: [Float], scratch: MoEScratch) throws -> MoEBlock {
        let e = dims.experts, h = dims.hidden, ie = dims.expertIntermediate
        for (name, got, want) in [("router.proj", routerProj.count, e * h), ("experts.gate_up_proj", gateUp.count, e * 2 * ie * h),
                                  ("experts.down_proj", down.count, e * h * ie)] where got != want {
            throw MoEError.shape(tensor: name, expected: "\(want) values", got: "\(got)")
        }
        let reader = MoETensorReader.inMemory([
            .routerProj: ([e, h], routerProj), .routerScale: ([1, routerScale.count], routerScale),
            .perExpertScale: ([1, perExpertScale.count], perExpertScale), .preNorm2: ([1, preNorm2.count], preNorm2),
            .gateUp: ([e * 2 * ie, h], gateUp), .down: ([e * h, ie], down),
        ])
        return try load(dims: dims, shard: shard, read: reader, scratch: scratch)
    }

    /// Rows of `top` then rows of `bottom` in one matrix (same type and columns).
    static func stack(_ top: WeightMatrix, _ bottom: WeightMatrix, tensor: String) throws -> WeightMatrix {
        guard top.type == bottom.type, top.cols == bottom.cols else { throw MoEError.mixedTypes(tensor: tensor) }
        let m = try WeightMatrix(type: top.type, rows: top.rows + bottom.rows, cols: top.cols)
        m.storage.pointer.copyMemory(from: top.storage.pointer, byteCount: top.byteCount)
        (m.storage.pointer + top.byteCount).copyMemory(from: bottom.storage.pointer, byteCount: bottom.byteCount)
        return m
    }
}
