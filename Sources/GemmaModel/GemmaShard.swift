// One rank's shard of a Gemma 1-4 text decoder and its batched forward pass: one
// config-driven path (flags for post-norms, QK-norm, soft-caps, window pattern, query scale;
// Gemma 4: per-layer head dims, partial/proportional RoPE, V-norm, K = V, KV sharing, PLE,
// layer scalar, double-wide MLP), tensor-parallel over a `Communicator`. Loading lives in GemmaLoader.swift, the KV cache in
// KVCache.swift; this file is the math.
//
// Dimension legend (per step):
//   T   tokens in the batch (<= maxBatchTokens)      H   hidden size
//   d   head dim          nqR / nkvR   query / KV heads on this rank
//   IR  MLP columns on this rank        VR  vocabulary rows on this rank
//   R   rows that want logits (<= T)
//   L   layers        P   per-layer embedding width (Gemma 4 PLE)
import Foundation
import GemmaKernels
import GemmaParallel

/// Input errors of `forward`; identical on every rank for the same batch, so the engine can
/// agree on them without extra messages.
public enum GemmaModelError: Error, CustomStringConvertible, Equatable {
    case tokenOutOfVocabulary(token: Int32, vocabSize: Int)
    case slotOutOfRange(slot: Int, slots: Int)
    case positionBeyondContext(slot: Int, position: Int, maxContext: Int)
    case positionGap(slot: Int, expected: Int, got: Int)
    case batchTooLarge(tokens: Int, maxBatchTokens: Int)
    case prefixUnavailable(slot: Int, source: Int, length: Int)

    public var description: String {
        switch self {
        case let .tokenOutOfVocabulary(t, v): return "token id \(t) is outside the vocabulary (0..<\(v))"
        case let .slotOutOfRange(s, n): return "KV-cache slot \(s) is out of range (0..<\(n))"
        case let .positionBeyondContext(s, p, c): return "slot \(s): position \(p) is beyond the context of \(c) tokens"
        case let .positionGap(s, e, g): return "slot \(s): position \(g) does not continue the cached prefix (next position is \(e); 0 restarts the slot)"
        case let .batchTooLarge(t, m): return "a step of \(t) tokens exceeds maxBatchTokens \(m)"
        case let .prefixUnavailable(s, src, n):
            return "slot \(s): slot \(src) does not hold the first \(n) positions intact; the prefix cannot be reused"
        }
    }
}

/// Weights of one decoder layer on this rank. Norm vectors already hold the multiplier
/// (1 + w for Gemma 1-3 checkpoints).
struct LayerWeights {
    let type: LayerType
    let shard: LayerShard
    /// [H] each; pre/post feed-forward and post-attention are empty where the generation has none.
    let inputNorm: [Float], postAttentionNorm: [Float], preFeedforwardNorm: [Float], postFeedforwardNorm: [Float]
    /// [d] each, empty without QK-norm.
    let qNorm: [Float], kNorm: [Float]
    /// q: [nqR * d, H]; k, v: [nkvR * d, H]
    let q: ColumnParallelLinear, k: ColumnParallelLinear, v: ColumnParallelLinear
    /// [H, nqR * d]
    let o: RowParallelLinear
    /// gate, up: [IR, H]
    let gate: ColumnParallelLinear, up: ColumnParallelLinear
    /// [H, IR]
    let down: RowParallelLinear
    // Gemma 4 (the defaults mean "absent", i.e. Gemma 1-3 behaviour).
    /// Layer whose KV cache this layer attends to: itself, or a KV consumer's producer.
    var kvSource: Int? = nil
    /// False for k_eq_v full layers (V = raw K projection; `v` is then an empty matrix).
    var hasVProj: Bool = true
    /// Multiplies the residual stream at the end of the layer.
    var layerScalar: Float = 1
    /// Per-layer-embedding gate and projection, nil without PLE.
    var ple: PLELayerWeights? = nil
    /// Mixture-of-experts block (26B-A4B; MoE.swift) and the norms around it, nil without.
    var moe: MoEBlock? = nil
    /// [H] post_feedforward_layernorm_1 (dense branch) and _2 (experts), MoE layers only.
    var postFeedforwardNorm1: [Float] = [], postFeedforwardNorm2: [Float] = []
}

/// One layer's PLE injection weights (replicated: P x H each, tiny).
struct PLELayerWeights {
    /// [P, H]
    let gate: WeightMatrix
    /// [H, P]
    let projection: WeightMatrix
    /// [H] post_per_layer_input_norm multiplier.
    let postNorm: [Float]
}

/// The model-level PLE weights: the table is vocab-parallel like the main embedding (no rank
/// holds all of it); the context projection is replicated (L·P x H, ~0.3 % of E2B).
struct PLEWeights {
    /// [VpleR, L·P] rows of embed_tokens_per_layer owned by this rank.
    let table: VocabParallelEmbedding
    /// [L·P, H]
    let modelProjection: WeightMatrix
    /// [P] per_layer_projection_norm multiplier (shared by every layer's slice).
    let projectionNorm: [Float]
    /// Rows of the whole table (tokens at or above it are invalid).
    let vocabSize: Int
}

/// Scratch buffers for one step, allocated once at load (llama2.c's RunState).
struct Activations {
    let x: AlignedBuffer       // [T, H] residual stream (replicated)
    let normed: AlignedBuffer  // [T, H]
    let branch: AlignedBuffer  // [T, H] o_proj / down_proj output (all-reduced)
    let q: AlignedBuffer       // [T, nqR * d]
    let k: AlignedBuffer       // [T, nkvR * d]
    let v: AlignedBuffer       // [T, nkvR * d]
    let attn: AlignedBuffer    // [T, nqR * d]
    let gate: AlignedBuffer    // [T, IR]
    let up: AlignedBuffer      // [T, IR]
    /// RoPE tables per layer type, filled once per step: [T, d_type/2] each.
    let cos: [LayerType: AlignedBuffer]
    let sin: [LayerType: AlignedBuffer]
    let scores: AlignedBuffer  // [threads, maxKeys]
    let logitRows: AlignedBuffer // [T, H] final-normed rows that want logits
    /// [rows, VR]: sized for one row per slot at load (the steady state: each sequence wants
    /// the logits of its last token). A step wanting more rows (e.g. logits at every prompt
    /// position) grows it once; sizing it for maxBatchTokens rows up front would cost
    /// maxBatchTokens x VR floats (512 MiB for a 262144 vocabulary on one rank).
    var logits: AlignedBuffer
    var logitCapacityRows: Int
    let vocabWidth: Int
    /// Gemma 4 PLE: [T, L·P] per-layer inputs, [T, P] gate scratch (empty without PLE).
    let ple: AlignedBuffer
    let pleTokens: AlignedBuffer
    let pleGate: AlignedBuffer
    /// MoE layers: [2, T, H] dense partial then experts' partial, all-reduced together.
    let ffn: AlignedBuffer

    init(config c: GemmaConfig, maxTokens t: Int, qWidth: Int, kvWidth: Int, mlpWidth: Int, vocabWidth: Int, threads: Int, maxKeys: Int, logitRows rows: Int) {
        func floats(_ n: Int) -> AlignedBuffer { AlignedBuffer(byteCount: n * MemoryLayout<Float>.stride) }
        let h = c.hiddenSize
        x = floats(t * h); normed = floats(t * h); branch = floats(t * h)
        q = floats(t * qWidth); k = floats(t * kvWidth); v = floats(t * kvWidth); attn = floats(t * qWidth)
        gate = floats(t * mlpWidth); up = floats(t * mlpWidth)
        cos = [.sliding: floats(t * c.headDim(for: .sliding) / 2), .full: floats(t * c.headDim(for: .full) / 2)]
        sin = [.sliding: floats(t * c.headDim(for: .sliding) / 2), .full: floats(t * c.headDim(for: .full) / 2)]
        let lp = c.numHiddenLayers * c.perLayerInputSize
        ple = floats(t * lp); pleTokens = floats(t * lp); pleGate = floats(t * c.perLayerInputSize)
        ffn = floats(c.isMoE ? 2 * t * h : 0)
        scores = floats(threads * maxKeys)
        logitRows = floats(t * h)
        logitCapacityRows = min(rows, t)
        logits = floats(logitCapacityRows * vocabWidth)
        self.vocabWidth = vocabWidth
    }
}

/// This rank's shard of a Gemma 1-4 decoder. Create with `GemmaShard.load`.
public final class GemmaShard: ShardedCausalLM {
    public let config: GemmaConfig
    public let plan: ShardPlan
    public let comm: any Communicator
    public let pool: ThreadPool
    public let vocabSize: Int
    public let sampleableVocab: Int
    public let vocabRange: Range<Int>
    public let maxContext: Int
    public let slots: Int
    public let maxBatchTokens: Int
    /// Ids that end a sequence (config.json and generation_config.json `eos_token_id`).
    public internal(set) var stopTokenIds: [Int] = []

    /// Called after the embedding (index 0) and after each layer (index i + 1) with the
    /// residual stream [T, H], and with the final-norm output at index L: the layout of
    /// transformers' `hidden_states`, for localising mismatches in tests.
    public var hiddenStateObserver: ((Int, UnsafeBufferPointer<Float>) -> Void)?

    /// Run dense layers of large batches as two halves whose all-reduces overlap the other
    /// half's computation (`transformerBlock` with `halves`). Every product, norm and attention
    /// is computed row by row, so the halves give the whole batch's values; the sums over
    /// ranks are bit-identical where the transport adds in an order that does not depend on
    /// the buffer's length (LocalCommunicator; any MPI at 2 ranks, where a + b = b + a).
    public var overlap = false
    /// The smallest batch that is split: two halves of 16 rows keep the matrix kernels on
    /// their multi-token path; below that the step is a decode step, whose all-reduces are
    /// latency-bound and gain nothing from halving.
    public static let overlapMinimumRows = 32

    let layers: [LayerWeights]
    /// [VR, H] vocab-parallel embedding; the tied LM head unless `lmHead` is set.
    let embedding: VocabParallelEmbedding
    /// [VR, H] separate LM head (untied checkpoints).
    let lmHead: VocabParallelEmbedding?
    /// [H] final norm multiplier.
    let finalNorm: [Float]
    /// sqrt(H) rounded to the embedding dtype (GEMMA_SPEC §2.2).
    let embedScale: Float
    /// RoPE inverse frequencies per layer type, [d/2].
    let inverseFrequencies: [LayerType: [Float]]
    let attentionScale: Float
    let cache: KVCache
    var act: Activations
    /// Gemma 4 per-layer embeddings (nil without PLE).
    let ple: PLEWeights?

    init(config: GemmaConfig, plan: ShardPlan, comm: any Communicator, pool: ThreadPool, layers: [LayerWeights],
         embedding: VocabParallelEmbedding, lmHead: VocabParallelEmbedding?, finalNorm: [Float],
         maxContext: Int, slots: Int, maxBatchTokens: Int, ple: PLEWeights? = nil, kvType: KVCacheType = .f16) {
        self.ple = ple
        self.config = config
        self.plan = plan
        self.comm = comm
        self.pool = pool
        self.layers = layers
        self.embedding = embedding
        self.lmHead = lmHead
        self.finalNorm = finalNorm
        self.vocabSize = config.vocabSize
        // Gemma 3 4B+ configs pad the vocabulary to 262208; the tokenizer has 262144 entries.
        self.sampleableVocab = config.vocabSize > 262144 ? 262144 : config.vocabSize
        self.vocabRange = embedding.vocabRange
        self.maxContext = maxContext
        self.slots = slots
        self.maxBatchTokens = maxBatchTokens

        // Activations are f32 whatever the weight dtype, so the scale is the exact f32 sqrt(H)
        // (transformers run in float32 does the same; in bf16 it would round to 55.5 etc.).
        embedScale = Self.embeddingScale(hiddenSize: config.hiddenSize, activationType: .f32)

        var inv: [LayerType: [Float]] = [:]
        for (type, rope) in config.ropeParameters {
            inv[type] = Self.inverseFrequencies(rope, headDim: config.headDim(for: type))
        }
        inverseFrequencies = inv
        attentionScale = Float(1.0 / config.queryPreAttnScalar.squareRoot())

        let shards = layers.map(\.shard)
        cache = KVCache(layers: shards.enumerated().map { i, s in
            // KV consumers (Gemma 4) keep no cache of their own: they read their producer's.
            KVCache.LayerSpec(kvHeads: layers[i].kvSource == nil ? s.kvHeads.count : 0, headDim: s.headDim,
                              capacity: KVCache.capacity(window: nil, maxContext: maxContext, maxBatchTokens: maxBatchTokens))
        }.enumerated().map { i, spec in
            var spec = spec
            if layers[i].type == .sliding, let w = config.slidingWindow {
                spec.capacity = KVCache.capacity(window: w, maxContext: maxContext, maxBatchTokens: maxBatchTokens)
            }
            return spec
        }, slots: slots, type: kvType)
        let qWidth = shards.map { $0.qHeads.count * $0.headDim }.max() ?? 0
        let kvWidth = shards.map { $0.kvHeads.count * $0.headDim }.max() ?? 0
        let mlpWidth = shards.map { $0.mlpColumns.count }.max() ?? 0
        act = Activations(config: config, maxTokens: maxBatchTokens, qWidth: qWidth, kvWidth: kvWidth, mlpWidth: mlpWidth,
                          vocabWidth: embedding.vocabRange.count, threads: pool.threads, maxKeys: cache.maxCapacity,
                          logitRows: slots)
    }

    /// RoPE inverse frequencies [d/2] of one layer type, as transformers computes them:
    /// default/linear: 1 / theta^(2j/d) divided by the linear factor; proportional (Gemma 4
    /// full layers): the same exponent over the WHOLE head dim for the first
    /// floor(partial_rotary_factor · d / 2) pairs, 0 (no rotation) for the rest, divided by factor.
    static func inverseFrequencies(_ rope: RopeParameters, headDim d: Int) -> [Float] {
        let scaled = rope.ropeType == "linear" || rope.ropeType == "proportional"
        let factor = Float(scaled ? (rope.factor ?? 1) : 1)
        let rotated = rope.ropeType == "proportional"
            ? Int((rope.partialRotaryFactor ?? 1) * Double(d) / 2) : d / 2
        return (0..<(d / 2)).map { j in
            j < rotated ? Float(1.0 / pow(rope.ropeTheta, Double(2 * j) / Double(d))) / factor : 0
        }
    }

    /// sqrt(H) in the dtype activations are computed in: transformers casts the scale to the
    /// model's dtype before multiplying, so a bf16 run uses 55.5 for sqrt(3072) = 55.43 and a
    /// float32 run the exact value (GEMMA_SPEC §2.2). This engine computes in f32.
    public static func embeddingScale(hiddenSize: Int, activationType: WeightType) -> Float {
        let scale = Float(Double(hiddenSize).squareRoot())
        switch activationType {
        case .bf16: return bf16ToFloat(floatToBF16(scale))
        case .f16: return Float(Float16(scale))
        default: return scale
        }
    }

    public func release(slot: Int) {
        if slot >= 0 && slot < slots { cache.lengths[slot] = 0 }  // `held` stays: the entries remain reusable
    }

    /// Ring size of the layers whose ring wraps inside the context (sliding layers when the
    /// context is longer than window + maxBatchTokens); nil when no layer's ring wraps.
    var wrappingCapacity: Int? {
        cache.specs.filter { $0.kvHeads > 0 && $0.capacity < maxContext }.map(\.capacity).min()
    }

    /// Lowest position whose entries are intact in every wrapping layer of `source`: its ring
    /// holds position p at p % C, overwritten once the slot reached p + C, and entries below
    /// the floor came stale from another slot.
    func intactFrom(_ source: Int) -> Int {
        guard let c = wrappingCapacity else { return 0 }
        return max(cache.floors[source], cache.held[source] - c)
    }

    /// Global layers keep every position, so any prefix of what the slot held is intact there.
    /// A sliding layer's query at position k reads keys k - window + 1 ... k, so a sequence
    /// continuing from k needs k - window + 1 ..< k intact (later queries read later keys,
    /// which the ring keeps: its capacity is at least the window plus one batch). All or
    /// nothing: a shorter prefix would need older entries.
    public func reusablePrefix(source: Int, upTo length: Int) -> Int {
        guard source >= 0 && source < slots else { return 0 }
        let k = min(length, cache.held[source])
        guard k > 0 else { return 0 }
        let from = intactFrom(source)
        guard from > 0, let window = config.slidingWindow else { return k }
        return max(0, k - window + 1) >= from ? k : 0
    }

    public func reusePrefix(source: Int, into slot: Int, length: Int) throws {
        guard slot >= 0 && slot < slots else { throw GemmaModelError.slotOutOfRange(slot: slot, slots: slots) }
        guard length >= 1, reusablePrefix(source: source, upTo: length) == length else {
            throw GemmaModelError.prefixUnavailable(slot: slot, source: source, length: length)
        }
        let from = intactFrom(source)
        if source != slot {
            for (layer, spec) in cache.specs.enumerated() where spec.kvHeads > 0 {
                // Non-wrapping layers hold every position; a wrapping ring only its intact ones.
                let first = spec.capacity < maxContext ? min(length, max(from, length - spec.capacity)) : 0
                cache.copyRows(layer: layer, from: source, to: slot, positions: first..<length)
            }
        }
        cache.floors[slot] = from
        cache.held[slot] = length
        cache.lengths[slot] = length
    }

    /// Checks a batch without changing anything; the same batch gives the same error on every rank.
    public func validate(_ batch: [BatchEntry]) throws {
        if batch.count > maxBatchTokens { throw GemmaModelError.batchTooLarge(tokens: batch.count, maxBatchTokens: maxBatchTokens) }
        var next: [Int: Int] = [:]
        for e in batch {
            guard e.slot >= 0 && e.slot < slots else { throw GemmaModelError.slotOutOfRange(slot: e.slot, slots: slots) }
            guard e.token >= 0 && Int(e.token) < vocabSize else { throw GemmaModelError.tokenOutOfVocabulary(token: e.token, vocabSize: vocabSize) }
            if let ple, Int(e.token) >= ple.vocabSize {
                throw GemmaModelError.tokenOutOfVocabulary(token: e.token, vocabSize: ple.vocabSize)
            }
            guard e.position >= 0 && e.position < maxContext else {
                throw GemmaModelError.positionBeyondContext(slot: e.slot, position: e.position, maxContext: maxContext)
            }
            let expected = next[e.slot] ?? cache.lengths[e.slot]
            // Position 0 restarts a slot (its old entries are never read again).
            guard e.position == expected || (e.position == 0 && next[e.slot] == nil) else {
                throw GemmaModelError.positionGap(slot: e.slot, expected: expected, got: e.position)
            }
            next[e.slot] = e.position + 1
        }
    }

    public func forward(_ batch: [BatchEntry]) throws -> LogitsSlice {
        try validate(batch)
        // Every rank gets the same batch, so returning before any collective is safe.
        if batch.isEmpty { return LogitsSlice(vocabRange: vocabRange, rows: 0, values: UnsafeBufferPointer(act.logits.floats(count: 0))) }
        let t = batch.count
        let h = config.hiddenSize
        let x = act.x.floats(), normed = act.normed.floats()

        try embedding.lookup(batch.map(\.token), scale: embedScale, into: x.baseAddress!, comm: comm)
        if let ple { try perLayerInputs(ple, batch: batch) }
        for type in Set(config.layerTypes) { fillRope(type, batch: batch, headDim: config.headDim(for: type)) }
        observe(0, x, t * h)
        var live = batch   // the rows still being computed
        for (i, layer) in layers.enumerated() {
            // Gemma 4 KV sharing: from the first consumer layer on no layer writes K/V, so only
            // the rows whose logits are wanted still matter (GEMMA_SPEC §3.4.4): a prefill chunk
            // runs E2B's last 20 layers for one row. Skipped while an observer wants every row.
            if i == config.firstKVSharedLayer && i > 0 && hiddenStateObserver == nil && live.contains(where: { !$0.wantLogits }) {
                live = keepRowsWantingLogits(live)
                if live.isEmpty { break }   // same batch on every rank: every rank stops here
            }
            Activity.setLayer(i)  // what a stuck-rank report says this rank was doing
            let halves = overlap && comm.size > 1 && live.count >= Self.overlapMinimumRows && layer.moe == nil
            try transformerBlock(layer, index: i, batch: live, halves: halves)
            if i + 1 < layers.count { observe(i + 1, x, live.count * h) }
        }
        for e in batch where e.position == 0 || e.position >= cache.lengths[e.slot] {
            cache.lengths[e.slot] = e.position + 1
            cache.held[e.slot] = e.position + 1
            if e.position == 0 { cache.floors[e.slot] = 0 }  // computed from the start: nothing stale
        }

        // Final norm and LM head only for the rows that want logits.
        let wanted = live.indices.filter { live[$0].wantLogits }
        rmsNorm(x.baseAddress!, rows: live.count, weight: finalNorm, into: normed.baseAddress!)
        observe(layers.count, normed, live.count * h)
        let rows = act.logitRows.floats()
        for (r, i) in wanted.enumerated() {
            (rows.baseAddress! + r * h).update(from: normed.baseAddress! + i * h, count: h)
        }
        let head = lmHead ?? embedding
        let vr = vocabRange.count
        if wanted.count > act.logitCapacityRows {
            act.logitCapacityRows = wanted.count
            act.logits = AlignedBuffer(byteCount: wanted.count * vr * MemoryLayout<Float>.stride)
        }
        let logits = act.logits.floats(count: wanted.count * vr)
        if !wanted.isEmpty { head.logits(rows.baseAddress!, tokens: wanted.count, into: logits.baseAddress!, pool: pool) }
        if let cap = config.finalLogitSoftcapping { softcap(logits, cap: Float(cap)) }
        return LogitsSlice(vocabRange: vocabRange, rows: wanted.count, values: UnsafeBufferPointer(logits))
    }

    /// Moves the rows of `rows` that want logits to the front of every per-row buffer still
    /// read by later layers (residual stream, PLE inputs, RoPE tables) and returns them.
    func keepRowsWantingLogits(_ rows: [BatchEntry]) -> [BatchEntry] {
        let kept = rows.indices.filter { rows[$0].wantLogits }
        func compact(_ buffer: AlignedBuffer?, width: Int) {
            guard let buffer, width > 0 else { return }
            let p = buffer.floats().baseAddress!
            for (r, i) in kept.enumerated() where r != i { (p + r * width).update(from: p + i * width, count: width) }
        }
        compact(act.x, width: config.hiddenSize)
        compact(act.ple, width: config.numHiddenLayers * config.perLayerInputSize)
        for type in Set(config.layerTypes) {
            compact(act.cos[type], width: config.headDim(for: type) / 2)
            compact(act.sin[type], width: config.headDim(for: type) / 2)
        }
        return kept.map { rows[$0] }
    }

    /// One decoder layer, as in the papers' figure (GEMMA_SPEC §3). With `halves` (`--overlap
    /// on`, dense layers only) the rows run as two halves ordered so that each all-reduce is
    /// in flight while the other half computes: attention(A), start A's sum, attention(B),
    /// start B's sum; wait A, A's feed-forward, start its sum; wait B, B's feed-forward, start
    /// its sum; wait both. Only the last sum is exposed (a quarter of the layer's communication
    /// volume). B's attention reads the keys A stored in this layer (a sequence's rows are in
    /// position order, and A's come first). Without halves the rows are one part and each
    /// sum completes before the layer goes on, as a blocking all-reduce.
    func transformerBlock(_ l: LayerWeights, index: Int, batch: [BatchEntry], halves: Bool = false) throws {
        let t = batch.count
        let x = act.x.floats().baseAddress!, n = act.normed.floats().baseAddress!, b = act.branch.floats().baseAddress!
        let h = config.hiddenSize
        let parts = halves ? [0..<(t / 2), (t / 2)..<t] : [0..<t]
        /// Starts the sum of `count` floats at `p` over every rank: a blocking all-reduce when
        /// the rows are one part, a started one to wait for later when they are halves.
        func sum(_ p: UnsafeMutablePointer<Float>, count: Int) throws -> PendingCollective {
            guard comm.size > 1 else { return .done }
            let buffer = UnsafeMutableBufferPointer(start: p, count: count)
            guard halves else {
                try comm.allReduceSum(buffer)
                return .done
            }
            return try comm.startAllReduceSum(buffer)
        }

        // Attention: this rank's heads through o_proj give a partial sum; all-reduce #1.
        rmsNorm(x, rows: t, weight: l.inputNorm, into: n)
        var attentionSums: [PendingCollective] = []
        for rows in parts {
            attention(l, index: index, batch: halves ? Array(batch[rows]) : batch, input: n + rows.lowerBound * h,
                      into: b + rows.lowerBound * h, firstRow: rows.lowerBound)
            attentionSums.append(try sum(b + rows.lowerBound * h, count: rows.count * h))
        }

        // Feed-forward: this rank's MLP columns through down_proj give a partial sum; all-reduce
        // #2. Gemma 1 names its pre-MLP norm post_attention_layernorm.
        let ffn = l.moe == nil ? nil : act.ffn.floats(count: 2 * t * h).baseAddress!
        var feedForwardSums: [PendingCollective] = []
        for (k, rows) in parts.enumerated() {
            try attentionSums[k].wait()
            let xr = x + rows.lowerBound * h, br = b + rows.lowerBound * h, nr = n + rows.lowerBound * h
            if config.hasPostNorms { rmsNorm(br, rows: rows.count, weight: l.postAttentionNorm, into: br) }
            addResidual(br, into: xr, count: rows.count * h)
            rmsNorm(xr, rows: rows.count, weight: config.hasPostNorms ? l.preFeedforwardNorm : l.postAttentionNorm, into: nr)
            if let moe = l.moe, let ffn {
                // Gemma 4 MoE (never in halves): dense and expert branches share one all-reduce
                // of [2, T, H], then their norms (non-linear, so after the sum) combine them.
                moeFeedForwardPartials(l, moe, tokens: t, input: n, into: ffn)
                feedForwardSums.append(try sum(ffn, count: 2 * t * h))
            } else {
                mlp(l, tokens: rows.count, input: nr, into: br)
                feedForwardSums.append(try sum(br, count: rows.count * h))
            }
        }
        for (k, rows) in parts.enumerated() {
            try feedForwardSums[k].wait()
            let xr = x + rows.lowerBound * h, br = b + rows.lowerBound * h
            if let ffn { combineMoEBranches(l, ffn, tokens: t, into: b) }
            if config.hasPostNorms { rmsNorm(br, rows: rows.count, weight: l.postFeedforwardNorm, into: br) }
            addResidual(br, into: xr, count: rows.count * h)
        }

        if let p = l.ple { injectPerLayerInput(p, layer: index, tokens: t) }
        if config.hasLayerScalar && l.layerScalar != 1 { scale(x, by: l.layerScalar, count: t * h) }
    }

    /// Gemma 4 PLE, once per step (GEMMA_SPEC §3.4.1): ple[t, i, :] =
    /// (RMSNorm_w((x0 · W_plmpᵀ) · H^-1/2) + E_ple[id] · sqrt(P)) · 2^-1/2 for every layer i.
    /// The table lookup is vocab-parallel (owner writes, one all-reduce of [T, L·P]).
    func perLayerInputs(_ w: PLEWeights, batch: [BatchEntry]) throws {
        let t = batch.count, h = config.hiddenSize, p = config.perLayerInputSize
        let lp = config.numHiddenLayers * p
        let out = act.ple.floats().baseAddress!, tok = act.pleTokens.floats().baseAddress!
        try w.table.lookup(batch.map(\.token), scale: Float(Double(p).squareRoot()), into: tok, comm: comm)
        matmul(w.modelProjection, x: act.x.floats().baseAddress!, xStride: h, tokens: t, y: out, yStride: lp, pool: pool)
        scale(out, by: Float(1 / Double(h).squareRoot()), count: t * lp)
        rmsNorm(out, rows: t * config.numHiddenLayers, weight: w.projectionNorm, into: out)
        let combine = Float(1 / 2.0.squareRoot())
        for j in 0..<(t * lp) { out[j] = (out[j] + tok[j]) * combine }
    }

    /// x += post_norm(proj(gelu_tanh(gate(x)) ⊙ ple[:, layer, :])), replicated (P-sized).
    func injectPerLayerInput(_ w: PLELayerWeights, layer i: Int, tokens t: Int) {
        let h = config.hiddenSize, p = config.perLayerInputSize, lp = config.numHiddenLayers * p
        let x = act.x.floats().baseAddress!, b = act.branch.floats().baseAddress!
        let g = act.pleGate.floats().baseAddress!, ple = act.ple.floats().baseAddress!
        matmul(w.gate, x: x, xStride: h, tokens: t, y: g, yStride: p, pool: pool)
        for r in 0..<t { geluMul(g + r * p, ple + r * lp + i * p, count: p) }
        matmul(w.projection, x: g, xStride: p, tokens: t, y: b, yStride: h, pool: pool)
        rmsNorm(b, rows: t, weight: w.postNorm, into: b)
        addResidual(b, into: x, count: t * h)
    }

    /// Gemma 4 MoE layer's FFN before post_feedforward_layernorm (GEMMA_SPEC §3.4.2) is
    /// post_ffn_norm_1(dense(x_normed)) + post_ffn_norm_2(experts(residual)). This writes both
    /// branches' partial sums, [dense; experts] = [2, T, H], for one all-reduce.
    func moeFeedForwardPartials(_ l: LayerWeights, _ moe: MoEBlock, tokens t: Int, input: UnsafeMutablePointer<Float>,
                                into ffn: UnsafeMutablePointer<Float>) {
        mlp(l, tokens: t, input: input, into: ffn)
        moe(residual: act.x.floats().baseAddress!, tokens: t, into: ffn + t * config.hiddenSize, pool: pool)
    }

    /// out = post_ffn_norm_1(dense) + post_ffn_norm_2(experts), after the all-reduce.
    func combineMoEBranches(_ l: LayerWeights, _ ffn: UnsafeMutablePointer<Float>, tokens t: Int, into out: UnsafeMutablePointer<Float>) {
        let dense = ffn, experts = ffn + t * config.hiddenSize
        rmsNorm(dense, rows: t, weight: l.postFeedforwardNorm1, into: out)
        rmsNorm(experts, rows: t, weight: l.postFeedforwardNorm2, into: experts)
        addResidual(experts, into: out, count: t * config.hiddenSize)
    }

    /// This rank's partial of down(gelu_tanh(gate(x)) ⊙ up(x)): gate/up column-parallel over
    /// its MLP columns, down row-parallel (the caller all-reduces).
    func mlp(_ l: LayerWeights, tokens t: Int, input: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let h = config.hiddenSize, width = l.gate.outPerRank
        let g = act.gate.floats().baseAddress!, u = act.up.floats().baseAddress!
        l.gate(input, xStride: h, tokens: t, into: g, yStride: width, pool: pool)
        l.up(input, xStride: h, tokens: t, into: u, yStride: width, pool: pool)
        // SIMD; Swift twin and tests in GemmaKernels/Attention.swift. Element-wise (a vector
        // tail computes the same formula), so rows split over the threads give the same bits.
        let level = Kernels.active
        pool.parallelFor(t, minChunk: minimumRows(width: width)) { start, end in
            geluMul(g + start * width, u + start * width, count: (end - start) * width, level: level)
        }
        l.down(g, xStride: width, tokens: t, into: out, pool: pool)
    }

    /// Self-attention over this rank's heads: projections, QK-norm, RoPE, cache append,
    /// scores over the cache (causal, sliding window, soft-cap) and o_proj: this rank's
    /// partial sum of the output (the caller all-reduces).
    /// `firstRow`: where the batch starts in the step's rows (for the RoPE tables).
    func attention(_ l: LayerWeights, index: Int, batch: [BatchEntry], input: UnsafeMutablePointer<Float>,
                   into out: UnsafeMutablePointer<Float>, firstRow: Int = 0) {
        let t = batch.count, h = config.hiddenSize, d = l.shard.headDim
        let nq = l.shard.qHeads.count, nkv = l.shard.kvHeads.count
        let q = act.q.floats().baseAddress!, k = act.k.floats().baseAddress!, v = act.v.floats().baseAddress!
        l.q(input, xStride: h, tokens: t, into: q, yStride: nq * d, pool: pool)
        if config.hasQKNorm { rmsNorm(q, rows: t * nq, weight: l.qNorm, into: q) }
        applyRope(q, type: l.type, tokens: t, heads: nq, headDim: d, firstRow: firstRow)
        // A KV consumer (Gemma 4) attends to its producer's cache, which the producer filled
        // earlier in this same step: same type, so same head dim, KV heads and rank split.
        let source = l.kvSource ?? index
        if l.kvSource == nil {
            l.k(input, xStride: h, tokens: t, into: k, yStride: nkv * d, pool: pool)
            if l.hasVProj {
                l.v(input, xStride: h, tokens: t, into: v, yStride: nkv * d, pool: pool)
            } else {
                v.update(from: k, count: t * nkv * d)   // k_eq_v: V is the raw K projection
            }
            if config.hasQKNorm { rmsNorm(k, rows: t * nkv, weight: l.kNorm, into: k) }
            if config.hasVNorm { GemmaKernels.rmsNorm(v, rows: t * nkv, width: d, weight: nil, eps: eps, into: v) }
            applyRope(k, type: l.type, tokens: t, heads: nkv, headDim: d, firstRow: firstRow)
            // Distinct ring rows (a batch never wraps a ring: KVCache.capacity), so tokens split
            // over the threads store the same bytes as one loop.
            let cache = self.cache
            pool.parallelFor(t, minChunk: minimumRows(width: 2 * nkv * d)) { start, end in
                for i in start..<end {
                    let e = batch[i]
                    cache.store(layer: index, slot: e.slot, position: e.position, k: k + i * nkv * d, v: v + i * nkv * d)
                }
            }
        }

        let window = l.type == .sliding ? config.slidingWindow : nil
        let softcap = config.attnLogitSoftcapping.map(Float.init)
        let scale = attentionScale
        let a = act.attn.floats().baseAddress!
        let ctx = UnsafeSendableBox((q: q, a: a, scores: act.scores.floats().baseAddress!, maxKeys: cache.maxCapacity,
                                     entries: batch, shard: l.shard, cache: cache))
        // A causal row's cost grows with its position, so one contiguous half of the rows per
        // thread gave the later half ~3x the work at 128 tokens (the other thread idled). Rows are
        // handed out in small chunks instead, latest rows first so the last chunks are the
        // cheapest. A few items (decode) keep one chunk per thread.
        let items = t * nq, threads = pool.threads
        let grain = items <= 4 * threads ? (items + threads - 1) / threads : max(1, items / (16 * threads))
        pool.parallelForChunks(items, grain: grain) { start, end, thread in
            let c = ctx.value
            let scores = c.scores + thread * c.maxKeys
            for item in start..<end {
                let i = t - 1 - item / nq, head = item % nq
                let e = c.entries[i]
                let first = window.map { max(0, e.position - $0 + 1) } ?? 0
                let qv = c.q + (i * nq + head) * d
                let kvh = c.shard.localKVHead(forLocalQueryHead: head)
                let o = c.a + (i * nq + head) * d
                // SIMD kernel; its Swift twin (the loop that was here) is attentionHeadReference
                // in GemmaKernels/Attention.swift. The ring always holds the run (KVCache.capacity),
                // so the kernel's size check cannot fail; NaNs would make a failure visible.
                do {
                    try attentionHead(q: qv, keys: c.cache.key(layer: source, slot: e.slot, position: 0, head: kvh),
                                      values: c.cache.value(layer: source, slot: e.slot, position: 0, head: kvh),
                                      kvType: c.cache.type, headDim: d,
                                      rowBytes: c.cache.specs[source].kvHeads * c.cache.rowBytes[source],
                                      capacity: c.cache.specs[source].capacity, first: first, last: e.position,
                                      scale: scale, softcap: softcap, scores: scores, out: o)
                } catch {
                    o.initialize(repeating: .nan, count: d)
                }
            }
        }
        l.o(a, xStride: nq * d, tokens: t, into: out, pool: pool)
    }

    /// cos/sin [T, d/2] of a layer type's frequencies at each entry's position.
    func fillRope(_ type: LayerType, batch: [BatchEntry], headDim d: Int) {
        guard let cos = act.cos[type], let sin = act.sin[type], let inv = inverseFrequencies[type] else { return }
        ropeTable(positions: batch.map(\.position), inverseFrequencies: inv,
                  cos: cos.floats().baseAddress!, sin: sin.floats().baseAddress!)
    }

    /// Rotate-half RoPE in place on [T, heads, d] with the layer type's table.
    func applyRope(_ p: UnsafeMutablePointer<Float>, type: LayerType, tokens t: Int, heads: Int, headDim d: Int, firstRow: Int = 0) {
        guard let cos = act.cos[type], let sin = act.sin[type] else { return }
        let half = d / 2
        let c = cos.floats().baseAddress! + firstRow * half, s = sin.floats().baseAddress! + firstRow * half
        pool.parallelFor(t, minChunk: minimumRows(width: heads * d)) { start, end in
            GemmaKernels.applyRope(p + start * heads * d, cos: c + start * half, sin: s + start * half,
                                   tokens: end - start, heads: heads, headDim: d)
        }
    }

    /// Fewest values per thread for which a row-wise or element-wise op (norms, RoPE, residual
    /// add, GELU, KV store) is split over the pool: a prefill's 128 x 640 rows are, a decode
    /// step's single row is not (waking a worker would cost more than the op). Every split is by
    /// whole rows or elements that do not depend on their neighbours, so results are the same
    /// bits at any thread count.
    /// (A variable so tests can split the tiny fixtures' ops too.)
    var parallelMinimumValues = 8192

    /// Rows per chunk for a split of rows of `width` values (see parallelMinimumValues).
    func minimumRows(width: Int) -> Int { max(1, parallelMinimumValues / max(1, width)) }

    /// RMSNorm with a loaded weight (rows of weight.count values), in place allowed; rows split
    /// over the pool's threads.
    func rmsNorm(_ x: UnsafeMutablePointer<Float>, rows: Int, weight: [Float], into y: UnsafeMutablePointer<Float>) {
        let eps = self.eps
        weight.withUnsafeBufferPointer { w in
            let n = w.count, wp = w.baseAddress
            pool.parallelFor(rows, minChunk: minimumRows(width: n)) { start, end in
                GemmaKernels.rmsNorm(x + start * n, rows: end - start, width: n, weight: wp, eps: eps, into: y + start * n)
            }
        }
    }

    /// x += b (the residual connection), split over the pool's threads.
    func addResidual(_ b: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>, count: Int) {
        pool.parallelFor(count, minChunk: parallelMinimumValues) { start, end in
            GemmaKernels.addResidual(b + start, into: x + start, count: end - start)
        }
    }

    var eps: Float { Float(config.rmsNormEps) }

    func observe(_ index: Int, _ buffer: UnsafeMutableBufferPointer<Float>, _ count: Int) {
        hiddenStateObserver?(index, UnsafeBufferPointer(rebasing: buffer[0..<count]))
    }
}
