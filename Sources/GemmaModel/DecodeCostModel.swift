// `gemma-node plan`: predicted decode speed of a model on N machines joined by a link, from
// the cost model fitted in Scripts/scaling_sweep.py (docs/SCALING.md):
//     t(N) = c / N + s + k (N - 1) + collectives per token
// with the compute term c / N replaced by what sets it on a CPU: decode reads every weight
// it uses once per token, so a rank's compute is the bytes it reads per token over the
// machine's memory bandwidth. A model, not a measurement: every constant is an input.
import Foundation
import GemmaParallel

/// The constants of the decode cost model.
public struct DecodeCostModel: Codable, Sendable, Equatable {
    /// Effective memory bandwidth of one machine while decoding, bytes per second.
    public var bytesPerSecond: Double
    /// One-way latency of one message on the link, seconds.
    public var linkLatency: Double
    /// Link bandwidth, bytes per second in each direction.
    public var linkBytesPerSecond: Double
    /// s: fixed seconds per step (sampling of the vocabulary slice, step control).
    public var stepSeconds: Double
    /// k: seconds added per rank beyond the first (imbalance between ranks).
    public var perExtraRankSeconds: Double
    /// Bytes of the step plan rank 0 broadcasts every decode step, and of one rank's record
    /// in the greedy sampling all-gather (max logit, id).
    public static let planBytes = 64
    public static let samplingRecordBytes = 8

    public init(bytesPerSecond: Double, linkLatency: Double, linkBytesPerSecond: Double,
                stepSeconds: Double, perExtraRankSeconds: Double) {
        self.bytesPerSecond = bytesPerSecond
        self.linkLatency = linkLatency
        self.linkBytesPerSecond = linkBytesPerSecond
        self.stepSeconds = stepSeconds
        self.perExtraRankSeconds = perExtraRankSeconds
    }

    var link: EmulatedLink { EmulatedLink(latency: linkLatency, bytesPerSecond: linkBytesPerSecond) }

    /// One rank count's predicted decode step.
    public struct Prediction: Codable, Sendable, Equatable {
        public var ranks: Int
        /// Bytes the busiest rank reads per token: the weights it uses plus its KV cache.
        public var readBytesPerToken: Int
        public var computeSeconds: Double
        /// All-reduces of the hidden state per token (1 + 2 per layer, + 1 with PLE) and
        /// the bytes of each.
        public var allReduces: Int
        public var allReduceBytes: Int
        /// All-reduces of activations plus the control collectives (agree, plan broadcast,
        /// sampling all-gather).
        public var communicationSeconds: Double
        public var overheadSeconds: Double
        public var stepSeconds: Double
        public var tokensPerSecond: Double { 1 / stepSeconds }
    }

    /// Activation all-reduces one decode token makes and the bytes of each: the embedding,
    /// after o_proj and after down_proj in every layer (MoE layers share one for the dense
    /// and expert partials), H floats each; Gemma 4's PLE table adds one of L x P floats.
    public static func allReduces(config: GemmaConfig) -> [(count: Int, bytes: Int)] {
        var out = [(count: 1 + 2 * config.numHiddenLayers, bytes: 4 * config.hiddenSize)]
        if config.perLayerInputSize > 0 { out.append((1, 4 * config.numHiddenLayers * config.perLayerInputSize)) }
        return out
    }

    /// The predicted decode step of `report`'s split with `contextTokens` tokens cached.
    public func predict(_ report: ShardReport, contextTokens: Int) -> Prediction {
        let n = report.ranks
        let read = report.perRank.map { $0.decodeReadBytes + $0.kvCacheBytes(contextTokens: contextTokens, slidingRing: report.slidingRing) }.max() ?? 0
        let reduces = Self.allReduces(config: report.config)
        let l = link
        var comm = reduces.reduce(0) { $0 + Double($1.count) * l.allReduceSeconds(bytes: $1.bytes, ranks: n) }
        comm += l.allReduceSeconds(bytes: 4, ranks: n)                               // agree
        comm += l.broadcastSeconds(bytes: Self.planBytes, ranks: n)                  // step plan
        comm += l.allGatherSeconds(bytes: Self.samplingRecordBytes, ranks: n)        // sampling
        let compute = Double(read) / bytesPerSecond
        let overhead = stepSeconds + perExtraRankSeconds * Double(n - 1)
        return Prediction(ranks: n, readBytesPerToken: read, computeSeconds: compute, allReduces: reduces.reduce(0) { $0 + $1.count },
                          allReduceBytes: reduces[0].bytes, communicationSeconds: comm, overheadSeconds: overhead,
                          stepSeconds: compute + comm + overhead)
    }
}
