// Class defaults of each Gemma generation (transformers 5.23.0, GEMMA_SPEC §1.2) applied when a
// config.json leaves a key out, and the features each generation has (extra norms, QK norm,
// layer scalar). The only place either is written down.
import Foundation

extension GemmaConfig {
    /// Class defaults of transformers 5.23.0 per generation (GEMMA_SPEC §1.2): the only place
    /// they are written down.
    struct Defaults {
        var vocab = 256000, hidden = 3072, intermediate = 24576, layers = 28, heads = 16, kvHeads = 16, headDim = 256
        var maxPosition = 8192
        var queryPreAttnScalar: Double? = nil  // nil = head_dim (Gemma 1 uses 1/sqrt(head_dim))
        var attnSoftcap: Double? = nil, finalSoftcap: Double? = nil
        var slidingWindow: Int? = nil
        var patternEvery: Int? = nil          // layer i full iff (i+1) % p == 0; nil = all full
        var slidingFirstAlternating = false   // Gemma 2: even layers sliding
        var fullTheta = 10000.0, slidingTheta = 10000.0

        static func of(_ g: GemmaGeneration) -> Defaults {
            var d = Defaults()
            switch g {
            case .gemma1: break
            case .gemma2:
                d.hidden = 2304; d.intermediate = 9216; d.layers = 26; d.heads = 8; d.kvHeads = 4
                d.queryPreAttnScalar = 256; d.attnSoftcap = 50; d.finalSoftcap = 30; d.slidingWindow = 4096
                d.slidingFirstAlternating = true
            case .gemma3:
                d.vocab = 262208; d.hidden = 2304; d.intermediate = 9216; d.layers = 26; d.heads = 8; d.kvHeads = 4
                d.maxPosition = 131072; d.queryPreAttnScalar = 256; d.slidingWindow = 4096; d.patternEvery = 6
                d.fullTheta = 1_000_000
            case .gemma4:
                d.vocab = 262144; d.hidden = 2304; d.intermediate = 9216; d.layers = 30; d.heads = 8; d.kvHeads = 4
                d.maxPosition = 131072; d.queryPreAttnScalar = 1; d.slidingWindow = 512; d.patternEvery = 6
                d.fullTheta = 1_000_000
            }
            return d
        }
    }

    /// Gemma 2+ have post-attention and post-feed-forward norms.
    public var hasPostNorms: Bool { generation != .gemma1 }
    public var hasQKNorm: Bool { generation == .gemma3 || generation == .gemma4 }
    /// Gemma 4: V is RMS-normed (no weight) per head.
    public var hasVNorm: Bool { generation == .gemma4 }
    /// Gemma 4: the residual stream is multiplied by a stored scalar after each layer.
    public var hasLayerScalar: Bool { generation == .gemma4 }
}
