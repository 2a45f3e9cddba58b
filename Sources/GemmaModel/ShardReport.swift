// What each rank would own for a model directory and a rank count, computed from config.json
// and the safetensors headers only (no weight is read): the data behind `gemma-node inspect`.
import Foundation
import GemmaFormats
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
    /// Bytes of K and V cached per 1024 tokens of one sequence (f32 cache; sliding layers hold
    /// at most window + maxBatchTokens positions).
    public var kvCacheBytesPer1KTokens: Int
}

/// The architecture and every rank's share.
public struct ShardReport: Codable, Sendable, Equatable {
    public var config: GemmaConfig
    public var ranks: Int
    public var dtypes: [String]
    public var totalWeightBytes: Int
    public var kvHeadsReplicated: Bool
    public var perRank: [RankReport]

    /// Plans `ranks` ranks for the model in `directory`; throws the plan's reason when the
    /// model cannot be split, and the loader's errors for a broken checkpoint.
    public init(directory: URL, ranks: Int, maxBatchTokens: Int = 512) throws {
        let config = try GemmaConfig.load(directory: directory)
        try config.checkSupported()
        let plan = try ShardPlan(config: config, ranks: ranks)
        let archive = try SafetensorsArchive(directory: directory)
        let names = try TensorNames.resolve(config: config, names: archive.tensors.mapValues(\.shape))
        let table = TensorNames.table(for: config)
        self.config = config
        self.ranks = ranks
        dtypes = Array(Set(names.values.compactMap { archive.tensors[$0]?.dtype.rawValue })).sorted()
        totalWeightBytes = names.values.reduce(0) { $0 + (archive.tensors[$1]?.byteCount ?? 0) }
        kvHeadsReplicated = plan.replicatesKV
        var reports: [RankReport] = []
        for r in 0..<ranks {
            var bytes = 0
            var specs = table
            if names[.lmHead] != nil {
                specs.append(TensorSpec(tensor: .lmHead, name: "lm_head.weight", shape: [config.vocabSize, config.hiddenSize], split: .rowsByVocab))
            }
            for spec in specs {
                guard let name = names[spec.tensor], let info = archive.tensors[name] else { continue }
                let layer: LayerShard? = {
                    switch spec.tensor {
                    case let .qProj(i), let .kProj(i), let .vProj(i), let .oProj(i), let .gateProj(i), let .upProj(i), let .downProj(i):
                        return plan.layers[i][r]
                    default: return nil
                    }
                }()
                let elements: Int
                switch spec.split {
                case .replicated: elements = info.elementCount
                case .rowsByVocab: elements = plan.vocabRanges[r].count * info.cols
                case .rowsByQueryHeads, .colsByQueryHeads: elements = (layer?.qHeads.count ?? 0) * config.headDim * config.hiddenSize
                case .rowsByKVHeads: elements = (layer?.kvHeads.count ?? 0) * config.headDim * config.hiddenSize
                case .rowsByMLP, .colsByMLP: elements = (layer?.mlpColumns.count ?? 0) * config.hiddenSize
                }
                bytes += elements * info.dtype.byteSize
            }
            var kv = 0
            for (i, layer) in plan.layers.enumerated() {
                let s = layer[r]
                let positions = config.layerTypes[i] == .sliding
                    ? min(1024, KVCache.capacity(window: config.slidingWindow, maxContext: 1024, maxBatchTokens: maxBatchTokens))
                    : 1024
                kv += 2 * s.kvHeads.count * s.headDim * 4 * positions
            }
            let l0 = plan.layers.first?[r]
            reports.append(RankReport(
                rank: r,
                queryHeads: [l0?.qHeads.lowerBound ?? 0, l0?.qHeads.upperBound ?? 0],
                kvHeads: [l0?.kvHeads.lowerBound ?? 0, l0?.kvHeads.upperBound ?? 0],
                mlpColumns: [l0?.mlpColumns.lowerBound ?? 0, l0?.mlpColumns.upperBound ?? 0],
                vocabRange: [plan.vocabRanges[r].lowerBound, plan.vocabRanges[r].upperBound],
                weightBytes: bytes, kvCacheBytesPer1KTokens: kv))
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
            "split across \(ranks) rank\(ranks == 1 ? "" : "s")\(kvHeadsReplicated ? " (KV heads replicated: fewer KV heads than ranks)" : ""):",
        ]
        for r in perRank {
            lines.append("  rank \(r.rank): q heads [\(r.queryHeads[0]), \(r.queryHeads[1])), kv heads [\(r.kvHeads[0]), \(r.kvHeads[1])), " +
                         "mlp columns [\(r.mlpColumns[0]), \(r.mlpColumns[1])), vocab [\(r.vocabRange[0]), \(r.vocabRange[1])), " +
                         "weights \(mib(r.weightBytes)), KV cache \(mib(r.kvCacheBytesPer1KTokens)) per 1K tokens")
        }
        return lines.joined(separator: "\n")
    }
}
