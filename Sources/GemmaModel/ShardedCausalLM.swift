// The contract between the model (one rank's shard of a Gemma decoder) and the engine
// (step loop, sampling). The engine never sees weights; the model never sees requests.

/// One token of a step's batch. A step mixes decode tokens of many sequences and prefill
/// chunks of new ones; tokens of one sequence appear in position order.
public struct BatchEntry: Sendable, Equatable {
    /// KV-cache slot of the sequence this token belongs to (0 ..< model.slots).
    public var slot: Int
    /// Token id (0 ..< vocabSize).
    public var token: Int32
    /// Absolute position in its sequence (0-based; continues the cached prefix).
    public var position: Int
    /// True when the engine needs logits at this token (the last token of a sequence's
    /// work in this step).
    public var wantLogits: Bool

    public init(slot: Int, token: Int32, position: Int, wantLogits: Bool) {
        self.slot = slot
        self.token = token
        self.position = position
        self.wantLogits = wantLogits
    }
}

/// This rank's slice of the logits, for the batch entries that asked for them, in batch
/// order. Row i holds logits for vocabulary ids `vocabRange`. Final soft-capping is already
/// applied. Valid until the next `forward` call.
public struct LogitsSlice {
    public let vocabRange: Range<Int>
    public let rows: Int
    /// [rows, vocabRange.count]
    public let values: UnsafeBufferPointer<Float>

    public init(vocabRange: Range<Int>, rows: Int, values: UnsafeBufferPointer<Float>) {
        self.vocabRange = vocabRange
        self.rows = rows
        self.values = values
    }

    public func row(_ i: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(rebasing: values[(i * vocabRange.count)..<((i + 1) * vocabRange.count)])
    }
}

/// One rank's shard of a causal language model. Every rank calls `forward` with the same
/// batch in the same order (the collectives inside require it).
public protocol ShardedCausalLM: AnyObject {
    /// Full vocabulary size of the embedding / LM head.
    var vocabSize: Int { get }
    /// Ids the sampler may choose (ids >= this are padding rows, e.g. Gemma 3 4B's 262208 > 262144).
    var sampleableVocab: Int { get }
    /// This rank's vocabulary slice.
    var vocabRange: Range<Int> { get }
    /// Longest sequence (positions) a slot can hold.
    var maxContext: Int { get }
    /// Number of KV-cache slots (concurrent sequences).
    var slots: Int { get }
    /// Most tokens one `forward` accepts (scratch buffers are sized for it).
    var maxBatchTokens: Int { get }

    /// Runs one step over the batch, appending its K/V to the slots' caches, and returns this
    /// rank's logits slice for the entries with `wantLogits`.
    func forward(_ batch: [BatchEntry]) throws -> LogitsSlice
    /// Forgets a slot's cached tokens (the sequence finished or was cancelled). A model with
    /// prefix reuse keeps their entries readable until the slot restarts.
    func release(slot: Int)

    /// Prefix caching: the number of leading positions of `source`'s cache (a running or a
    /// released slot) a new sequence may start from, at most `length`, such that continuing
    /// from them gives exactly what recomputing them would; 0 when none. The same on every
    /// rank for the same history of plans.
    func reusablePrefix(source: Int, upTo length: Int) -> Int
    /// Makes `slot`'s cache start with the first `length` positions of `source`'s (copied; kept
    /// in place when `source == slot`); the slot's next position is then `length`. Throws
    /// unless `reusablePrefix(source:upTo: length) == length`.
    func reusePrefix(source: Int, into slot: Int, length: Int) throws
}

/// Thrown by models that keep no reusable KV entries.
public struct PrefixReuseUnsupported: Error, CustomStringConvertible {
    public var description: String { "this model keeps no reusable KV prefix" }
}

extension ShardedCausalLM {
    public func reusablePrefix(source: Int, upTo length: Int) -> Int { 0 }
    public func reusePrefix(source: Int, into slot: Int, length: Int) throws { throw PrefixReuseUnsupported() }
}
