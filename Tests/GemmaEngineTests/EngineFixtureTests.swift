// The engine on real tiny Gemma checkpoints (Tests/Fixtures/hf, saved by transformers) at 1, 2
// and 4 in-process ranks: greedy tokens equal transformers', batching two sequences does not
// change either, and the same seed gives the same sampled tokens at every rank count.
import Foundation
import Testing
@testable import GemmaEngine
import GemmaModel
import GemmaParallel
import GemmaTestSupport
import GemmaWire

struct FixtureExpected: Decodable {
    let prompt_tokens: [Int32]
    let greedy_tokens: [Int32]

    static let root = TestPaths.fixture("hf")

    static func load(_ name: String) throws -> FixtureExpected {
        let data = try Data(contentsOf: root.appendingPathComponent(name).appendingPathComponent("expected.json"))
        return try JSONDecoder().decode(FixtureExpected.self, from: data)
    }
}

/// Loads `fixture` on `ranks` in-process ranks and generates `requests` (one KV slot each).
func runFixture(_ fixture: String, ranks: Int, _ requests: [GenerationRequest],
                maxBatchTokens: Int = 64) throws -> [GenerationResult] {
    let directory = FixtureExpected.root.appendingPathComponent(fixture)
    let out = try LocalCommunicator.run(ranks: ranks) { comm -> [GenerationResult]? in
        let model = try GemmaShard.load(directory: directory, comm: comm,
                                        options: GemmaLoadOptions(slots: max(1, requests.count), maxBatchTokens: maxBatchTokens))
        return try runGeneration(requests, model: model, comm: comm)?.results
    }
    guard let results = out[0] else { throw EngineError.notCoordinator("test") }
    return results
}

@Suite struct EngineFixtureTests {
    static let fixtures = ["gemma1_mqa", "gemma2_softcap", "gemma3_pattern"]

    @Test(arguments: fixtures, [1, 2, 4])
    func greedyTokensMatchTransformers(fixture: String, ranks: Int) throws {
        let expected = try FixtureExpected.load(fixture)
        let request = GenerationRequest(id: 0, promptTokens: expected.prompt_tokens, maxNewTokens: expected.greedy_tokens.count,
                                        sampling: .greedy)
        let result = try runFixture(fixture, ranks: ranks, [request])
        #expect(result[0].tokens == expected.greedy_tokens)
    }

    @Test func promptChunksGiveTheSameTokens() throws {
        // A 5-token budget splits the 16-token prompt over 4 steps.
        let expected = try FixtureExpected.load("gemma3_pattern")
        let request = GenerationRequest(id: 0, promptTokens: expected.prompt_tokens, maxNewTokens: 16, sampling: .greedy)
        #expect(try runFixture("gemma3_pattern", ranks: 2, [request], maxBatchTokens: 5)[0].tokens == expected.greedy_tokens)
    }

    @Test func twoSequencesBatchedEqualEachAlone() throws {
        let expected = try FixtureExpected.load("gemma2_softcap")
        let a = GenerationRequest(id: 1, promptTokens: expected.prompt_tokens, maxNewTokens: 16, sampling: .greedy)
        let b = GenerationRequest(id: 2, promptTokens: [2, 77, 13, 200, 5], maxNewTokens: 10,
                                  sampling: SamplingParams(temperature: 1.2, topK: 0, topP: 0.95, minP: 0, seed: 3))
        let together = try runFixture("gemma2_softcap", ranks: 2, [a, b])
        #expect(together[0].tokens == expected.greedy_tokens)
        #expect(together[0].tokens == (try runFixture("gemma2_softcap", ranks: 2, [a]))[0].tokens)
        #expect(together[1].tokens == (try runFixture("gemma2_softcap", ranks: 2, [b]))[0].tokens)
        #expect(together[1].tokens.count == 10)
    }

    @Test func sameSeedSameSampledTokensAtOneTwoFourRanks() throws {
        let expected = try FixtureExpected.load("gemma3_pattern")
        let settings: [SamplingParams] = [
            SamplingParams(temperature: 1.5, topK: 0, topP: 1, minP: 0, seed: 11),
            SamplingParams(temperature: 1.2, topK: 20, topP: 0.9, minP: 0.05, seed: 12),
            SamplingParams(temperature: 2, topK: 0, topP: 0.95, minP: 0, seed: 13),
        ]
        let requests = settings.enumerated().map {
            GenerationRequest(id: UInt64($0.offset), promptTokens: expected.prompt_tokens, maxNewTokens: 12, sampling: $0.element)
        }
        let one = try runFixture("gemma3_pattern", ranks: 1, requests).map(\.tokens)
        #expect(try runFixture("gemma3_pattern", ranks: 2, requests).map(\.tokens) == one)
        #expect(try runFixture("gemma3_pattern", ranks: 4, requests).map(\.tokens) == one)
        // Hot sampling leaves the greedy path (the seeds are really used).
        #expect(one.contains { $0 != Array(expected.greedy_tokens.prefix(12)) })
    }

    @Test(arguments: [1, 2, 4])
    func badTokenFailsTheSameOnEveryRank(ranks: Int) throws {
        let directory = FixtureExpected.root.appendingPathComponent("gemma1_mqa")
        let messages = try LocalCommunicator.run(ranks: ranks) { comm -> String in
            let model = try GemmaShard.load(directory: directory, comm: comm, options: GemmaLoadOptions())
            do {
                _ = try runGeneration([GenerationRequest(id: 0, promptTokens: [2, 300], maxNewTokens: 2, sampling: .greedy)],
                                      model: model, comm: comm)
                return "no error"
            } catch { return "\(error)" }
        }
        #expect(messages == Array(repeating: "rank 0: token id 300 is outside the vocabulary (0..<256)", count: ranks))
    }

    /// Logprobs of a real (tiny) Gemma 3 at 1 and 2 ranks, greedy and sampled, batched: each
    /// generated token's value and the top-5 equal a log-softmax of the full logits that
    /// `gatherFullLogits` collects for the same tokens at the same rank count.
    @Test(arguments: [1, 2])
    func logprobsEqualLogSoftmaxOfFullLogits(ranks: Int) throws {
        let expected = try FixtureExpected.load("gemma3_pattern")
        let prompt = expected.prompt_tokens
        let requests = [
            GenerationRequest(id: 0, promptTokens: prompt, maxNewTokens: 6, sampling: .greedy, logprobs: 5),
            GenerationRequest(id: 1, promptTokens: Array(prompt.prefix(9)), maxNewTokens: 6,
                              sampling: SamplingParams(temperature: 1.3, topK: 0, topP: 0.9, minP: 0, seed: 11), logprobs: 5),
        ]
        let results = try runFixture("gemma3_pattern", ranks: ranks, requests)
        let directory = FixtureExpected.root.appendingPathComponent("gemma3_pattern")
        let sequences = zip(requests, results).map { $0.promptTokens + $1.tokens.dropLast() }
        let full = try LocalCommunicator.run(ranks: ranks) { comm -> [[PositionLogits]]? in
            let model = try GemmaShard.load(directory: directory, comm: comm, options: GemmaLoadOptions(slots: 1, maxBatchTokens: 64))
            // Every rank joins every gather; only rank 0 gets the logits.
            var out: [[PositionLogits]] = []
            for tokens in sequences {
                if let logits = try gatherFullLogits(model: model, comm: comm, tokens: tokens, allPositions: true) { out.append(logits) }
            }
            return comm.isCoordinator ? out : nil
        }[0]!
        var worst = 0.0
        for (k, (request, result)) in zip(requests, results).enumerated() {
            #expect(result.logprobs.count == result.tokens.count)
            for (j, lp) in result.logprobs.enumerated() {
                let ref = referenceLogSoftmax(full[k][request.promptTokens.count - 1 + j].logits, sampleable: 256)
                #expect(lp.chosen.id == result.tokens[j])
                worst = max(worst, abs(lp.chosen.logprob - ref[Int(lp.chosen.id)]))
                for a in lp.top { worst = max(worst, abs(a.logprob - ref[Int(a.id)])) }
                let best = ref.indices.max { ref[$0] < ref[$1] || (ref[$0] == ref[$1] && $0 > $1) }!
                #expect(lp.top.first?.id == Int32(best))
                if request.sampling.isGreedy { #expect(lp.chosen.id == Int32(best) && lp.chosen.logprob == lp.top[0].logprob) }
            }
        }
        // Tolerance 1e-9: the generation computed the prompt as a prefill and each later token
        // as a one-token decode step, `gatherFullLogits` the whole sequence as one prefill;
        // the kernels are batch-invariant (docs/KERNELS.md), so the f32 logits are the same
        // and only the Double normaliser's summation order differs (measured: 1.8e-15 at 1
        // and 2 ranks).
        #expect(worst < 1e-9, "largest difference \(worst)")
        print("logprobs vs full-logits log-softmax at \(ranks) rank(s): largest difference \(worst)")
    }
}
