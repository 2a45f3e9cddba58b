// Prefix caching end to end in the engine, on real tiny Gemma checkpoints (sliding windows of
// 4 and 5 positions, so every prompt here is longer than the window) at 1, 2 and 4 in-process
// ranks: a script of requests whose prompts share starts gives the same tokens and
// log-probabilities with the cache as without it, and the reused counts are the ones the
// ring-buffer rule allows (docs/ENGINE.md "Prefix caching"); eviction is least recently used
// and never reuses a reclaimed slot; a plan asking for entries a slot no longer holds fails
// with the same message on every rank.
import Foundation
import GemmaModel
import GemmaParallel
import GemmaWire
import Testing
@testable import GemmaEngine

@Suite struct PrefixCacheTests {
    /// id 0: no bytes; 1...255: that byte (the fixtures' vocabulary is 256 ids).
    static let vocab = VocabularyBytes([[]] + (1...255).map { [UInt8($0)] })

    /// Runs `script` on rank 0 with a scheduler over `fixture` while the other ranks serve plans.
    static func withScheduler<T: Sendable>(_ fixture: String, ranks: Int, slots: Int, batch: Int, prefixCache: Bool,
                                           _ script: @escaping @Sendable (BatchScheduler) throws -> T) throws -> T {
        let directory = FixtureExpected.root.appendingPathComponent(fixture)
        let out = try LocalCommunicator.run(ranks: ranks) { comm -> T? in
            let model = try GemmaShard.load(directory: directory, comm: comm,
                                            options: GemmaLoadOptions(slots: slots, maxBatchTokens: batch))
            let executor = StepExecutor(model: model, comm: comm)
            executor.vocabularyBytes = vocab
            guard comm.isCoordinator else {
                try executor.runWorker()
                return nil
            }
            let scheduler = try BatchScheduler(executor: executor, maxQueued: 16, prefixCache: prefixCache)
            let value: T
            do { value = try script(scheduler) } catch {
                try? scheduler.shutdown(reason: "\(error)", failure: error)
                throw error
            }
            try scheduler.shutdown()
            return value
        }
        return try #require(out[0])
    }

    /// Submits `requests` at once and runs until they finish; `onFirstToken` may submit more.
    static func run(_ s: BatchScheduler, _ requests: [GenerationRequest],
                    onFirstToken: (@Sendable (BatchScheduler) -> Void)? = nil) throws -> [GenerationResult] {
        let boxes = requests.map { _ in ResultCollector() }
        for (i, (r, box)) in zip(requests, boxes).enumerated() {
            let first = i == 0 ? onFirstToken : nil
            let fired = ResultCollector()
            try s.submit(r) { event in
                switch event {
                case .token:
                    if fired.failure == nil { fired.failure = "fired"; first?(s) }
                case .logprobs, .promptCached: break
                case let .finished(result): box.result = result
                case let .failed(message): box.failure = message
                }
            }
        }
        try s.runUntilIdle()
        return try zip(requests, boxes).map { r, box in
            guard let result = box.result else { throw EngineError.badPlan(box.failure ?? "request \(r.id) did not finish") }
            return result
        }
    }

    /// 36 fixed pseudo-random ids in 1...255 shared by the prompts below (the windows are 4-5).
    static let shared: [Int32] = {
        var x: UInt64 = 0x9E3779B97F4A7C15
        return (0..<36).map { _ in
            x = x &* 6364136223846793005 &+ 1442695040888963407
            return Int32(1 + (x >> 33) % 255)
        }
    }()

    /// The script: a conversation continued, a new question on the same start, the same
    /// prompt again with a grammar and then without, a fresh start, and a request arriving
    /// while another with the same start runs (its entries are copied from the running slot).
    static func script(_ s: BatchScheduler) throws -> [GenerationResult] {
        let p = shared
        let g = SamplingParams.greedy
        var out: [GenerationResult] = []
        let r1 = try run(s, [GenerationRequest(id: 1, promptTokens: p + [11, 12, 13, 14], maxNewTokens: 6, sampling: g)])[0]
        out.append(r1)
        // The next turn: the whole first exchange, then 3 more ids (45 = 40 + 5 fed ids reused).
        out += try run(s, [GenerationRequest(id: 2, promptTokens: p + [11, 12, 13, 14] + r1.tokens + [21, 22, 23],
                                             maxNewTokens: 5, sampling: g, logprobs: 2)])
        let q = p + [31, 32, 33, 34, 35]
        out += try run(s, [GenerationRequest(id: 3, promptTokens: q, maxNewTokens: 6,
                                             sampling: SamplingParams(temperature: 1, topK: 0, topP: 1, minP: 0, seed: 7))])
        out += try run(s, [GenerationRequest(id: 4, promptTokens: q, maxNewTokens: 6, sampling: g,
                                             grammar: Array(#"{"type":"object"}"#.utf8))])
        out += try run(s, [GenerationRequest(id: 5, promptTokens: q, maxNewTokens: 6, sampling: g, logprobs: 1)])
        let live = GenerationRequest(id: 7, promptTokens: p + [41, 42, 43, 44], maxNewTokens: 4, sampling: g)
        let pending = ResultCollector()
        out += try run(s, [GenerationRequest(id: 6, promptTokens: p + [41, 42, 43], maxNewTokens: 6, sampling: g)]) { s in
            _ = try? s.submit(live) { event in
                if case let .finished(r) = event { pending.result = r }
            }
        }
        out.append(try #require(pending.result))
        return out
    }

    @Test(arguments: ["gemma3_pattern", "gemma2_softcap", "gemma4_e_style"], [1, 2, 4])
    func sameTokensWithAndWithoutTheCache(fixture: String, ranks: Int) throws {
        // batch 8: the sliding rings (window + 8) wrap, so a retained sequence that ran well
        // past the shared start has lost entries a continuation from there would need; batch
        // 64: no ring wraps within these lengths, so every shared start is reusable.
        for (batch, expected) in [(8, [0, 45, 0, 40, 40, 0, 39]), (64, [0, 45, 36, 40, 40, 36, 39])] {
            let without = try Self.withScheduler(fixture, ranks: ranks, slots: 3, batch: batch, prefixCache: false, Self.script)
            let with = try Self.withScheduler(fixture, ranks: ranks, slots: 3, batch: batch, prefixCache: true, Self.script)
            #expect(without.map(\.cachedTokens) == Array(repeating: 0, count: 7))
            #expect(with.map(\.cachedTokens) == expected, "\(fixture), batch \(batch)")
            #expect(with.map(\.tokens) == without.map(\.tokens), "\(fixture), batch \(batch)")
            // Log-probabilities are computed from the logits: equal bits mean equal logits.
            #expect(with.map(\.logprobs) == without.map(\.logprobs))
            #expect(with.allSatisfy { $0.tokens.count > 0 })
        }
    }

    @Test func sameTokensAtOneTwoAndFourRanksWithTheCache() throws {
        let one = try Self.withScheduler("gemma3_pattern", ranks: 1, slots: 3, batch: 8, prefixCache: true, Self.script)
        for ranks in [2, 4] {
            let other = try Self.withScheduler("gemma3_pattern", ranks: ranks, slots: 3, batch: 8, prefixCache: true, Self.script)
            #expect(other.map(\.tokens) == one.map(\.tokens))
            #expect(other.map(\.cachedTokens) == one.map(\.cachedTokens))
        }
    }

    @Test func leastRecentlyUsedEvictionAndNoReuseAfterReclaim() throws {
        // Two slots, four distinct 20-id starts: each new start reclaims the least recently
        // retained slot; a start whose slot was reclaimed is computed again (0 reused), one
        // still retained is reused (all but the last prompt id).
        var starts: [[Int32]] = []
        for k in 0..<4 {
            var start: [Int32] = []
            for i in 0..<20 { start.append(Int32(1 + (k * 37 + i * 11) % 250)) }
            starts.append(start)
        }
        let fixedStarts = starts
        @Sendable func request(_ id: UInt64, _ start: Int, _ tail: Int32) -> GenerationRequest {
            GenerationRequest(id: id, promptTokens: fixedStarts[start] + [tail], maxNewTokens: 3, sampling: .greedy)
        }
        let script: @Sendable (BatchScheduler) throws -> ([Int], [[Int32]], [Int]) = { s in
            var cached: [Int] = [], tokens: [[Int32]] = [], retained: [Int] = []
            for (id, start, tail) in [(1, 0, 100), (2, 1, 100), (3, 2, 100),  // start 2 reclaims start 0's slot
                                      (4, 1, 101),                            // start 1 reused, refreshed
                                      (5, 3, 100),                            // reclaims start 2's slot, not start 1's
                                      (6, 1, 102), (7, 0, 101), (8, 2, 101)] as [(UInt64, Int, Int32)] {
                let r = try Self.run(s, [request(id, start, tail)])[0]
                cached.append(r.cachedTokens)
                tokens.append(r.tokens)
                retained.append(s.retainedLengths.count)
            }
            return (cached, tokens, retained)
        }
        let with = try Self.withScheduler("gemma3_pattern", ranks: 2, slots: 2, batch: 64, prefixCache: true, script)
        let without = try Self.withScheduler("gemma3_pattern", ranks: 2, slots: 2, batch: 64, prefixCache: false, script)
        #expect(with.0 == [0, 0, 0, 20, 0, 20, 0, 0])
        #expect(with.1 == without.1)
        #expect(with.2.allSatisfy { $0 <= 2 })  // never more retained sequences than slots
        #expect(without.2.allSatisfy { $0 == 0 })
    }

    @Test func aPrefixTheSlotNoLongerHoldsFailsOnEveryRank() throws {
        // Slot 0 runs 40 ids through rings of 5 + 8 = 13 positions; reusing its first 20 would
        // need positions 16...19, long overwritten. Every rank refuses the plan with one text.
        let directory = FixtureExpected.root.appendingPathComponent("gemma3_pattern")
        let out = try LocalCommunicator.run(ranks: 2) { comm -> String in
            let model = try GemmaShard.load(directory: directory, comm: comm, options: GemmaLoadOptions(slots: 2, maxBatchTokens: 8))
            let executor = StepExecutor(model: model, comm: comm)
            do {
                if comm.isCoordinator {
                    let s = try BatchScheduler(executor: executor, prefixCache: true)
                    _ = try Self.run(s, [GenerationRequest(id: 1, promptTokens: Self.shared + [1, 2, 3, 4], maxNewTokens: 1,
                                                           sampling: .greedy)])
                    #expect(model.reusablePrefix(source: 0, upTo: 20) == 0)
                    #expect(model.reusablePrefix(source: 0, upTo: 39) == 39)
                    _ = try executor.execute(sending: StepPlan(stepId: 99, work: [
                        SequenceWork(slot: 1, tokenIds: [5], startPosition: 20, isPrefillChunk: true,
                                     prefixSourceSlot: 0, prefixLength: 20)]))
                } else {
                    try executor.runWorker()
                }
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        #expect(out[0] == out[1])
        #expect(out[0].contains("slot 0 does not hold the first 20 positions intact"), "\(out[0])")
    }
}
