// `gemma-node logits` and `generate` as users run them: the built binary alone and under the
// real mpirun at 1, 2 and 4 ranks on a golden Hugging Face fixture, compared with the
// reference outputs in its expected.json; and a bad token id failing identically on every rank.
import Foundation
import Testing
import GemmaTestSupport

/// The fixture's reference outputs (written by Scripts/gen_hf_fixtures.py from transformers).
struct HFExpected: Decodable {
    let prompt_tokens: [Int]
    let logits: [[Double]]
    let greedy_tokens: [Int]

    static let root = TestPaths.fixture("hf")

    static func load(_ name: String) throws -> HFExpected {
        let data = try Data(contentsOf: root.appendingPathComponent(name).appendingPathComponent("expected.json"))
        return try JSONDecoder().decode(HFExpected.self, from: data)
    }
}

struct LogitsOutput: Decodable {
    struct Top: Decodable { let id: Int; let logit: Double }
    struct Position: Decodable { let position: Int; let logits: [Double]?; let top: [Top]? }
    let tokens: [Int]
    let positions: [Position]
}

struct GenerateOutput: Decodable {
    let prompt_tokens: [Int]
    let tokens: [Int]
    let text: String?
    let finish_reason: String
    let timings: [String: Double]
}

@Suite(.serialized) struct GenerateMPITests {
    static let fixture = "gemma3_pattern"
    var modelPath: String { HFExpected.root.appendingPathComponent(Self.fixture).path }

    /// Runs the binary alone (ranks 0) or under mpirun with `ranks` ranks.
    func run(ranks: Int, _ args: [String]) throws -> ProcessOutput {
        ranks == 0 ? try GemmaNodeBinary.run(args, timeout: 120)
                   : try GemmaNodeBinary.mpirun(ranks: ranks, args, timeout: 120)
    }

    @Test(arguments: [0, 1, 2, 4])
    func logitsMatchTransformers(ranks: Int) throws {
        let expected = try HFExpected.load(Self.fixture)
        let tokens = expected.prompt_tokens.map(String.init).joined(separator: ",")
        let result = try run(ranks: ranks, ["logits", "-m", modelPath, "--tokens", tokens, "--all", "-t", "1", "--kv-type", "f32"])
        #expect(!result.timedOut)
        #expect(result.status == 0, "\(result.all)")
        let out = try JSONDecoder().decode(LogitsOutput.self, from: Data(result.stdout.utf8))
        #expect(out.tokens == expected.prompt_tokens)
        #expect(out.positions.map(\.position) == Array(0..<expected.prompt_tokens.count))
        var maxError = 0.0
        for p in out.positions {
            let got = try #require(p.logits)
            #expect(got.count == expected.logits[p.position].count)
            for (a, b) in zip(got, expected.logits[p.position]) { maxError = max(maxError, abs(a - b)) }
        }
        // f32 weights and KV cache: the tolerance. Observed error is float rounding (~1e-5).
        #expect(maxError < 1e-3, "max |logit error| \(maxError)")

        // Last position only, as top-k pairs.
        let top = try run(ranks: ranks, ["logits", "-m", modelPath, "--tokens", tokens, "--top", "3", "-t", "1", "--kv-type", "f32"])
        #expect(top.status == 0, "\(top.all)")
        let topOut = try JSONDecoder().decode(LogitsOutput.self, from: Data(top.stdout.utf8))
        let last = expected.logits[expected.logits.count - 1]
        let order = last.indices.sorted { last[$0] > last[$1] }
        #expect(topOut.positions.count == 1)
        #expect(topOut.positions.first?.logits == nil)
        #expect(topOut.positions.first?.top?.map(\.id) == Array(order.prefix(3)))
    }

    @Test(arguments: [0, 1, 2, 4])
    func greedyGenerationMatchesTransformers(ranks: Int) throws {
        let expected = try HFExpected.load(Self.fixture)
        let tokens = expected.prompt_tokens.map(String.init).joined(separator: ",")
        let result = try run(ranks: ranks, ["generate", "-m", modelPath, "--tokens", tokens, "-n", "16", "--temp", "0", "--json", "-t", "1"])
        #expect(!result.timedOut)
        #expect(result.status == 0, "\(result.all)")
        // Exactly one JSON object, printed by rank 0 only.
        #expect(result.stdout.occurrences(of: "\"prompt_tokens\"") == 1, "\(result.stdout)")
        let out = try JSONDecoder().decode(GenerateOutput.self, from: Data(result.stdout.utf8))
        #expect(out.prompt_tokens == expected.prompt_tokens)
        #expect(out.tokens == expected.greedy_tokens)
        #expect(out.text == nil)
        #expect((out.timings["decode_tokens"] ?? 0) > 0)
    }

    @Test func sameSeedSameTokensAtOneTwoFourRanks() throws {
        let expected = try HFExpected.load(Self.fixture)
        let tokens = expected.prompt_tokens.map(String.init).joined(separator: ",")
        var outputs: [[Int]] = []
        for ranks in [1, 2, 4] {
            let result = try run(ranks: ranks, ["generate", "-m", modelPath, "--tokens", tokens, "-n", "12", "--temp", "1.5",
                                                "--top-k", "0", "--top-p", "0.98", "--seed", "1234", "--json", "-t", "1"])
            #expect(result.status == 0, "\(result.all)")
            outputs.append(try JSONDecoder().decode(GenerateOutput.self, from: Data(result.stdout.utf8)).tokens)
        }
        #expect(outputs[0].count == 12)
        #expect(outputs[1] == outputs[0] && outputs[2] == outputs[0], "\(outputs)")
        // Hot sampling must actually differ from greedy somewhere (the seed is used).
        #expect(outputs[0] != Array(expected.greedy_tokens.prefix(12)))
    }

    @Test func textPromptWithoutTokenizerFailsClearlyOnEveryRank() throws {
        // The HF fixtures ship no tokenizer files: -p must say so (on both ranks), not hang.
        let result = try run(ranks: 2, ["generate", "-m", modelPath, "-p", "Hello", "-n", "2", "-t", "1"])
        #expect(!result.timedOut)
        #expect(result.status != 0)
        #expect(result.stderr.occurrences(of: "text prompts need a tokenizer") == 2, "\(result.all)")
        #expect(result.stderr.contains("pass token ids with --tokens"))
    }

    /// `--sync-type` reaches the all-reduces of every rank: at 2 and 4 ranks bf16 and q8_0
    /// change the logits (so the compact payload is really used; its accuracy is measured on
    /// the real model by Scripts/sync_accuracy.py, docs/SCALING.md), yet stay finite and in
    /// the same range; at one rank nothing is sent, so the logits equal f32's bit for bit.
    /// This random-weight fixture amplifies perturbations (measured max |logit error| against
    /// transformers: f32 4e-5, bf16 0.58, q8_0 1.39, logits up to 12.1), so closeness is only
    /// bounded loosely here: under 3 (a quarter of the largest logit).
    @Test(arguments: [1, 2, 4])
    func syncTypeReachesEveryRank(ranks: Int) throws {
        let expected = try HFExpected.load(Self.fixture)
        let tokens = expected.prompt_tokens.map(String.init).joined(separator: ",")
        func logits(_ sync: String) throws -> [[Double]] {
            let result = try run(ranks: ranks, ["logits", "-m", modelPath, "--tokens", tokens, "--all", "-t", "1", "--sync-type", sync])
            #expect(result.status == 0, "\(result.all)")
            return try JSONDecoder().decode(LogitsOutput.self, from: Data(result.stdout.utf8)).positions.map { try #require($0.logits) }
        }
        let exact = try logits("f32")
        for sync in ["bf16", "q8_0"] {
            let got = try logits(sync)
            #expect(got.count == exact.count)
            let diff = zip(got, exact).flatMap { zip($0, $1).map { abs($0 - $1) } }.max() ?? .infinity
            if ranks == 1 {
                #expect(got == exact, "\(sync) at one rank must not round anything")
            } else {
                #expect(diff > 0, "\(sync) at \(ranks) ranks gave f32's logits: the payload was not used")
                #expect(diff < 3, "\(sync) at \(ranks) ranks: max |logit difference| \(diff)")
            }
        }
    }

    /// `--overlap on` under Open MPI (MPI_Iallreduce, two outstanding per layer): a 40-token
    /// prefill (halves of 20 rows) gives the logits of `--overlap off` at every position, bit
    /// for bit: each row is computed alone either way, and at 2 ranks a sum is a + b whatever
    /// the message size. At 4 ranks Open MPI may choose another reduction order for the
    /// half-size messages, so there the bound is 1e-4 (float rounding of logits up to ~12).
    @Test(arguments: [2, 4])
    func overlapGivesTheSameLogits(ranks: Int) throws {
        let expected = try HFExpected.load(Self.fixture)
        let prompt = Array(repeating: expected.prompt_tokens, count: 40 / expected.prompt_tokens.count + 1).flatMap { $0 }.prefix(40)
        let tokens = prompt.map(String.init).joined(separator: ",")
        func logits(_ overlap: String) throws -> [[Double]] {
            let result = try run(ranks: ranks, ["logits", "-m", modelPath, "--tokens", tokens, "--all", "-t", "1", "--overlap", overlap])
            #expect(result.status == 0, "\(result.all)")
            return try JSONDecoder().decode(LogitsOutput.self, from: Data(result.stdout.utf8)).positions.map { try #require($0.logits) }
        }
        let whole = try logits("off"), halves = try logits("on")
        #expect(whole.count == 40 && halves.count == 40)
        let diff = zip(halves, whole).flatMap { zip($0, $1).map { abs($0 - $1) } }.max() ?? .infinity
        if ranks == 2 {
            #expect(diff == 0, "max |logit difference| \(diff)")
        } else {
            #expect(diff < 1e-4, "max |logit difference| \(diff)")
        }
    }

    @Test func mismatchedSyncTypeFailsOnEveryRank() throws {
        let expected = try HFExpected.load(Self.fixture)
        let tokens = expected.prompt_tokens.map(String.init).joined(separator: ",")
        let args = ["generate", "-m", modelPath, "--tokens", tokens, "-n", "2", "-t", "1", "--sync-type"]
        let result = try GemmaNodeBinary.mpirun(perRank: [args + ["bf16"], args + ["q8_0"]], timeout: 120)
        #expect(!result.timedOut)
        #expect(result.status != 0)
        #expect(result.stderr.occurrences(of: "--sync-type is q8_0 on rank 1 but bf16 on rank 0") == 2, "\(result.all)")
    }

    @Test(arguments: [0, 2, 4])
    func tokenOutsideVocabularyFailsOnEveryRank(ranks: Int) throws {
        for command in ["generate", "logits"] {
            let result = try run(ranks: ranks, [command, "-m", modelPath, "--tokens", "2,999,5", "-t", "1"])
            #expect(!result.timedOut, "\(command) hung")
            #expect(result.status != 0)
            let message = "gemma-node: error: rank 0: token id 999 is outside the vocabulary (0..<256)"
            #expect(result.stderr.occurrences(of: message) == max(ranks, 1), "\(command): \(result.all)")
            #expect(result.stdout.isEmpty, "\(result.stdout)")
        }
    }
}
