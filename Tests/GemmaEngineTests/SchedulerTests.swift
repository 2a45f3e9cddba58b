// Continuous batching: requests submitted from another thread while the engine loop runs on
// rank 0 (in-process ranks). Tokens arrive one by one, a request joining mid-flight does not
// change anyone's tokens, cancelled sequences free their slot on every rank (the toy model
// throws on a reused slot that was not released), the queue bound and bad settings are refused
// before anything is broadcast, and shutdown ends every rank's loop.
import Foundation
import Testing
@testable import GemmaEngine
import GemmaModel
import GemmaParallel
import GemmaWire

/// One request's events, waited for from the client thread.
final class Waiter: @unchecked Sendable {
    private let lock = NSLock()
    private let done = DispatchSemaphore(value: 0)
    private var tokensSeen: [Int32] = []
    private var final: GenerationResult?
    private var error: String?

    var sink: BatchScheduler.Sink {
        { [self] event in
            lock.lock()
            switch event {
            case let .token(t): tokensSeen.append(t)
            case .logprobs, .promptCached: break
            case let .finished(r): final = r
            case let .failed(m): error = m
            }
            let ended = final != nil || error != nil
            lock.unlock()
            if ended { done.signal() }
        }
    }

    var streamed: [Int32] { lock.lock(); defer { lock.unlock() }; return tokensSeen }

    /// Waits for the end (at most `seconds`); nil on timeout or failure.
    func wait(_ seconds: Double = 60) -> GenerationResult? {
        guard done.wait(timeout: .now() + seconds) == .success else { return nil }
        lock.lock(); defer { lock.unlock() }
        return final
    }

    /// Spins (sleeping) until at least `n` tokens have streamed.
    func waitForTokens(_ n: Int, seconds: Double = 60) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if streamed.count >= n { return true }
            usleep(1000)
        }
        return false
    }
}

/// Runs `client` on its own thread against a scheduler whose loop runs on rank 0's thread;
/// the client's return ends the loop (shutdown plan to every rank). Returns the client's value.
func withScheduler<T: Sendable>(ranks: Int, maxQueued: Int = 8, model: @escaping @Sendable (any Communicator) throws -> any ShardedCausalLM,
                                client: @escaping @Sendable (BatchScheduler) throws -> T) throws -> T {
    let out = try LocalCommunicator.run(ranks: ranks) { comm -> T? in
        let executor = StepExecutor(model: try model(comm), comm: comm)
        guard comm.isCoordinator else {
            try executor.runWorker()
            return nil
        }
        let scheduler = try BatchScheduler(executor: executor, maxQueued: maxQueued)
        let box = ResultBox<T>()
        let thread = Thread {
            do { box.value = .success(try client(scheduler)) } catch { box.value = .failure(error) }
            scheduler.requestShutdown(reason: "test done")
        }
        thread.start()
        try scheduler.run()
        box.finished.wait()
        return try box.value?.get()
    }
    guard let value = out[0] else { throw EngineError.notCoordinator("test") }
    return value
}

final class ResultBox<T>: @unchecked Sendable {
    var value: Result<T, Error>? { didSet { finished.signal() } }
    let finished = DispatchSemaphore(value: 0)
}

struct SchedulerFailure: Error, CustomStringConvertible {
    let description: String
}

@Suite struct SchedulerTests {
    let sampled = SamplingParams(temperature: 0.9, topK: 20, topP: 0.9, minP: 0.02, seed: 77)

    /// Requests join while others decode; each one's tokens equal the single-process reference,
    /// and the streamed tokens equal the final result.
    @Test(arguments: [1, 2])
    func lateJoinersMatchTheReference(ranks: Int) throws {
        let prompts: [[Int32]] = [[1, 2, 3], Array(1...19).map(Int32.init), [50], [7, 7]]
        let settings: [SamplingParams] = [.greedy, sampled, .greedy, sampled]
        let results = try withScheduler(ranks: ranks, model: { comm in
            ToyModel(rank: comm.rank, ranks: comm.size, slots: 3, maxBatchTokens: 8)
        }) { scheduler -> [[Int32]] in
            var waiters: [Waiter] = []
            for (i, p) in prompts.enumerated() {
                let w = Waiter()
                try scheduler.submit(GenerationRequest(id: UInt64(i), promptTokens: p, maxNewTokens: 20, sampling: settings[i]),
                                     sink: w.sink)
                waiters.append(w)
                // The next request arrives while this one is decoding.
                guard w.waitForTokens(2) else { throw SchedulerFailure(description: "request \(i) made no progress") }
            }
            return try waiters.map { w in
                guard let r = w.wait() else { throw SchedulerFailure(description: "request timed out") }
                #expect(r.tokens == w.streamed)
                #expect(r.finishReason == .length)
                return r.tokens
            }
        }
        for i in prompts.indices {
            #expect(results[i] == ToyModel.referenceGenerate(prompt: prompts[i], n: 20, settings: settings[i], vocab: 96, sampleable: 96),
                    "request \(i)")
        }
    }

    /// A cancelled sequence's slot is released on every rank before it is reused: the toy
    /// model throws if a reused slot still holds the old history.
    @Test(arguments: [1, 2])
    func cancelFreesTheSlotEverywhere(ranks: Int) throws {
        let outcome = try withScheduler(ranks: ranks, model: { comm in
            ToyModel(rank: comm.rank, ranks: comm.size, maxContext: 200, slots: 1, maxBatchTokens: 8)
        }) { scheduler -> ([Int32], FinishReason?, [Int32], Int) in
            let long = Waiter()
            let ticket = try scheduler.submit(GenerationRequest(id: 1, promptTokens: [4, 5], maxNewTokens: 150, sampling: .greedy),
                                              sink: long.sink)
            let next = Waiter()
            // Waits in the queue: the only slot is taken.
            try scheduler.submit(GenerationRequest(id: 2, promptTokens: [9, 8, 7], maxNewTokens: 6, sampling: .greedy), sink: next.sink)
            guard long.waitForTokens(3) else { throw SchedulerFailure(description: "no progress") }
            #expect(scheduler.load.waiting == 1)
            scheduler.cancel(ticket)
            let first = long.wait()
            guard let second = next.wait() else { throw SchedulerFailure(description: "queued request never ran") }
            // The count is updated right after the step that delivered the last token.
            var running = scheduler.load.running
            for _ in 0..<1000 where running != 0 {
                usleep(1000)
                running = scheduler.load.running
            }
            return (first?.tokens ?? [], first?.finishReason, second.tokens, running)
        }
        #expect(outcome.1 == .cancelled)
        #expect(outcome.0.count < 150)
        #expect(outcome.2 == ToyModel.referenceGenerate(prompt: [9, 8, 7], n: 6, settings: .greedy, vocab: 96, sampleable: 96))
        #expect(outcome.3 == 0)
    }

    /// Refusals happen in `submit`, before any plan is built.
    @Test func queueBoundAndBadRequestsAreRefused() throws {
        let errors = try withScheduler(ranks: 2, maxQueued: 1, model: { comm in
            ToyModel(rank: comm.rank, ranks: comm.size, maxContext: 64, slots: 1)
        }) { scheduler -> [String] in
            var out: [String] = []
            func attempt(_ r: GenerationRequest) {
                do { try scheduler.submit(r, sink: Waiter().sink) } catch { out.append("\(error)") }
            }
            let bad = SamplingParams(temperature: 1, topK: 5, topP: 0, minP: 0, seed: 1)
            attempt(GenerationRequest(id: 0, promptTokens: [1], maxNewTokens: 3, sampling: bad))
            attempt(GenerationRequest(id: 0, promptTokens: [], maxNewTokens: 3, sampling: .greedy))
            attempt(GenerationRequest(id: 0, promptTokens: [1, 96], maxNewTokens: 3, sampling: .greedy))
            attempt(GenerationRequest(id: 0, promptTokens: Array(repeating: 1, count: 65), maxNewTokens: 3, sampling: .greedy))
            // The loop admits at most one into the single slot; then the queue (1) fills up.
            let waiters = (0..<6).map { _ in Waiter() }
            for (i, w) in waiters.enumerated() {
                do {
                    try scheduler.submit(GenerationRequest(id: UInt64(i), promptTokens: [3], maxNewTokens: 60, sampling: .greedy),
                                         sink: w.sink)
                } catch { out.append("\(error)") }
            }
            return out
        }
        #expect(errors.count >= 4 + 4)  // 4 invalid; of 6 quick submits at most 2 fit (slot + queue)
        #expect(errors[0] == "top_p 0.0 is outside (0, 1]")
        #expect(errors[1] == "no token ids")
        #expect(errors[2] == "token id 96 is outside the vocabulary (0..<96)")
        #expect(errors[3] == "the prompt of request 0 needs 65 positions, more than the context of 64")
        #expect(errors.dropFirst(4).allSatisfy { $0.hasPrefix("server busy:") })
    }

    /// Greedy on a real checkpoint: four requests joining at different times each give the
    /// tokens transformers gives alone (expected.json), at 1 and 2 ranks.
    @Test(arguments: [1, 2])
    func fixtureGreedyAloneEqualsBatched(ranks: Int) throws {
        let expected = try FixtureExpected.load("gemma3_pattern")
        let directory = FixtureExpected.root.appendingPathComponent("gemma3_pattern")
        let alone = try runFixture("gemma3_pattern", ranks: ranks,
                                   [GenerationRequest(id: 0, promptTokens: [2, 40, 41, 42], maxNewTokens: 12, sampling: .greedy)])[0].tokens
        let results = try withScheduler(ranks: ranks, model: { comm in
            try GemmaShard.load(directory: directory, comm: comm, options: GemmaLoadOptions(slots: 3, maxBatchTokens: 8))
        }) { scheduler -> [[Int32]] in
            var waiters: [Waiter] = []
            for i in 0..<4 {
                let w = Waiter()
                let prompt = i % 2 == 0 ? expected.prompt_tokens : [2, 40, 41, 42]
                try scheduler.submit(GenerationRequest(id: UInt64(i), promptTokens: prompt, maxNewTokens: 12, sampling: .greedy),
                                     sink: w.sink)
                waiters.append(w)
                _ = w.waitForTokens(i)
            }
            return waiters.map { $0.wait()?.tokens ?? [] }
        }
        #expect(results[0] == Array(expected.greedy_tokens.prefix(12)))
        #expect(results[2] == Array(expected.greedy_tokens.prefix(12)))
        #expect(results[1] == alone)
        #expect(results[3] == alone)
    }
}
