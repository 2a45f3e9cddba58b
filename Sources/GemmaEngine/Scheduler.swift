// Continuous batching on rank 0 (DESIGN.md §5): requests arrive at any time from any thread,
// wait in a bounded queue for a KV slot, and every step packs one decode token of each running
// sequence plus prompt chunks of newer ones into one pass over the weights. Sampled tokens are
// handed to each request's sink as they come; finished and cancelled sequences release their
// slot on every rank through the next plan's `freeSlots`. All MPI work happens on the one
// thread that calls `run()` / `runUntilIdle()` (the engine thread); other threads only touch
// the lock-protected queue.
import Foundation
import GemmaModel
import GemmaParallel
import GemmaWire

/// What a request's sink receives, in order: zero or more `token`s, then exactly one
/// `finished` or `failed`. Sinks are called on the engine thread and must not block.
public enum SequenceEvent: Sendable, Equatable {
    /// A sampled id (never a stop token).
    case token(Int32)
    /// The log-probabilities of the `token` that follows (only for requests that ask).
    case logprobs(TokenLogprobs)
    /// Prefix caching: this many prompt tokens were reused from an earlier sequence's KV
    /// entries (sent once, before the first `token`, only when more than 0).
    case promptCached(Int)
    /// The sequence ended normally or was cancelled (`finishReason == .cancelled`).
    case finished(GenerationResult)
    /// The engine failed (the whole cluster stops); the text is the agreed error.
    case failed(String)
}

/// Errors `BatchScheduler.submit` raises before a request is queued.
public enum SchedulerError: Error, CustomStringConvertible, Equatable {
    /// The queue of requests waiting for a slot is full.
    case queueFull(waiting: Int, limit: Int)
    /// The scheduler is shutting down (or has failed) and takes no new work.
    case shuttingDown
    /// The request cannot run on this model (the message says why).
    case invalidRequest(String)

    public var description: String {
        switch self {
        case let .queueFull(waiting, limit):
            return "server busy: \(waiting) requests already wait for a slot (limit \(limit)); retry later"
        case .shuttingDown: return "the server is shutting down"
        case let .invalidRequest(m): return m
        }
    }
}

/// One step as the scheduler saw it (rank 0's clock), for metrics.
public struct StepReport: Sendable, Equatable {
    /// Sequences in the step.
    public var sequences: Int
    /// Tokens fed through the model.
    public var tokens: Int
    /// Prompt tokens among them.
    public var promptTokens: Int
    /// Time in `model.forward` (compute with its all-reduces).
    public var forwardSeconds: Double
    /// Time in `allReduceSum` during the step (the model's merges, including waiting for the
    /// slowest rank); 0 unless the model's communicator is a `TimedCommunicator`.
    public var allReduceSeconds: Double
    /// Plan broadcast, decoding, validation, agreement.
    public var controlSeconds: Double
    /// Sampling: local selection plus the allGather exchange.
    public var samplingSeconds: Double
    /// Requests waiting for a slot after the step was built.
    public var queued: Int
    /// Structured output: rows this rank masked in the step and the time the masks took
    /// (part of `samplingSeconds`); 0 in steps without a constrained sequence.
    public var maskedRows = 0
    public var maskSeconds = 0.0
    /// Prefix caching: prompt tokens whose KV entries the step reused instead of computing.
    public var cachedPromptTokens = 0
}

/// Rank 0's continuous-batching scheduler. Thread-safe entry points: `submit`, `cancel`,
/// `requestShutdown`, `load`. Engine-thread entry points: `run`, `runUntilIdle`, `shutdown`.
public final class BatchScheduler: @unchecked Sendable {
    public let executor: StepExecutor
    /// Most requests waiting for a slot; `submit` throws `queueFull` beyond it.
    public let maxQueued: Int
    /// Called on the engine thread after every step that carried work.
    public var onStep: (@Sendable (StepReport) -> Void)?
    /// Prefix caching: finished sequences' KV entries stay in their free slots and a new
    /// request whose prompt starts with what a slot holds continues from there (docs/ENGINE.md).
    public let prefixCache: Bool

    public typealias Sink = @Sendable (SequenceEvent) -> Void

    struct Ticket {
        let ticket: UInt64
        let request: GenerationRequest
        let sink: Sink
    }

    /// One running sequence (engine thread only).
    struct Sequence {
        let ticket: Ticket
        let slot: Int
        /// Prompt then generated ids; `tokens[cached...]` are not yet in the KV cache.
        var tokens: [Int32]
        var cached = 0
        var generated: [Int32] = []
        var logprobs: [TokenLogprobs] = []
        var finish: FinishReason?
        /// Prefix caching: prompt tokens taken from `prefixSource`'s KV entries (`cached`
        /// starts there); the first chunk carries the reuse to every rank.
        var reused = 0
        var prefixSource = 0
        /// The running sequence that holds the prefix, when it is another slot's.
        var sourceTicket: UInt64?
        var request: GenerationRequest { ticket.request }
    }

    /// A finished sequence whose KV entries stay in its free slot (engine thread only).
    struct Retained {
        /// The tokens whose entries the slot holds, positions 0 ..< tokens.count.
        let tokens: [Int32]
        /// Order of retention; the smallest is reclaimed first.
        let age: UInt64
    }

    // Guarded by `lock`.
    private let lock = NSCondition()
    private var waiting: [Ticket] = []
    private var cancelRequests: Set<UInt64> = []
    private var shutdownRequested = false
    private var shutdownReason = "done"
    private var shutdownFailure: String?
    private var nextTicket: UInt64 = 0
    private var runningCount = 0

    // Engine thread only.
    private var running: [Sequence] = []
    private var freeSlotList: [Int]
    private var pendingFrees: [Int] = []
    private var nextStepId: UInt64 = 0
    /// Free slots whose entries are kept for reuse, by slot.
    private(set) var retained: [Int: Retained] = [:]
    private var retainAge: UInt64 = 0

    public init(executor: StepExecutor, maxQueued: Int = 64, prefixCache: Bool = false) throws {
        guard executor.comm.isCoordinator else { throw EngineError.notCoordinator("BatchScheduler") }
        self.executor = executor
        self.maxQueued = max(0, maxQueued)
        self.prefixCache = prefixCache
        self.freeSlotList = Array(0..<executor.model.slots)
    }

    /// Slots holding a retained finished sequence, with its token count (tests, diagnostics).
    public var retainedLengths: [Int: Int] { retained.mapValues(\.tokens.count) }

    /// Requests waiting for a slot and sequences running, as of now.
    public var load: (waiting: Int, running: Int) {
        lock.lock()
        defer { lock.unlock() }
        return (waiting.count, runningCount)
    }

    /// Checks what every rank would check, before anything is queued
    /// (`GenerationRequest.validate` against the model's limits).
    public func check(_ r: GenerationRequest) throws {
        do { try r.validate(executor.limits) } catch {
            throw SchedulerError.invalidRequest("\(error)")
        }
        if !r.grammar.isEmpty && executor.vocabularyBytes == nil {
            throw SchedulerError.invalidRequest("structured output needs the vocabulary's bytes, which this engine was not given")
        }
    }

    /// Queues a request (any thread). Returns a ticket for `cancel`. The sink receives the
    /// request's events on the engine thread.
    @discardableResult
    public func submit(_ request: GenerationRequest, sink: @escaping Sink) throws -> UInt64 {
        try check(request)
        lock.lock()
        defer { lock.unlock() }
        if shutdownRequested { throw SchedulerError.shuttingDown }
        if waiting.count >= maxQueued { throw SchedulerError.queueFull(waiting: waiting.count, limit: maxQueued) }
        let ticket = nextTicket
        nextTicket += 1
        waiting.append(Ticket(ticket: ticket, request: request, sink: sink))
        lock.signal()
        return ticket
    }

    /// Stops a request (any thread): a waiting one is dropped, a running one ends before the
    /// next step and its slot is freed on every rank. Its sink gets `finished(.cancelled)`.
    public func cancel(_ ticket: UInt64) {
        lock.lock()
        if let i = waiting.firstIndex(where: { $0.ticket == ticket }) {
            let t = waiting.remove(at: i)
            lock.unlock()
            t.sink(.finished(GenerationResult(id: t.request.id, promptTokens: t.request.promptTokens, tokens: [],
                                              finishReason: .cancelled)))
            return
        }
        cancelRequests.insert(ticket)
        lock.signal()
        lock.unlock()
    }

    /// Makes `run()` cancel everything, send the shutdown plan and return (any thread). With
    /// `failure`, every rank then throws it (agreed) instead of returning.
    public func requestShutdown(reason: String = "shutdown", failure: String? = nil) {
        lock.lock()
        shutdownRequested = true
        shutdownReason = reason
        if let failure { shutdownFailure = failure }
        lock.signal()
        lock.unlock()
    }

    /// The engine loop: waits (without any broadcast, so workers sit in their idle receive)
    /// until there is work, runs steps, and on `requestShutdown` cancels what is left and
    /// sends the shutdown plan. An engine failure is delivered to every request and rethrown
    /// (every rank has then left its loop with the same agreed error).
    public func run() throws {
        while true {
            lock.lock()
            while !shutdownRequested && waiting.isEmpty && cancelRequests.isEmpty && running.isEmpty
                    && pendingFrees.isEmpty {
                Activity.set(.idle)
                lock.wait()
            }
            let stop = shutdownRequested
            let reason = shutdownReason
            let failure = shutdownFailure
            lock.unlock()
            if stop {
                cancelEverything()
                try shutdown(reason: reason, failure: failure.map { SchedulerError.invalidRequest($0) })
                return
            }
            try guarded { try stepOnce(allowFreesOnly: true) }
        }
    }

    /// Runs steps until nothing waits or runs (engine thread; used by `Coordinator.generate`).
    /// Slots freed by the last sequences are released with the next plan.
    public func runUntilIdle() throws {
        while true {
            lock.lock()
            let idle = waiting.isEmpty && running.isEmpty
            lock.unlock()
            if idle { return }
            try guarded { try stepOnce(allowFreesOnly: false) }
        }
    }

    /// Ends every worker's loop (and releases the slots still held). With `failure`, every
    /// rank (this one included) then throws it as an agreed `CommunicatorError.remote`.
    public func shutdown(reason: String = "done", failure: Error? = nil) throws {
        lock.lock()
        shutdownRequested = true
        lock.unlock()
        // Bounded: the wire refuses strings over 4 KiB, and the reason is informational.
        let plan = StepPlan(stepId: nextStepId, freeSlots: (pendingFrees + running.map(\.slot)).map { UInt32($0) }, shutdown: true,
                               shutdownReason: String(reason.utf8.prefix(1024)) ?? "")
        nextStepId += 1
        pendingFrees = []
        _ = try executor.execute(sending: plan, coordinatorFailure: failure)
    }

    /// Runs `body`; on failure tells every request and stops taking new ones. Errors that
    /// are not yet agreed (found by the scheduler after a step) are sent to the workers in a
    /// shutdown plan first, so no rank is left waiting.
    private func guarded(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch {
            failEverything("\(error)")
            if error is CommunicatorError { throw error }
            try shutdown(reason: "\(error)", failure: error)
            throw error
        }
    }

    private func failEverything(_ message: String) {
        lock.lock()
        shutdownRequested = true
        let queued = waiting
        waiting = []
        runningCount = 0
        lock.unlock()
        for s in running { s.ticket.sink(.failed(message)) }
        for t in queued { t.sink(.failed(message)) }
        running = []
    }

    private func cancelEverything() {
        lock.lock()
        let queued = waiting
        waiting = []
        runningCount = 0
        lock.unlock()
        for i in running.indices { finish(&running[i], .cancelled) }
        for t in queued {
            t.sink(.finished(GenerationResult(id: t.request.id, promptTokens: t.request.promptTokens, tokens: [],
                                              finishReason: .cancelled)))
        }
        running = []
    }

    /// Ends a running sequence: reports it and queues its slot for release.
    private func finish(_ s: inout Sequence, _ reason: FinishReason) {
        s.finish = reason
        pendingFrees.append(s.slot)
        freeSlotList.append(s.slot)
        // Retained only once a plan wrote the slot (cached > reused): a sequence that ended
        // before its first chunk ran left the slot's old contents, which are not its tokens.
        if prefixCache && s.cached > s.reused {
            retained[s.slot] = Retained(tokens: Array(s.tokens[0..<s.cached]), age: retainAge)
            retainAge += 1
        }
        s.ticket.sink(.finished(GenerationResult(id: s.request.id, promptTokens: s.request.promptTokens,
                                                 tokens: s.generated, finishReason: reason, logprobs: s.logprobs,
                                                 cachedTokens: s.cached > s.reused ? s.reused : 0)))
    }

    /// Applies cancellations, admits waiting requests into free slots (FIFO), runs one step
    /// and delivers its tokens.
    private func stepOnce(allowFreesOnly: Bool) throws {
        lock.lock()
        let cancels = cancelRequests
        cancelRequests = []
        lock.unlock()
        if !cancels.isEmpty {
            for i in running.indices where cancels.contains(running[i].ticket.ticket) {
                finish(&running[i], .cancelled)
            }
            running.removeAll { $0.finish != nil }
        }
        freeSlotList.sort()
        lock.lock()
        // Sequences admitted below have no entries yet: only earlier ones are prefix sources.
        let sources = running.count
        while !freeSlotList.isEmpty && !waiting.isEmpty {
            let t = waiting.removeFirst()
            running.append(admit(t, liveSources: running[0..<sources]))
        }
        let queued = waiting.count
        lock.unlock()
        // Zero-token requests end at once (they still passed `check`).
        for i in running.indices where running[i].request.maxNewTokens <= 0 { finish(&running[i], .length) }
        running.removeAll { $0.finish != nil }
        lock.lock()
        runningCount = running.count
        lock.unlock()

        let plan = buildStep()
        if plan.work.isEmpty && (!allowFreesOnly || plan.freeSlots.isEmpty) {
            nextStepId -= 1  // nothing sent
            return
        }
        let before = executor.timings
        let timed = executor.comm as? TimedCommunicator
        let reduceBefore = timed?.allReduceSumSeconds ?? 0
        let (_, sampled) = try executor.execute(sending: plan)
        pendingFrees = []
        let model = executor.model
        var next = 0
        for w in plan.work {
            guard let i = running.firstIndex(where: { $0.slot == Int(w.slot) }) else { continue }
            running[i].cached += w.tokenIds.count
            if w.prefixLength > 0 { running[i].ticket.sink(.promptCached(Int(w.prefixLength))) }
            guard w.wantLogits else { continue }
            guard next < sampled.count else { throw EngineError.badPlan("sampler returned too few ids") }
            let token = sampled[next]
            let logprobs = next < executor.lastLogprobs.count ? executor.lastLogprobs[next] : nil
            next += 1
            if running[i].request.stopTokens.contains(token) {
                finish(&running[i], .stop)
                continue
            }
            running[i].generated.append(token)
            running[i].tokens.append(token)
            if let logprobs {
                running[i].logprobs.append(logprobs)
                running[i].ticket.sink(.logprobs(logprobs))
            }
            running[i].ticket.sink(.token(token))
            if !running[i].request.grammar.isEmpty && executor.constraintComplete(slot: running[i].slot) {
                finish(&running[i], .stop)  // the value is complete: nothing may follow it
                continue
            }
            if running[i].generated.count >= running[i].request.maxNewTokens || running[i].tokens.count > model.maxContext {
                finish(&running[i], .length)
            }
        }
        running.removeAll { $0.finish != nil }
        lock.lock()
        runningCount = running.count
        lock.unlock()
        if let onStep, !plan.work.isEmpty {
            let after = executor.timings
            onStep(StepReport(sequences: plan.work.count, tokens: plan.tokenCount,
                              promptTokens: plan.work.filter(\.isPrefillChunk).reduce(0) { $0 + $1.tokenIds.count },
                              forwardSeconds: after.forwardSeconds - before.forwardSeconds,
                              allReduceSeconds: (timed?.allReduceSumSeconds ?? 0) - reduceBefore,
                              controlSeconds: after.controlSeconds - before.controlSeconds,
                              samplingSeconds: after.samplingSeconds - before.samplingSeconds, queued: queued,
                              maskedRows: after.maskedRows - before.maskedRows, maskSeconds: after.maskSeconds - before.maskSeconds,
                              cachedPromptTokens: plan.work.reduce(0) { $0 + Int($1.prefixLength) }))
        }
    }

    /// Takes a free slot for a request. With prefix caching, the slot (or running sequence)
    /// holding the longest reusable start of the prompt gives its entries: a retained slot is
    /// taken over in place, a running sequence's entries are copied into a free slot. Without
    /// a match the request gets an empty free slot, else the least recently retained one.
    /// At least the last prompt token is always computed (its logits give the first token).
    private func admit(_ t: Ticket, liveSources: ArraySlice<Sequence>) -> Sequence {
        let prompt = t.request.promptTokens
        var best: (slot: Int, length: Int, ticket: UInt64?)?
        if prefixCache && prompt.count > 1 && t.request.maxNewTokens > 0 {
            func consider(_ slot: Int, _ tokens: ArraySlice<Int32>, _ ticket: UInt64?) {
                var n = 0
                let limit = min(tokens.count, prompt.count - 1)
                while n < limit && tokens[tokens.startIndex + n] == prompt[n] { n += 1 }
                guard n > (best?.length ?? 0) else { return }
                let k = executor.model.reusablePrefix(source: slot, upTo: n)
                if k > (best?.length ?? 0) { best = (slot, k, ticket) }
            }
            for slot in freeSlotList { if let r = retained[slot] { consider(slot, r.tokens[...], nil) } }
            // A sequence whose first chunk has not run yet (cached == reused) has no entries of its own.
            for s in liveSources where s.cached > s.reused { consider(s.slot, s.tokens[0..<s.cached], s.ticket.ticket) }
        }
        let slot: Int
        if let best, best.ticket == nil {
            slot = best.slot
        } else {
            slot = freeSlotList.first { retained[$0] == nil }
                ?? freeSlotList.min { retained[$0]!.age < retained[$1]!.age }!
        }
        freeSlotList.removeAll { $0 == slot }
        retained[slot] = nil
        var s = Sequence(ticket: t, slot: slot, tokens: prompt)
        if let best {
            s.reused = best.length
            s.cached = best.length
            s.prefixSource = best.slot
            s.sourceTicket = best.ticket
        }
        return s
    }

    /// Before a sequence's first chunk goes out: whether the running sequence it copies from
    /// still runs in its slot and the entries are still intact (a sliding layer's ring moves on
    /// as that sequence grows). If not, the sequence computes its whole prompt instead.
    private func confirmPrefix(_ i: Int) {
        let s = running[i]
        guard s.reused > 0, s.cached == s.reused, let ticket = s.sourceTicket else { return }
        let alive = running.contains { $0.ticket.ticket == ticket && $0.slot == s.prefixSource && $0.cached >= s.reused && $0.finish == nil }
        if !alive || executor.model.reusablePrefix(source: s.prefixSource, upTo: s.reused) != s.reused {
            running[i].reused = 0
            running[i].cached = 0
            running[i].sourceTicket = nil
        }
    }

    /// The next step: one decode token for each sequence past its prompt, then prompt chunks
    /// in admission order while the token budget lasts.
    func buildStep() -> StepPlan {
        for i in running.indices { confirmPrefix(i) }
        var budget = max(1, executor.model.maxBatchTokens)
        var work: [SequenceWork] = []
        for s in running where s.cached >= s.request.promptTokens.count && budget > 0 {
            work.append(SequenceWork(slot: UInt32(s.slot), requestId: s.request.id, tokenIds: [s.tokens[s.cached]],
                                     startPosition: UInt32(s.cached), isPrefillChunk: false, wantLogits: true,
                                     sampling: s.request.sampling, stepIndexInSequence: UInt64(s.generated.count),
                                     logprobs: s.request.logprobs))
            budget -= 1
        }
        for s in running where s.cached < s.request.promptTokens.count && budget > 0 {
            let remaining = s.request.promptTokens.count - s.cached
            let n = min(remaining, budget)
            let first = s.cached == s.reused  // the first chunk: it carries the grammar and the reused prefix
            work.append(SequenceWork(slot: UInt32(s.slot), requestId: s.request.id,
                                     tokenIds: Array(s.tokens[s.cached..<(s.cached + n)]),
                                     startPosition: UInt32(s.cached), isPrefillChunk: true, wantLogits: n == remaining,
                                     sampling: s.request.sampling, stepIndexInSequence: UInt64(s.generated.count),
                                     logprobs: n == remaining ? s.request.logprobs : nil,
                                     grammar: first ? s.request.grammar : [],
                                     grammarMaxTokens: first && !s.request.grammar.isEmpty
                                        ? UInt32(clamping: s.request.grammarBudget(maxContext: executor.model.maxContext)) : 0,
                                     prefixSourceSlot: first && s.reused > 0 ? UInt32(s.prefixSource) : 0,
                                     prefixLength: first ? UInt32(s.reused) : 0))
            budget -= n
        }
        let plan = StepPlan(stepId: nextStepId, work: work, freeSlots: pendingFrees.map { UInt32($0) })
        nextStepId += 1
        return plan
    }
}

/// Collects one request's events (engine thread writes, the caller reads after the loop).
final class ResultCollector: @unchecked Sendable {
    var result: GenerationResult?
    var failure: String?
}

extension BatchScheduler {
    /// A request's events as an async stream (for the HTTP side). Ending the stream early
    /// (the consumer stops iterating, e.g. a client disconnect) cancels the request, which
    /// frees its slot on every rank. Throws like `submit` when the request is refused. The
    /// ticket allows an explicit `cancel` (e.g. when a stop string matched).
    public func stream(_ request: GenerationRequest) throws -> (ticket: UInt64, events: AsyncStream<SequenceEvent>) {
        let (stream, continuation) = AsyncStream<SequenceEvent>.makeStream(bufferingPolicy: .unbounded)
        let ticket = try submit(request) { event in
            continuation.yield(event)
            switch event {
            case .token, .logprobs, .promptCached: break
            case .finished, .failed: continuation.finish()
            }
        }
        continuation.onTermination = { [weak self] reason in
            if case .cancelled = reason { self?.cancel(ticket) }
        }
        return (ticket, stream)
    }
}
