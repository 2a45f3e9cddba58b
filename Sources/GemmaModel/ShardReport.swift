// What each rank would own for a model directory and a rank count, computed from config.json
// and the safetensors headers only (no weight is read): the data behind `gemma-node inspect`.
import Foundation
import GemmaFormats
import GemmaKernels
import GemmaParallel

/// One rank's share of a model.
public struct RankReport: Codable, Sendable, Equatable {
    public var rank: Int
    /// Query heads [lower, upper) (uniform across layers for Gemma 1-3).
    public var queryHeads: [Int]
    /// KV heads [lower, upper) this rank computes and caches.
    public var kvHeads: [Int]
    public var mlpColumns: [Int]
    public var vocabRange: [Int]
    /// Bytes of weights this rank holds, in the stored dtypes.
    public var weightBytes: Int
    /// Bytes of K and V cached per 1024 tokens of one sequence (in the report's `kvType`; sliding layers hold
    /// at most window + maxBatchTokens positions).
    public var kvCacheBytesPer1KTokens: Int
    /// Bytes of K and V per cached position in full-attention layers and in sliding layers
    /// (the latter hold at most `ShardReport.slidingRing` positions): exact KV for any context.
    public var kvFullBytesPerToken: Int
    public var kvSlidingBytesPerToken: Int
    /// Bytes of weights one decode token reads on this rank: every matrix it holds, except
    /// lookup tables (an untied embedding, Gemma 4's PLE table: one row each) and MoE experts
    /// (the top-k of them: topK / numExperts of their bytes). The decode cost model
    /// (`DecodeCostModel`) divides it by the memory bandwidth.
    public var decodeReadBytes: Int
    /// Bytes of the activation buffers a rank maps for a step of `maxBatchTokens` tokens
    /// (GemmaShard's `Activations`: [T, H] x 4, q and attention output, k and v, gate and up
    /// at this rank's widest layer, RoPE tables, PLE inputs, the MoE partials, one logits row
    /// of its vocabulary slice). They are mapped lazily, so they are resident only after a
    /// step that long (a long prompt). Not counted: attention scores (threads x context
    /// floats) and MoE expert scratch.
    public var activationBytes: Int

    /// KV-cache bytes of one sequence of `contextTokens` tokens on this rank.
    public func kvCacheBytes(contextTokens: Int, slidingRing: Int) -> Int {
        kvFullBytesPerToken * contextTokens + kvSlidingBytesPerToken * min(contextTokens, slidingRing)
    }
}

/// The architecture and every rank's share.
public struct ShardReport: Codable, Sendable, Equatable {
    public var config: GemmaConfig
    public var ranks: Int
    public var dtypes: [String]
    public var totalWeightBytes: Int
    public var kvHeadsReplicated: Bool
    public var perRank: [RankReport]
    /// Positions a sliding layer keeps (window + tokens per step).
    public var slidingRing: Int
    /// Element type the KV-cache figures assume (`--kv-type`).
    public var kvType: KVCacheType

    /// Plans `ranks` ranks for the model in `directory`; throws the plan's reason when the
    /// model cannot be split, and the loader's errors for a broken checkpoint.
    public init(directory: URL, ranks: Int, maxBatchTokens: Int = 512, split: [Double]? = nil,
                kvType: KVCacheType = .f16) throws {
        let config = try GemmaConfig.load(directory: directory)
        try config.checkSupported()
        try GemmaShard.checkKVType(kvType, config: config)
        let plan = try ShardPlan(config: config, ranks: ranks, split: split)
        let archive = try SafetensorsArchive(directory: directory)
        let names = try TensorTable.resolve(config: config, names: archive.tensors.mapValues(\.shape))
        var table = TensorTable.table(for: config)
        if names[.lmHead] != nil {
            table += TensorTable.specs(for: config).filter { $0.tensor == .lmHead }
        }
        let dtypes = Array(Set(names.values.compactMap { archive.tensors[$0]?.dtype.rawValue })).sorted()
        let total = names.values.reduce(0) { $0 + (archive.tensors[$1]?.byteCount ?? 0) }
        self.init(config: config, plan: plan, table: table, dtypes: dtypes, totalWeightBytes: total, maxBatchTokens: maxBatchTokens, kvType: kvType) { spec, elements in
            guard let name = names[spec.tensor], let info = archive.tensors[name] else { return 0 }
            return elements * info.dtype.byteSize
        }
    }

    /// Plans a GGUF file from its metadata and tensor headers (no weight is read): the same
    /// config, table check and block-aligned plan the loader uses, bytes in each tensor's own type.
    public init(gguf path: URL, ranks: Int, maxBatchTokens: Int = 512, split: [Double]? = nil,
                kvType: KVCacheType = .f16) throws {
        let file = try GGUFFile(path: path.path)
        let config = try GemmaConfig(gguf: file)
        try config.checkSupported()
        try GemmaShard.checkKVType(kvType, config: config)
        let source = try GGUFWeightSource(file: file, config: config)
        let align = try (0..<config.numHiddenLayers).map { try source.blockSize(.downProj($0)) }.max() ?? 1
        let plan = try ShardPlan(config: config, ranks: ranks, mlpAlign: align, split: split)
        var table = TensorTable.table(for: config)
        if source.has(.lmHead) {
            table += TensorTable.specs(for: config).filter { $0.tensor == .lmHead }
        }
        let infos = source.tensors
        let dtypes = Array(Set(infos.values.compactMap { $0.type?.description })).sorted()
        let total = infos.values.reduce(0) { sum, info in sum + (info.type.map { info.elementCount / $0.blockSize * $0.bytesPerBlock } ?? 0) }
        self.init(config: config, plan: plan, table: table, dtypes: dtypes, totalWeightBytes: total, maxBatchTokens: maxBatchTokens, kvType: kvType) { spec, elements in
            guard let t = infos[spec.tensor]?.type else { return 0 }
            // Vectors are dequantized to f32 at load (norms, scalars).
            return spec.shape.count == 1 ? elements * 4 : elements / t.blockSize * t.bytesPerBlock
        }
    }

    /// Plans a model from its config alone (no checkpoint: e.g. a shipped preset), every
    /// matrix stored as `weightType` (a tensor whose rows are not whole blocks of it falls back
    /// to Q8_0, as llama.cpp's quantizer does), vectors as f32. Row-parallel splits are made of
    /// whole blocks (uneven when needed, GEMMA_SPEC A3.1). With `fileMix`, every tensor has
    /// the type `synth` gives it for that encoding instead (for `.q4_k`, llama.cpp's Q4_K_M
    /// mix: some Q6_K/Q8_0 tensors), so the plan is the plan of such a file.
    public init(config: GemmaConfig, ranks: Int, weightType: WeightType, maxBatchTokens: Int = 512, split: [Double]? = nil,
                kvType: KVCacheType = .f16, fileMix: SynthQuant? = nil) throws {
        try config.checkSupported(planning: true)
        try GemmaShard.checkKVType(kvType, config: config)
        let mix = try fileMix.map { quant in
            Dictionary(try SyntheticModel.tensorList(config: config, quant: quant).map { ($0.name, $0.type) }, uniquingKeysWith: { a, _ in a })
        }
        func stored(_ spec: TensorSpec) -> WeightType {
            if let t = mix?[spec.ggufName] { return t }
            guard spec.shape.count >= 2 else { return .f32 }
            let cols = spec.shape[spec.shape.count - 1]
            if cols % weightType.blockSize == 0 { return weightType }
            return cols % 32 == 0 ? .q8_0 : .f16
        }
        func bytes(_ spec: TensorSpec, _ elements: Int) -> Int {
            let t = stored(spec)
            return (elements * t.bytesPerBlock + t.blockSize - 1) / t.blockSize
        }
        let table = TensorTable.table(for: config)
        let align = table.filter { if case .downProj = $0.tensor { return true } else { return false } }.map { stored($0).blockSize }.max() ?? 1
        let plan = try ShardPlan(config: config, ranks: ranks, mlpAlign: align, split: split)
        let types = Set(table.map { stored($0).description })
        let total = table.reduce(0) { $0 + bytes($1, $1.shape.reduce(1, *)) }
        self.init(config: config, plan: plan, table: table, dtypes: types.sorted(), totalWeightBytes: total,
                  maxBatchTokens: maxBatchTokens, kvType: kvType, bytes: bytes)
    }

    /// Every rank's share of `table` under `plan`; `bytes(spec, elementsOnThisRank)`.
    init(config: GemmaConfig, plan: ShardPlan, table: [TensorSpec], dtypes: [String], totalWeightBytes: Int,
         maxBatchTokens: Int, kvType: KVCacheType, bytes: (TensorSpec, Int) -> Int) {
        let ranks = plan.ranks
        self.kvType = kvType
        self.config = config
        self.ranks = ranks
        self.dtypes = dtypes
        self.totalWeightBytes = totalWeightBytes
        kvHeadsReplicated = plan.replicatesKV
        slidingRing = KVCache.capacity(window: config.slidingWindow, maxContext: Int.max / 2, maxBatchTokens: maxBatchTokens)
        let h = config.hiddenSize
        let untied = table.contains { $0.tensor == .lmHead }
        let activeExperts = config.activeExpertFraction
        var reports: [RankReport] = []
        for r in 0..<ranks {
            var total = 0, read = 0
            for spec in table {
                let elementCount = spec.shape.reduce(1, *)
                let layer: LayerShard? = {
                    switch spec.tensor {
                    case let .qProj(i), let .kProj(i), let .vProj(i), let .oProj(i), let .gateProj(i), let .upProj(i), let .downProj(i):
                        return plan.layers[i][r]
                    default: return nil
                    }
                }()
                let d = layer?.headDim ?? config.headDim
                let elements: Int
                switch spec.split {
                case .replicated: elements = elementCount
                case .rowsByVocab: elements = plan.vocabRanges[r].count * h
                case .rowsByPLEVocab:
                    let rows = spec.shape[0], cols = spec.shape.count > 1 ? spec.shape[1] : 1
                    let mine = (try? ShardPlan.partition(rows, ranks: ranks, dimension: "vocab_size_per_layer_input", unit: 1, uneven: true)[r].count) ?? rows
                    elements = mine * cols
                case .rowsByQueryHeads, .colsByQueryHeads: elements = (layer?.qHeads.count ?? 0) * d * h
                case .rowsByKVHeads: elements = (layer?.kvHeads.count ?? 0) * d * h
                case .rowsByMLP, .colsByMLP: elements = (layer?.mlpColumns.count ?? 0) * h
                case .experts: elements = elementCount / ranks   // column split of every expert (MoE.swift)
                }
                let held = bytes(spec, elements)
                total += held
                switch spec.split {
                case .rowsByPLEVocab: read += bytes(spec, spec.shape.count > 1 ? spec.shape[1] : 1)
                case .experts: read += Int((Double(held) * activeExperts).rounded())
                case .rowsByVocab where spec.tensor == .embedTokens && untied: read += bytes(spec, h)
                default: read += held
                }
            }
            var kv = 0, kvFull = 0, kvSliding = 0
            for (i, layer) in plan.layers.enumerated() where config.hasOwnKV(i) {
                let s = layer[r]
                let perToken = 2 * kvType.bytes(values: s.kvHeads.count * s.headDim)
                if config.layerTypes[i] == .sliding { kvSliding += perToken } else { kvFull += perToken }
                let positions = config.layerTypes[i] == .sliding
                    ? min(1024, KVCache.capacity(window: config.slidingWindow, maxContext: 1024, maxBatchTokens: maxBatchTokens))
                    : 1024
                kv += perToken * positions
            }
            let mine = plan.layers.map { $0[r] }
            let qWidth = mine.map { $0.qHeads.count * $0.headDim }.max() ?? 0
            let kvWidth = mine.map { $0.kvHeads.count * $0.headDim }.max() ?? 0
            let mlpWidth = mine.map { $0.mlpColumns.count }.max() ?? 0
            let ple = config.numHiddenLayers * config.perLayerInputSize
            let floatsPerToken = 4 * h + 2 * qWidth + 2 * kvWidth + 2 * mlpWidth + config.headDim(for: .sliding) + config.headDim(for: .full)
                + 2 * ple + config.perLayerInputSize + (config.isMoE ? 2 * h : 0)
            let activations = 4 * (maxBatchTokens * floatsPerToken + plan.vocabRanges[r].count)
            let l0 = plan.layers.first?[r]
            reports.append(RankReport(
                rank: r,
                queryHeads: [l0?.qHeads.lowerBound ?? 0, l0?.qHeads.upperBound ?? 0],
                kvHeads: [l0?.kvHeads.lowerBound ?? 0, l0?.kvHeads.upperBound ?? 0],
                mlpColumns: [l0?.mlpColumns.lowerBound ?? 0, l0?.mlpColumns.upperBound ?? 0],
                vocabRange: [plan.vocabRanges[r].lowerBound, plan.vocabRanges[r].upperBound],
                weightBytes: total, kvCacheBytesPer1KTokens: kv, kvFullBytesPerToken: kvFull, kvSlidingBytesPerToken: kvSliding,
                decodeReadBytes: read, activationBytes: activations))
        }
        perRank = reports
    }

    /// Human-readable text, one block for the architecture and one line per rank.
    public var text: String {
        let c = config
        func mib(_ b: Int) -> String { String(format: "%.2f MiB", Double(b) / 1_048_576) }
        let types = c.layerTypes.map { $0 == .sliding ? "S" : "F" }.joined()
        var lines = [
            "architecture: \(c.generation.rawValue) (\(c.modelType)), \(c.numHiddenLayers) layers [\(types)]",
            "  hidden \(c.hiddenSize), intermediate \(c.intermediateSize), vocab \(c.vocabSize), heads \(c.numAttentionHeads) q / \(c.numKeyValueHeads) kv of dim \(c.headDim)",
            "  query_pre_attn_scalar \(c.queryPreAttnScalar), sliding window \(c.slidingWindow.map(String.init) ?? "none"), soft-caps attention \(c.attnLogitSoftcapping.map { "\($0)" } ?? "none") / final \(c.finalLogitSoftcapping.map { "\($0)" } ?? "none")",
            "  rope: " + [LayerType.sliding, .full].compactMap { t in c.ropeParameters[t].map { "\(t.rawValue) theta \($0.ropeTheta) \($0.ropeType)\($0.factor.map { " x\($0)" } ?? "")" } }.joined(separator: "; "),
            "  weights: \(mib(totalWeightBytes)) (\(dtypes.joined(separator: ", "))), tied embeddings: \(c.tieWordEmbeddings)",
        ]
        if c.generation == .gemma4 {
            let full = c.layerTypes.firstIndex(of: .full), sliding = c.layerTypes.firstIndex(of: .sliding)
            var g4 = "  gemma4: "
            g4 += [sliding.map { "sliding layers head dim \(c.layerHeadDims[$0]) x \(c.layerKVHeads[$0]) kv" },
                   full.map { "full layers head dim \(c.layerHeadDims[$0]) x \(c.layerKVHeads[$0]) kv" }].compactMap { $0 }.joined(separator: ", ")
            if c.perLayerInputSize > 0 { g4 += "; PLE \(c.perLayerInputSize) per layer (table vocab-parallel)" }
            if c.firstKVSharedLayer < c.numHiddenLayers { g4 += "; layers \(c.firstKVSharedLayer)-\(c.numHiddenLayers - 1) reuse K/V" }
            if c.attentionKEqV == true { g4 += "; K = V on full layers" }
            if c.useDoubleWideMlp == true && c.firstKVSharedLayer < c.numHiddenLayers { g4 += "; double-wide MLP in KV-sharing layers" }
            if c.isMoE { g4 += "; MoE \(c.numExperts ?? 0) experts top-\(c.topKExperts ?? 0) of width \(c.moeIntermediateSize ?? 0) (split by columns)" }
            lines.append(g4)
        }
        lines += [
            "split across \(ranks) rank\(ranks == 1 ? "" : "s")\(kvHeadsReplicated ? " (KV heads replicated: fewer KV heads than ranks)" : ""):",
        ]
        for r in perRank {
            lines.append("  rank \(r.rank): q heads [\(r.queryHeads[0]), \(r.queryHeads[1])), kv heads [\(r.kvHeads[0]), \(r.kvHeads[1])), " +
                         "mlp columns [\(r.mlpColumns[0]), \(r.mlpColumns[1])), vocab [\(r.vocabRange[0]), \(r.vocabRange[1])), " +
                         "weights \(mib(r.weightBytes)), \(kvType) KV cache \(mib(r.kvCacheBytesPer1KTokens)) per 1K tokens")
        }
        if !perRank.isEmpty {
            func gib(_ b: Int) -> String { String(format: "%.2f GiB", Double(b) / 1_073_741_824) }
            let at = [4096, 32768].map { "\($0 / 1024)K tokens \(gib(peakRankBytes(contextTokens: $0)))" }
            lines.append("largest rank (weights + \(kvType) KV cache of one sequence): " + at.joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }

    /// Bytes the largest rank needs: weights plus the KV cache of `contextTokens` tokens.
    public func peakRankBytes(contextTokens: Int) -> Int {
        perRank.map { $0.weightBytes + $0.kvCacheBytes(contextTokens: contextTokens, slidingRing: slidingRing) }.max() ?? 0
    }

    /// The fewest ranks (1 ... maxRanks) whose largest rank fits in `bytesPerRank` with
    /// `contextTokens` of one sequence cached; nil when none does (or no split is possible).
    public static func fewestRanks(config: GemmaConfig, weightType: WeightType, bytesPerRank: Int, contextTokens: Int,
                                   kvType: KVCacheType = .f16, maxRanks: Int = 64) -> ShardReport? {
        for n in 1...max(1, maxRanks) {
            guard let report = try? ShardReport(config: config, ranks: n, weightType: weightType, kvType: kvType) else { continue }
            if report.peakRankBytes(contextTokens: contextTokens) <= bytesPerRank { return report }
        }
        return nil
    }
}
