// Gemma 4 under the real mpirun: `gemma-node logits` and greedy `generate` on the three Gemma 4
// golden fixtures (PLE + KV sharing + partial rotary + double-wide MLP; K = V with per-layer
// KV heads; MoE) at 1, 2 and 4 ranks, against transformers' outputs in expected.json.
import Foundation
import Testing

@Suite(.serialized) struct Gemma4MPITests {
    static let fixtures = ["gemma4_e_style", "gemma4_dense_keqv", "gemma4_moe"]

    @Test(arguments: fixtures, [1, 2, 4])
    func logitsAndGreedyMatchTransformers(fixture: String, ranks: Int) throws {
        let expected = try HFExpected.load(fixture)
        let path = HFExpected.root.appendingPathComponent(fixture).path
        let tokens = expected.prompt_tokens.map(String.init).joined(separator: ",")
        let logits = try GemmaNodeBinary.mpirun(ranks: ranks, ["logits", "-m", path, "--tokens", tokens, "--all", "-t", "1", "--kv-type", "f32"], timeout: 120)
        #expect(!logits.timedOut)
        #expect(logits.status == 0, "\(logits.all)")
        let out = try JSONDecoder().decode(LogitsOutput.self, from: Data(logits.stdout.utf8))
        #expect(out.positions.count == expected.prompt_tokens.count)
        var maxError = 0.0
        for p in out.positions {
            let got = try #require(p.logits)
            #expect(got.count == expected.logits[p.position].count)
            for (a, b) in zip(got, expected.logits[p.position]) { maxError = max(maxError, abs(a - b)) }
        }
        // Same bound as the Gemma 1-3 fixtures (FixtureTests.logitTolerance): f32 weights, the
        // observed error is float rounding (<= 4e-5 in-process), with the f32 KV cache.
        #expect(maxError < 1e-3, "\(fixture) at \(ranks) ranks: max |logit error| \(maxError)")

        let gen = try GemmaNodeBinary.mpirun(ranks: ranks, ["generate", "-m", path, "--tokens", tokens, "-n", "16", "--temp", "0", "--json", "-t", "1"],
                                             timeout: 120)
        #expect(gen.status == 0, "\(gen.all)")
        let g = try JSONDecoder().decode(GenerateOutput.self, from: Data(gen.stdout.utf8))
        #expect(g.tokens == expected.greedy_tokens, "\(fixture) at \(ranks) ranks")
    }

    /// The llama.cpp-layout GGUF conversions (Tests/Fixtures/gguf_gemma4, F32) under mpirun.
    @Test(arguments: fixtures, [2, 4])
    func ggufGreedyMatchesTransformers(fixture: String, ranks: Int) throws {
        let expected = try HFExpected.load(fixture)
        let file = HFExpected.root.deletingLastPathComponent().appendingPathComponent("gguf_gemma4/\(fixture).gguf").path
        let tokens = expected.prompt_tokens.map(String.init).joined(separator: ",")
        let gen = try GemmaNodeBinary.mpirun(ranks: ranks, ["generate", "-m", file, "--tokens", tokens, "-n", "16", "--temp", "0", "--json", "-t", "1"],
                                             timeout: 120)
        #expect(!gen.timedOut)
        #expect(gen.status == 0, "\(gen.all)")
        let g = try JSONDecoder().decode(GenerateOutput.self, from: Data(gen.stdout.utf8))
        #expect(g.tokens == expected.greedy_tokens, "\(fixture).gguf at \(ranks) ranks")
    }
}
