// What the coordinator tells every rank at the start of a step (DESIGN.md §5), as the engine
// sees it, and the seam through which it is encoded for the wire. The engine never touches
// bytes itself: a `StepPlanCodec` (GemmaWire's protobuf-c in production) does.

/// One sequence's share of a step: a decode token or a chunk of its prompt.
public struct PlannedWork: Sendable, Equatable {
    /// KV-cache slot of the sequence.
    public var slot: Int
    /// The request this sequence serves (opaque to workers; for logs).
    public var requestId: UInt64
    /// Token ids to feed, in order; positions `startPosition ..< startPosition + tokens.count`.
    public var tokens: [Int32]
    public var startPosition: Int
    /// True for a prompt chunk (timings count it as prefill).
    public var isPrefillChunk: Bool
    /// True when a token must be sampled after the last of `tokens`.
    public var wantSample: Bool
    /// How to sample it (ignored unless `wantSample`).
    public var sampling: SamplerSettings
    /// Index of the token to be sampled within the sequence's generated tokens (keys the noise).
    public var stepIndex: UInt64

    public init(slot: Int, requestId: UInt64, tokens: [Int32], startPosition: Int, isPrefillChunk: Bool,
                wantSample: Bool, sampling: SamplerSettings, stepIndex: UInt64) {
        self.slot = slot
        self.requestId = requestId
        self.tokens = tokens
        self.startPosition = startPosition
        self.isPrefillChunk = isPrefillChunk
        self.wantSample = wantSample
        self.sampling = sampling
        self.stepIndex = stepIndex
    }
}

/// One step: the work of every scheduled sequence, slots to forget first, or shutdown.
public struct PlannedStep: Sendable, Equatable {
    public var stepId: UInt64
    public var work: [PlannedWork]
    /// Slots whose sequences finished or were cancelled; released before `work` runs.
    public var freeSlots: [Int]
    public var shutdown: Bool
    public var shutdownReason: String

    public init(stepId: UInt64, work: [PlannedWork] = [], freeSlots: [Int] = [], shutdown: Bool = false,
                shutdownReason: String = "") {
        self.stepId = stepId
        self.work = work
        self.freeSlots = freeSlots
        self.shutdown = shutdown
        self.shutdownReason = shutdownReason
    }

    /// Tokens the step feeds through the model.
    public var tokenCount: Int { work.reduce(0) { $0 + $1.tokens.count } }
}

/// Turns plans into bytes and back. Decoding runs on workers and must throw (never crash)
/// on bytes it does not understand.
public protocol StepPlanCodec: Sendable {
    func encode(_ plan: PlannedStep) throws -> [UInt8]
    func decode(_ bytes: [UInt8]) throws -> PlannedStep
}
