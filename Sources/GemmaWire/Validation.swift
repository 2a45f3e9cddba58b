// The one set of checks for step plans and the requests that become them. Decoding a message
// checks it against the wire's own bounds (`PlanLimits.wire`: anything a worker would index,
// allocate or loop by); the engine checks the same plan against the loaded model's limits, and
// the scheduler and the HTTP API check a request against them before it is queued. The rules
// are written once here, so a value refused in one place is refused everywhere.

/// What a plan or request is checked against, on top of the fixed `WireLimits`. A nil limit is
/// not checked (the wire does not know the model).
public struct PlanLimits: Sendable, Equatable {
    /// Token ids must be in `0 ..< vocabSize`; nil: any id >= 0.
    public var vocabSize: Int?
    /// Positions must stay below it; nil: positions must fit 32 bits.
    public var maxContext: Int?
    /// KV-cache slots: slot numbers must be in `0 ..< slots`.
    public var slots: Int?
    /// Most tokens one plan feeds through the model.
    public var maxBatchTokens: Int?
    /// Largest temperature accepted (the OpenAI API allows 2).
    public var maxTemperature: Float

    public init(vocabSize: Int? = nil, maxContext: Int? = nil, slots: Int? = nil, maxBatchTokens: Int? = nil,
                maxTemperature: Float = .greatestFiniteMagnitude) {
        self.vocabSize = vocabSize
        self.maxContext = maxContext
        self.slots = slots
        self.maxBatchTokens = maxBatchTokens
        self.maxTemperature = maxTemperature
    }

    /// The bounds decoding enforces: `WireLimits` only.
    public static let wire = PlanLimits()
}

/// A plan or request value outside its limits. `description` is the detail alone (it is the
/// text every rank agrees on); `WireMessage.decode` reports it as `WireError.invalidField`.
public struct PlanError: Error, Equatable, CustomStringConvertible {
    /// The message or part that failed: "StepPlan 3", "SequenceWork (slot 2)", "SamplingParams".
    public var subject: String
    /// The sampling field at fault ("temperature", "top_k", "top_p", "min_p"); nil otherwise.
    public var field: String?
    public var detail: String

    public init(subject: String, field: String? = nil, detail: String) {
        self.subject = subject
        self.field = field
        self.detail = detail
    }

    public var description: String { detail }
}

extension SamplingParams {
    /// Throws unless every field is in range: temperature finite in [0, `maxTemperature`],
    /// top_k >= 0, top_p in (0, 1] (0, the value of an absent field, is accepted for a greedy
    /// draw, which does not use it), min_p in [0, 1].
    public func validate(_ limits: PlanLimits = .wire) throws {
        func bad(_ field: String, _ detail: String) -> PlanError { PlanError(subject: "SamplingParams", field: field, detail: detail) }
        guard temperature.isFinite, temperature >= 0 else {
            throw bad("temperature", "temperature \(temperature) is not a finite number >= 0")
        }
        guard temperature <= limits.maxTemperature else {
            throw bad("temperature", "temperature \(temperature) is above \(limits.maxTemperature)")
        }
        guard topK >= 0 else { throw bad("top_k", "top_k \(topK) is negative") }
        guard topP.isFinite, topP <= 1, topP > 0 || (topP == 0 && isGreedy) else {
            throw bad("top_p", "top_p \(topP) is outside (0, 1]")
        }
        guard minP.isFinite, (0...1).contains(minP) else { throw bad("min_p", "min_p \(minP) is outside [0, 1]") }
    }
}

extension PlanLimits {
    /// The token check: ids non-negative and inside the vocabulary, the positions
    /// `startPosition ..< startPosition + tokens.count` inside the context (and 32 bits).
    /// `subject` names the sequence in messages ("sequence in slot 2", "request 7").
    public func checkTokens(_ tokens: [Int32], startPosition: Int, subject: String, planSubject: String) throws {
        func bad(_ detail: String) -> PlanError { PlanError(subject: planSubject, detail: detail) }
        guard !tokens.isEmpty else { throw bad("no token ids") }
        guard tokens.count <= WireLimits.maxTokensPerSequence else {
            throw bad("\(tokens.count) token ids, more than \(WireLimits.maxTokensPerSequence)")
        }
        if let vocabSize {
            for t in tokens where t < 0 || Int(t) >= vocabSize {
                throw bad("token id \(t) is outside the vocabulary (0..<\(vocabSize))")
            }
        } else if let negative = tokens.first(where: { $0 < 0 }) {
            throw bad("negative token id \(negative)")
        }
        let end = startPosition + tokens.count
        guard startPosition >= 0, end <= Int(UInt32.max) else {
            throw bad("positions \(startPosition) + \(tokens.count) overflow 32 bits")
        }
        if let maxContext, end > maxContext {
            throw bad("\(subject) needs \(end) positions, more than the context of \(maxContext)")
        }
    }

    /// Throws unless `slot` names a KV-cache slot.
    public func checkSlot(_ slot: Int, subject: String) throws {
        if let slots, slot < 0 || slot >= slots {
            throw PlanError(subject: subject, detail: "slot \(slot) outside 0..<\(slots)")
        }
    }
}

extension SequenceWork {
    /// Throws unless the slot exists, the tokens pass `PlanLimits.checkTokens` and the
    /// sampling parameters pass `SamplingParams.validate`.
    public func validate(_ limits: PlanLimits = .wire) throws {
        let subject = "SequenceWork (slot \(slot))"
        try limits.checkSlot(Int(slot), subject: subject)
        try limits.checkTokens(tokenIds, startPosition: Int(startPosition), subject: "sequence in slot \(slot)",
                               planSubject: subject)
        try sampling.validate(limits)
        if let n = logprobs, n < 0 || n > WireLimits.maxTopLogprobs {
            throw PlanError(subject: subject, detail: "logprobs alternatives \(n) outside 0...\(WireLimits.maxTopLogprobs)")
        }
        if grammar.count > WireLimits.maxGrammarBytes {
            throw PlanError(subject: subject, detail: "grammar of \(grammar.count) bytes, more than \(WireLimits.maxGrammarBytes)")
        }
        if !grammar.isEmpty && (grammarMaxTokens == 0 || startPosition != prefixLength || !isPrefillChunk) {
            throw PlanError(subject: subject, detail: "a grammar travels on a sequence's first prompt chunk, with a token budget >= 1")
        }
        if prefixLength > 0 {
            try limits.checkSlot(Int(prefixSourceSlot), subject: subject)
            if !isPrefillChunk || startPosition != prefixLength {
                throw PlanError(subject: subject, detail: "a reused prefix of \(prefixLength) positions comes with the sequence's first prompt chunk, starting at that position")
            }
        } else if prefixSourceSlot != 0 {
            throw PlanError(subject: subject, detail: "a prefix source slot without a prefix length")
        }
    }
}

extension StepPlan {
    /// Throws unless the plan is of this protocol version, bounded, names each slot once and
    /// every sequence passes `SequenceWork.validate`.
    public func validate(_ limits: PlanLimits = .wire) throws {
        let subject = "StepPlan \(stepId)"
        func bad(_ detail: String) -> PlanError { PlanError(subject: subject, detail: detail) }
        guard protocolVersion == WireProtocol.version else {
            throw WireError.versionMismatch(remote: protocolVersion, local: WireProtocol.version)
        }
        guard work.count <= WireLimits.maxSequencesPerPlan else {
            throw bad("\(work.count) sequences, more than \(WireLimits.maxSequencesPerPlan)")
        }
        guard freeSlots.count <= WireLimits.maxFreeSlots else {
            throw bad("\(freeSlots.count) freed slots, more than \(WireLimits.maxFreeSlots)")
        }
        guard shutdownReason.utf8.count <= WireLimits.maxStringBytes else { throw bad("shutdown reason longer than \(WireLimits.maxStringBytes) bytes") }
        for slot in freeSlots { try limits.checkSlot(Int(slot), subject: subject) }
        var seen = Set<UInt32>()
        for w in work {
            try w.validate(limits)
            // Two entries for one slot would race on that sequence's KV cache.
            guard seen.insert(w.slot).inserted else { throw bad("slot \(w.slot) appears twice") }
        }
        // Prefixes are installed before the forward pass; reading one from a slot this plan
        // starts afresh would depend on the order of the installs.
        let restarted = Set(work.filter { $0.isPrefillChunk && $0.startPosition == $0.prefixLength }.map(\.slot))
        for w in work where w.prefixLength > 0 && w.prefixSourceSlot != w.slot && restarted.contains(w.prefixSourceSlot) {
            throw bad("slot \(w.slot) reuses the prefix of slot \(w.prefixSourceSlot), which this plan starts afresh")
        }
        let total = tokenCount
        guard total <= WireLimits.maxTokensPerPlan else { throw bad("\(total) tokens, more than \(WireLimits.maxTokensPerPlan)") }
        if let maxBatchTokens = limits.maxBatchTokens, total > maxBatchTokens {
            throw bad("\(total) tokens in one step, the model takes at most \(maxBatchTokens)")
        }
    }
}

extension Hello {
    /// Throws unless rank < world size <= `WireLimits.maxWorldSize` and strings are bounded.
    /// (The protocol version is checked by `checkHello`, which can name the rank.)
    public func validate() throws {
        func bad(_ detail: String) -> WireError { .invalidField(message: "Hello", detail: detail) }
        guard worldSize >= 1, worldSize <= WireLimits.maxWorldSize else { throw bad("world size \(worldSize)") }
        guard rank < worldSize else { throw bad("rank \(rank) in a world of \(worldSize)") }
        guard modelFingerprint.utf8.count <= WireLimits.maxStringBytes, host.utf8.count <= WireLimits.maxStringBytes else {
            throw bad("string longer than \(WireLimits.maxStringBytes) bytes")
        }
    }
}

extension Shutdown {
    /// Throws if the reason is longer than `WireLimits.maxStringBytes`.
    public func validate() throws {
        guard reason.utf8.count <= WireLimits.maxStringBytes else {
            throw WireError.invalidField(message: "Shutdown", detail: "reason longer than \(WireLimits.maxStringBytes) bytes")
        }
    }
}

extension WireMessage {
    /// Validates the carried message against the wire's bounds; a `PlanError` is reported as
    /// `WireError.invalidField`.
    public func validate() throws {
        do {
            switch self {
            case .hello(let h): try h.validate()
            case .plan(let p): try p.validate(.wire)
            case .shutdown(let s): try s.validate()
            }
        } catch let e as PlanError {
            throw WireError.invalidField(message: e.subject, detail: e.detail)
        }
    }
}
