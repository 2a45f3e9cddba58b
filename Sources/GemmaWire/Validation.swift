// Range checks on decoded messages: protobuf only guarantees the types, so anything a worker
// would index, allocate or loop by is checked here before it leaves GemmaWire.

extension SamplingParams {
    /// Throws unless every field is in the range documented on it.
    public func validate() throws {
        func bad(_ detail: String) -> WireError { .invalidField(message: "SamplingParams", detail: detail) }
        guard temperature.isFinite, temperature >= 0 else { throw bad("temperature \(temperature) is not a finite number >= 0") }
        guard topK >= 0 else { throw bad("top_k \(topK) is negative") }
        guard topP.isFinite, (0...1).contains(topP) else { throw bad("top_p \(topP) is outside [0, 1]") }
        guard minP.isFinite, (0...1).contains(minP) else { throw bad("min_p \(minP) is outside [0, 1]") }
    }
}

extension SequenceWork {
    /// Throws unless tokens are non-empty, non-negative, bounded, and positions do not overflow.
    public func validate() throws {
        func bad(_ detail: String) -> WireError { .invalidField(message: "SequenceWork (slot \(slot))", detail: detail) }
        guard !tokenIds.isEmpty else { throw bad("no token ids") }
        guard tokenIds.count <= WireLimits.maxTokensPerSequence else {
            throw bad("\(tokenIds.count) token ids, more than \(WireLimits.maxTokensPerSequence)")
        }
        if let negative = tokenIds.first(where: { $0 < 0 }) { throw bad("negative token id \(negative)") }
        guard UInt64(startPosition) + UInt64(tokenIds.count) <= UInt64(UInt32.max) else {
            throw bad("positions \(startPosition) + \(tokenIds.count) overflow 32 bits")
        }
        try sampling.validate()
    }
}

extension StepPlan {
    /// Throws unless the plan is of this protocol version, bounded, and names each slot once.
    public func validate() throws {
        func bad(_ detail: String) -> WireError { .invalidField(message: "StepPlan \(stepId)", detail: detail) }
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
        var total = 0
        var seen = Set<UInt32>()
        for w in work {
            try w.validate()
            // Two entries for one slot would race on that sequence's KV cache.
            guard seen.insert(w.slot).inserted else { throw bad("slot \(w.slot) appears twice") }
            total += w.tokenIds.count
        }
        guard total <= WireLimits.maxTokensPerPlan else { throw bad("\(total) tokens, more than \(WireLimits.maxTokensPerPlan)") }
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
    /// Validates the carried message.
    public func validate() throws {
        switch self {
        case .hello(let h): try h.validate()
        case .plan(let p): try p.validate()
        case .shutdown(let s): try s.validate()
        }
    }
}
