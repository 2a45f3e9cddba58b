// The coordinator/worker step loop (DESIGN.md §5-6). Rank 0 schedules sequences into steps,
// broadcasts each `StepPlan` (GemmaWire's message, encoded with protobuf-c), and every rank
// (rank 0 included) runs the same step: release freed slots, validate against the model's
// limits, forward, then the sampling exchange. Failures are agreed across
// ranks so every rank reports the same message. The scheduler (continuous batching) is in
// Scheduler.swift; `Coordinator` runs a fixed batch through it.
import Foundation
import GemmaModel
import GemmaParallel
import GemmaWire

/// Errors raised by the engine itself (model and transport errors pass through).
public enum EngineError: Error, CustomStringConvertible, Equatable {
    case tooManyRequests(requested: Int, slots: Int)
    case notCoordinator(String)
    case badPlan(String)

    public var description: String {
        switch self {
        case let .tooManyRequests(n, slots):
            return "\(n) requests at once need \(n) KV slots, the model has \(slots)"
        case let .notCoordinator(what): return "\(what) runs on rank 0 only"
        case let .badPlan(m): return "step plan: \(m)"
        }
    }
}

/// A generation request as the coordinator receives it.
public struct GenerationRequest: Sendable, Equatable {
    public var id: UInt64
    public var promptTokens: [Int32]
    /// Most tokens to generate; generation also stops at a stop token or a full context.
    public var maxNewTokens: Int
    public var sampling: SamplingParams
    /// Ids that end the sequence (not included in the output), e.g. the model's EOS ids.
    public var stopTokens: Set<Int32>
    /// nil: no log-probabilities. n: each generated token's log-probability with the n most
    /// likely alternatives (0...`WireLimits.maxTopLogprobs`), of the model's distribution
    /// (before temperature and the filters).
    public var logprobs: Int?
    /// Structured output: JSON Schema text (`JSONGrammar(schemaText:)`); the generated text is
    /// then a value the schema accepts. Empty: unconstrained.
    public var grammar: [UInt8]

    public init(id: UInt64, promptTokens: [Int32], maxNewTokens: Int, sampling: SamplingParams,
                stopTokens: Set<Int32> = [], logprobs: Int? = nil, grammar: [UInt8] = []) {
        self.grammar = grammar
        self.id = id
        self.promptTokens = promptTokens
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
        self.stopTokens = stopTokens
        self.logprobs = logprobs
    }
}

extension GenerationRequest {
    /// Checks the request with the rules its plans will meet on every rank (the token check
    /// `PlanLimits.checkTokens` and `SamplingParams.validate`), plus `maxNewTokens >= 0`.
    /// `slot`, when already known, names the sequence in messages.
    public func validate(_ limits: PlanLimits, slot: Int? = nil) throws {
        try limits.checkTokens(promptTokens, startPosition: 0,
                               subject: slot.map { "sequence in slot \($0)" } ?? "the prompt of request \(id)",
                               planSubject: "request \(id)")
        try sampling.validate(limits)
        if let n = logprobs, n < 0 || n > WireLimits.maxTopLogprobs {
            throw PlanError(subject: "request \(id)", detail: "logprobs alternatives \(n) outside 0...\(WireLimits.maxTopLogprobs)")
        }
        if maxNewTokens < 0 {
            throw PlanError(subject: "request \(id)", detail: "max new tokens must be >= 0, got \(maxNewTokens)")
        }
        if !grammar.isEmpty {
            if grammar.count > WireLimits.maxGrammarBytes {
                throw PlanError(subject: "request \(id)", detail: "schema of \(grammar.count) bytes, more than \(WireLimits.maxGrammarBytes)")
            }
            let g: JSONGrammar
            do { g = try JSONGrammar(schemaText: grammar) } catch {
                throw PlanError(subject: "request \(id)", detail: "\(error)")
            }
            let budget = grammarBudget(maxContext: limits.maxContext)
            if g.minimumLength > budget {
                throw PlanError(subject: "request \(id)", detail: "the shortest value the schema accepts takes \(g.minimumLength) tokens, "
                                + "more than the \(budget) this request may generate")
            }
        }
    }

    /// Most tokens a constrained sequence may generate: `maxNewTokens`, and no more than the
    /// context leaves after the prompt.
    public func grammarBudget(maxContext: Int?) -> Int {
        min(maxNewTokens, (maxContext ?? Int.max) - promptTokens.count)
    }
}

extension PlanLimits {
    /// The limits of a loaded model: its vocabulary, context, slots and batch size.
    public init(model: any ShardedCausalLM) {
        self.init(vocabSize: model.vocabSize, maxContext: model.maxContext, slots: model.slots,
                  maxBatchTokens: model.maxBatchTokens)
    }
}

/// Why a sequence ended.
public enum FinishReason: String, Sendable, Equatable {
    /// A stop token was sampled.
    case stop
    /// `maxNewTokens` generated, or the context is full.
    case length
    /// Cancelled by the caller (a client went away, a stop string matched, shutdown).
    case cancelled
}

/// A finished generation.
public struct GenerationResult: Sendable, Equatable {
    public var id: UInt64
    public var promptTokens: [Int32]
    /// Generated ids, without the stop token.
    public var tokens: [Int32]
    public var finishReason: FinishReason
    /// One entry per generated token when the request asked for log-probabilities.
    public var logprobs: [TokenLogprobs] = []
    /// Prompt tokens whose KV entries were reused from an earlier sequence (prefix caching)
    /// instead of computed.
    public var cachedTokens = 0
}

/// Where the time of the steps went, measured on the rank that owns the engine. Prefill
/// figures cover steps that carried any prompt tokens; decode figures the other steps.
public struct EngineTimings: Sendable, Equatable {
    public var steps = 0
    public var prefillTokens = 0
    public var prefillSeconds = 0.0
    public var decodeTokens = 0
    public var decodeSeconds = 0.0
    /// Inside `model.forward` (includes its all-reduces: the model does not split them out).
    public var forwardSeconds = 0.0
    /// Plan broadcast, decoding and the agreement on success.
    public var controlSeconds = 0.0
    /// The sampling exchange (local selection + allGather rounds).
    public var samplingSeconds = 0.0
    public var samplingRounds = 0
    /// Floats this rank sent in sampling records.
    public var samplingFloatsSent = 0
    /// Structured output: rows masked, and the time the masks took (inside `samplingSeconds`).
    public var maskedRows = 0
    public var maskSeconds = 0.0

    public init() {}

    public var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(prefillTokens) / prefillSeconds : 0 }
    public var decodeTokensPerSecond: Double { decodeSeconds > 0 ? Double(decodeTokens) / decodeSeconds : 0 }
}

/// The per-rank half of the engine: executes plans. Every rank owns one; the coordinator's
/// `Coordinator` drives rank 0's.
public final class StepExecutor {
    public let model: any ShardedCausalLM
    public let comm: any Communicator
    /// What every plan is checked against (the model's limits).
    public let limits: PlanLimits
    public private(set) var timings = EngineTimings()
    var sampler = DistributedSampler()
    /// The log-probabilities of the last step's draws (one per sampled work item, nil where
    /// not asked); identical on every rank.
    public private(set) var lastLogprobs: [TokenLogprobs?] = []
    /// The text bytes of every id, needed for structured output (set on every rank before
    /// the first constrained plan; the serve command broadcasts rank 0's at start-up).
    public var vocabularyBytes: VocabularyBytes?
    /// Constrained sequences by slot: the compiled grammar, its state and token budget.
    var constraints: [Int: Constraint] = [:]
    /// This rank's masking tables: built by `buildMaskTablesInBackground` (serve starts it
    /// once the vocabulary's bytes are known), else at the first constrained plan.
    var shardMask: ShardMask?
    /// The background build, taken over by the first constrained plan (which waits for it if
    /// it has not finished).
    private var pendingMask: PendingMask?

    final class PendingMask: @unchecked Sendable {
        let done = DispatchSemaphore(value: 0)
        var mask: ShardMask?
    }

    struct Constraint {
        let grammar: JSONGrammar
        var state: JSONState
        let budget: Int
    }

    /// Whether the constrained sequence in `slot` holds a complete value no byte can extend.
    public func constraintComplete(slot: Int) -> Bool {
        guard let c = constraints[slot] else { return false }
        return c.grammar.isComplete(c.state)
    }

    public init(model: any ShardedCausalLM, comm: any Communicator) {
        self.model = model
        self.comm = comm
        self.limits = PlanLimits(model: model)
    }

    /// Runs one plan on this rank: receives it (workers) or sends it (coordinator), releases
    /// slots, forwards, samples. Returns the plan and the sampled ids (one per work item with
    /// `wantSample`, in plan order); identical on every rank.
    ///
    /// `coordinatorFailure` (rank 0 only) is an error found by the scheduler itself: it is
    /// agreed like any other, so every rank throws it with the same text.
    func execute(sending plan: StepPlan?, coordinatorFailure: Error? = nil) throws -> (plan: StepPlan, sampled: [Int32]) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        var failure: Error? = coordinatorFailure
        var received: StepPlan?
        do {
            if comm.isCoordinator {
                guard let plan else { throw EngineError.notCoordinator("sending a plan") }
                Activity.setStep(plan.stepId)
                _ = try comm.broadcastPlan(plan.encode())
                received = plan
            } else {
                Activity.set(.planWait)
                received = try StepPlan.decode(try comm.broadcastPlan([]))
                Activity.setStep(received?.stepId ?? 0)
            }
        } catch let error as CommunicatorError {
            throw error  // a transport failure: there is nothing left to agree over
        } catch {
            failure = error
        }
        var slice: LogitsSlice?
        var forwardNanos: UInt64 = 0
        if failure == nil, let step = received {
            do {
                for slot in step.freeSlots {
                    model.release(slot: Int(slot))
                    constraints[Int(slot)] = nil
                }
                if !step.shutdown {
                    try step.validate(limits)
                    try installConstraints(step)
                    // Prefix caching: a new sequence starts from KV entries a slot already holds.
                    for w in step.work where w.prefixLength > 0 {
                        try model.reusePrefix(source: Int(w.prefixSourceSlot), into: Int(w.slot), length: Int(w.prefixLength))
                    }
                    let batch = Self.batch(for: step)
                    let f0 = DispatchTime.now().uptimeNanoseconds
                    Activity.set(.forward)
                    if !batch.isEmpty { slice = try model.forward(batch) }
                    forwardNanos = DispatchTime.now().uptimeNanoseconds - f0
                }
            } catch {
                failure = error
            }
        }
        Activity.set(.agreement)
        try comm.agree(failure)  // rethrows at once if a peer stopped answering (nothing to agree with)
        let t1 = DispatchTime.now().uptimeNanoseconds
        guard let step = received else { throw EngineError.badPlan("no plan") }  // unreachable after agree

        var sampled: [Int32] = []
        lastLogprobs = []
        var stats = SamplingStats()
        if let slice, !step.shutdown {
            var requests: [SampleRequest] = []
            var row = 0
            for w in step.work where w.wantLogits {
                requests.append(SampleRequest(row: row, settings: w.sampling, stepIndex: w.stepIndexInSequence,
                                              logprobs: w.logprobs))
                row += 1
            }
            if !requests.isEmpty && !constraints.isEmpty {
                // Unconstrained steps never get here: no mask work at all.
                try applyMasks(step, slice: slice)
            }
            if !requests.isEmpty {
                Activity.set(.sampling)
                (sampled, lastLogprobs) = try sampler.sampleWithLogprobs(requests, logits: slice, sampleableVocab: model.sampleableVocab,
                                                                        comm: comm, stats: &stats)
            }
        }
        if !constraints.isEmpty && !sampled.isEmpty { try advanceConstraints(step, sampled: sampled) }
        let t2 = DispatchTime.now().uptimeNanoseconds

        timings.steps += 1
        timings.forwardSeconds += Double(forwardNanos) / 1e9
        timings.controlSeconds += Double(t1 - t0 - forwardNanos) / 1e9  // broadcast, decode, validate, agree
        timings.samplingSeconds += Double(t2 - t1) / 1e9
        timings.samplingRounds += stats.rounds
        timings.samplingFloatsSent += stats.floatsSent
        let seconds = Double(t2 - t0) / 1e9
        let prefill = step.work.filter(\.isPrefillChunk).reduce(0) { $0 + $1.tokenIds.count }
        if prefill > 0 {
            timings.prefillTokens += prefill
            timings.prefillSeconds += seconds
        } else if !step.work.isEmpty {
            timings.decodeTokens += step.tokenCount
            timings.decodeSeconds += seconds
        }
        return (step, sampled)
    }

    /// Compiles the grammars that arrive with a sequence's first chunk (every rank alike).
    func installConstraints(_ step: StepPlan) throws {
        for w in step.work where !w.grammar.isEmpty {
            guard let vocab = vocabularyBytes else {
                throw EngineError.badPlan("structured output needs the vocabulary's bytes on every rank, and this rank has none")
            }
            let g = try JSONGrammar(schemaText: w.grammar)
            constraints[Int(w.slot)] = Constraint(grammar: g, state: g.start(), budget: Int(w.grammarMaxTokens))
            if shardMask == nil {
                if let pending = pendingMask {
                    pending.done.wait()
                    shardMask = pending.mask
                    pendingMask = nil
                } else {
                    shardMask = ShardMask(vocab: vocab, range: maskRange(vocab))
                }
            }
        }
    }

    /// The ids of this rank's shard that can be drawn (and so masked).
    private func maskRange(_ vocab: VocabularyBytes) -> Range<Int> {
        model.vocabRange.clamped(to: 0..<min(model.sampleableVocab, vocab.count))
    }

    /// Starts building this rank's masking tables on a background thread (low priority), so
    /// the first constrained request does not stall every running sequence while they are
    /// built (seconds for Gemma's 262,144 ids on a debug build). Call on the engine thread
    /// after `vocabularyBytes` is set; a no-op when the tables exist or are being built.
    public func buildMaskTablesInBackground() {
        guard shardMask == nil, pendingMask == nil, let vocab = vocabularyBytes else { return }
        let range = maskRange(vocab)
        let pending = PendingMask()
        pendingMask = pending
        let thread = Thread {
            pending.mask = ShardMask(vocab: vocab, range: range)
            pending.done.signal()
        }
        thread.qualityOfService = .background
        thread.start()
    }

    /// Writes -inf into this rank's logits of every id the constrained rows' automata refuse.
    /// The logits buffer is the model's scratch, read by nothing but the sampler after this.
    func applyMasks(_ step: StepPlan, slice: LogitsSlice) throws {
        guard let mask = shardMask else { return }
        let m0 = DispatchTime.now().uptimeNanoseconds
        var row = 0
        for w in step.work where w.wantLogits {
            defer { row += 1 }
            guard let c = constraints[Int(w.slot)] else { continue }
            let remaining = c.budget - Int(w.stepIndexInSequence) - 1
            let r = slice.row(row)
            let mutableRow = UnsafeMutableBufferPointer(mutating: r)
            // Ids past the shard's sampleable part are never drawn; the mask covers the rest.
            let offset = mask.range.lowerBound - slice.vocabRange.lowerBound
            let part = UnsafeMutableBufferPointer(rebasing: mutableRow[offset..<(offset + mask.range.count)])
            mask.apply(c.grammar, c.state, remaining: max(0, remaining), row: part)
            timings.maskedRows += 1
        }
        timings.maskSeconds += Double(DispatchTime.now().uptimeNanoseconds - m0) / 1e9
    }

    /// Advances each constrained row's automaton with the id every rank drew.
    func advanceConstraints(_ step: StepPlan, sampled: [Int32]) throws {
        guard let vocab = vocabularyBytes else { return }
        var next = 0
        for w in step.work where w.wantLogits {
            defer { next += 1 }
            guard next < sampled.count, var c = constraints[Int(w.slot)] else { continue }
            let bytes = vocab.bytes(of: Int(sampled[next]))
            guard c.grammar.feed(&c.state, bytes) else {
                throw EngineError.badPlan("slot \(w.slot): the drawn id \(sampled[next]) breaks the grammar")
            }
            constraints[Int(w.slot)] = c
        }
    }

    /// The model batch of a plan: every work item's tokens in order, logits wanted after the
    /// last token of items that sample.
    static func batch(for plan: StepPlan) -> [BatchEntry] {
        var batch: [BatchEntry] = []
        batch.reserveCapacity(plan.tokenCount)
        for w in plan.work {
            for (i, t) in w.tokenIds.enumerated() {
                batch.append(BatchEntry(slot: Int(w.slot), token: t, position: Int(w.startPosition) + i,
                                        wantLogits: w.wantLogits && i == w.tokenIds.count - 1))
            }
        }
        return batch
    }

    /// The worker loop (ranks other than 0): execute plans until a shutdown plan arrives.
    /// An agreed error ends the loop with that error on every rank.
    public func runWorker() throws {
        while true {
            let (plan, _) = try execute(sending: nil)
            if plan.shutdown { return }
        }
    }
}

/// Rank 0's batch-at-once front end over `BatchScheduler`: runs a fixed set of requests (one
/// KV slot each) to completion. Commands and tests use it; the server drives the scheduler.
public final class Coordinator {
    public let executor: StepExecutor
    public let scheduler: BatchScheduler

    public init(executor: StepExecutor, prefixCache: Bool = false) throws {
        guard executor.comm.isCoordinator else { throw EngineError.notCoordinator("Coordinator") }
        self.executor = executor
        self.scheduler = try BatchScheduler(executor: executor, maxQueued: executor.model.slots, prefixCache: prefixCache)
    }

    public var timings: EngineTimings { executor.timings }

    /// Generates for every request at once (one KV slot each) and returns results in request
    /// order. Workers must be in `runWorker` meanwhile.
    public func generate(_ requests: [GenerationRequest]) throws -> [GenerationResult] {
        let model = executor.model
        guard requests.count <= model.slots else {
            throw EngineError.tooManyRequests(requested: requests.count, slots: model.slots)
        }
        // Checked again on every rank when the plans run; here it fails before any compute.
        for (i, r) in requests.enumerated() { try r.validate(executor.limits, slot: i) }
        let collectors = requests.map { _ in ResultCollector() }
        for (r, c) in zip(requests, collectors) {
            try scheduler.submit(r) { event in
                switch event {
                case .token, .logprobs, .promptCached: break
                case let .finished(result): c.result = result
                case let .failed(message): c.failure = message
                }
            }
        }
        try scheduler.runUntilIdle()
        return try zip(requests, collectors).map { r, c in
            guard let result = c.result else { throw EngineError.badPlan(c.failure ?? "request \(r.id) did not finish") }
            return result
        }
    }

    /// Ends every worker's loop (and releases the slots still held). With `failure`, every
    /// rank (this one included) then throws it as an agreed `CommunicatorError.remote`.
    public func shutdown(reason: String = "done", failure: Error? = nil) throws {
        try scheduler.shutdown(reason: reason, failure: failure)
    }
}

/// Convenience for commands and tests: runs `requests` on a whole cluster. Rank 0 generates
/// and then shuts the workers down; other ranks serve plans until then. Returns the results
/// on rank 0 and nil elsewhere; an agreed error is thrown on every rank.
public func runGeneration(_ requests: [GenerationRequest], model: any ShardedCausalLM,
                          comm: any Communicator) throws -> (results: [GenerationResult], timings: EngineTimings)? {
    let executor = StepExecutor(model: model, comm: comm)
    guard comm.isCoordinator else {
        try executor.runWorker()
        return nil
    }
    let coordinator = try Coordinator(executor: executor)
    let results: [GenerationResult]
    do {
        results = try coordinator.generate(requests)
    } catch let error as CommunicatorError {
        throw error  // already agreed (or a transport failure): workers left their loop too
    } catch {
        // A scheduler error on rank 0 (e.g. too many requests): the workers are waiting for a
        // plan, so send them a shutdown and agree on the error; every rank throws it.
        try coordinator.shutdown(reason: "\(error)", failure: error)
        throw error  // not reached: the agreement above throws
    }
    try coordinator.shutdown()
    return (results, coordinator.timings)
}
