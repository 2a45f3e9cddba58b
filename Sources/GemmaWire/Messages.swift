// The control-plane messages as plain Swift values (mirrors of Sources/CWire/proto/gemma_node.proto).
// They hold no C memory: GemmaWire's codec copies into protobuf-c structs only while packing.

/// The wire protocol's version. Bump it whenever a change to the .proto would be misread by a
/// rank built from an older commit; ranks refuse to talk across versions.
public enum WireProtocol {
    /// Version spoken by this build (2: `SequenceWork.logprobs`, which adds a sampling
    /// exchange a version-1 rank would not join; 3: `SequenceWork.grammar`, a constraint a
    /// version-2 rank would ignore and so sample differently; 4: `SequenceWork.prefixLength`,
    /// a reused KV prefix a version-3 rank would not install).
    public static let version: UInt32 = 4
}

/// Start-up handshake: every rank sends one so mismatched builds or models refuse to start.
/// Its field numbers are frozen forever, so a Hello decodes across versions and the mismatch
/// can be reported with both numbers (see `checkHello`).
public struct Hello: Sendable, Equatable {
    public var protocolVersion: UInt32
    /// Identifies the loaded model (e.g. size + header hash); must match across ranks.
    public var modelFingerprint: String
    public var rank: UInt32
    public var worldSize: UInt32
    public var host: String
    /// Compute threads the rank uses (informational).
    public var threads: UInt32

    public init(protocolVersion: UInt32 = WireProtocol.version, modelFingerprint: String, rank: UInt32,
                worldSize: UInt32, host: String, threads: UInt32 = 0) {
        self.protocolVersion = protocolVersion
        self.modelFingerprint = modelFingerprint
        self.rank = rank
        self.worldSize = worldSize
        self.host = host
        self.threads = threads
    }
}

/// How to pick the next token of one sequence; engine, scheduler, server and commands all use
/// this one type. Filters run in Hugging Face's order: temperature, top-k, top-p, min-p; then
/// one draw from the renormalised distribution. The zero value (`SamplingParams()`) is what an
/// absent field decodes to: temperature 0, i.e. greedy. Ranges: `validate(_:)`.
public struct SamplingParams: Sendable, Equatable {
    /// 0 = greedy (argmax, ties to the lowest id).
    public var temperature: Float
    /// Keep the k most likely ids; 0 (or >= vocabulary) = all.
    public var topK: Int32
    /// Keep the smallest most-likely prefix with at least this probability; 1 = off.
    public var topP: Float
    /// Drop ids less likely than minP times the most likely one; 0 = off.
    public var minP: Float
    /// Seed of the noise; with `SequenceWork.stepIndexInSequence` it fully determines the draw.
    public var seed: UInt64

    public init(temperature: Float = 0, topK: Int32 = 0, topP: Float = 0, minP: Float = 0, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.seed = seed
    }

    /// Argmax decoding.
    public static let greedy = SamplingParams(temperature: 0, topK: 1, topP: 1, minP: 0, seed: 0)

    /// Gemma's generation config: temperature 1, top-k 64, top-p 0.95 (the commands' defaults).
    public static let gemmaDefaults = SamplingParams(temperature: 1, topK: 64, topP: 0.95, minP: 0, seed: 0)

    /// True when the draw is an argmax (temperature 0 or top-k 1).
    public var isGreedy: Bool { temperature == 0 || topK == 1 }
}

/// One sequence's share of a step: a decode token or a chunk of its prompt.
public struct SequenceWork: Sendable, Equatable {
    /// KV-cache slot of the sequence.
    public var slot: UInt32
    /// Opaque to workers (logs).
    public var requestId: UInt64
    /// Fed in order at positions `startPosition ..< startPosition + tokenIds.count`. Non-empty,
    /// every id >= 0 (the model checks the upper bound against its vocabulary).
    public var tokenIds: [Int32]
    public var startPosition: UInt32
    public var isPrefillChunk: Bool
    /// Sample (or summarize logits) after the last token.
    public var wantLogits: Bool
    public var sampling: SamplingParams
    /// Index of the token to sample within the sequence's generated tokens (keys the noise).
    public var stepIndexInSequence: UInt64
    /// nil: no log-probabilities. n: the chosen token's log-probability and the n most likely
    /// ids' (0...`WireLimits.maxTopLogprobs`), from one more sampling exchange on every rank.
    public var logprobs: Int?
    /// Structured output: the JSON Schema text of the grammar (empty: unconstrained), sent
    /// on the sequence's first prompt chunk only; every rank keeps the compiled automaton for
    /// the slot until the slot is freed.
    public var grammar: [UInt8]
    /// Most tokens the constrained sequence generates (the grammar closes within it).
    public var grammarMaxTokens: UInt32
    /// Prefix caching: when `prefixLength > 0` (a sequence's first prompt chunk only, with
    /// `startPosition == prefixLength`), every rank first makes the slot's KV cache start with
    /// the first `prefixLength` positions held by `prefixSourceSlot` (copied, or kept in place
    /// when it is the slot itself) instead of recomputing them.
    public var prefixSourceSlot: UInt32
    public var prefixLength: UInt32

    public init(slot: UInt32, requestId: UInt64 = 0, tokenIds: [Int32], startPosition: UInt32,
                isPrefillChunk: Bool = false, wantLogits: Bool = true, sampling: SamplingParams = SamplingParams(),
                stepIndexInSequence: UInt64 = 0, logprobs: Int? = nil, grammar: [UInt8] = [], grammarMaxTokens: UInt32 = 0,
                prefixSourceSlot: UInt32 = 0, prefixLength: UInt32 = 0) {
        self.prefixSourceSlot = prefixSourceSlot
        self.prefixLength = prefixLength
        self.grammar = grammar
        self.grammarMaxTokens = grammarMaxTokens
        self.slot = slot
        self.requestId = requestId
        self.tokenIds = tokenIds
        self.startPosition = startPosition
        self.isPrefillChunk = isPrefillChunk
        self.wantLogits = wantLogits
        self.sampling = sampling
        self.stepIndexInSequence = stepIndexInSequence
        self.logprobs = logprobs
    }
}

/// Everything a worker needs for one step (continuous batching: decode tokens of many
/// sequences and prefill chunks in one plan).
public struct StepPlan: Sendable, Equatable {
    /// Always `WireProtocol.version` for plans built here; decode rejects any other value.
    public var protocolVersion: UInt32
    public var stepId: UInt64
    /// At most one entry per slot.
    public var work: [SequenceWork]
    /// Finished or cancelled slots, released before `work` runs.
    public var freeSlots: [UInt32]
    public var shutdown: Bool
    public var shutdownReason: String

    public init(protocolVersion: UInt32 = WireProtocol.version, stepId: UInt64, work: [SequenceWork] = [],
                freeSlots: [UInt32] = [], shutdown: Bool = false, shutdownReason: String = "") {
        self.protocolVersion = protocolVersion
        self.stepId = stepId
        self.work = work
        self.freeSlots = freeSlots
        self.shutdown = shutdown
        self.shutdownReason = shutdownReason
    }

    /// Tokens the step feeds through the model.
    public var tokenCount: Int { work.reduce(0) { $0 + $1.tokenIds.count } }
}

/// Stop the worker loop.
public struct Shutdown: Sendable, Equatable {
    public var reason: String
    /// True: the job ends in error (exit non-zero).
    public var error: Bool

    public init(reason: String, error: Bool = false) {
        self.reason = reason
        self.error = error
    }
}

/// Anything the coordinator (or a rank, for `hello`) puts on the wire.
public enum WireMessage: Sendable, Equatable {
    case hello(Hello)
    case plan(StepPlan)
    case shutdown(Shutdown)

    /// Name used in error messages.
    public var kind: String {
        switch self {
        case .hello: return Hello.kind
        case .plan: return StepPlan.kind
        case .shutdown: return Shutdown.kind
        }
    }
}
