// GGUF models and quantize-on-load through the real binary under mpirun, with the reference
// (Swift twin) kernels forced by GEMMA_NODE_KERNELS=reference so the comparison with
// transformers is exact to float rounding: the SIMD kernels quantize activations to int8, which
// this tiny random model amplifies to whole logit units (see GemmaModelTests/GGUFModelTests).
import Foundation
import Testing
import GemmaTestSupport

struct GGUFModelReference: Decodable {
    let prompt_tokens: [Int]
    let logits: [[Double]]
    let greedy_tokens: [Int]?
    let file: String?

    static let root = TestPaths.fixture("gguf_models")

    static func load(_ name: String) throws -> GGUFModelReference {
        let data = try Data(contentsOf: root.appendingPathComponent("expected.json"))
        let all = try JSONDecoder().decode([String: GGUFModelReference].self, from: data)
        return try #require(all[name])
    }
}

@Suite(.serialized) struct GGUFModelMPITests {
    func maxError(_ stdout: String, _ expected: [[Double]]) throws -> Double {
        let out = try JSONDecoder().decode(LogitsOutput.self, from: Data(stdout.utf8))
        #expect(out.positions.count == expected.count)
        var m = 0.0
        for p in out.positions {
            let got = try #require(p.logits)
            #expect(got.count == expected[p.position].count)
            for (a, b) in zip(got, expected[p.position]) { m = max(m, abs(a - b)) }
        }
        return m
    }

    /// Q8_0 GGUF (gemma3 layout: +1 norms, default local RoPE base, 5:1 pattern): logits within
    /// 1e-3 of transformers on the dequantized weights (the f32 KV cache: 1e-3 is an f32 bound;
    /// FixtureTests.f16CacheMatchesTransformers checks the default f16 cache), greedy tokens identical.
    @Test(arguments: [1, 2])
    func q8GGUFMatchesTransformersWithReferenceKernels(ranks: Int) throws {
        let ref = try GGUFModelReference.load("gemma3_pattern_q8")
        let path = GGUFModelReference.root.appendingPathComponent(try #require(ref.file)).path
        let tokens = ref.prompt_tokens.map(String.init).joined(separator: ",")
        let env = ["GEMMA_NODE_KERNELS": "reference"]
        let r = try GemmaNodeBinary.mpirun(ranks: ranks, ["logits", "-m", path, "--tokens", tokens, "--all", "-t", "1", "--kv-type", "f32"], environment: env, timeout: 120)
        #expect(r.status == 0, "\(r.all)")
        let err = try maxError(r.stdout, ref.logits)
        print("gguf q8 reference kernels, \(ranks) ranks: max |logit error| \(err)")
        #expect(err < 1e-3, "max |logit error| \(err)")
        let g = try GemmaNodeBinary.mpirun(ranks: ranks, ["generate", "-m", path, "--tokens", tokens, "-n", "16", "--temp", "0", "--json", "-t", "1"],
                                           environment: env, timeout: 120)
        #expect(g.status == 0, "\(g.all)")
        let out = try JSONDecoder().decode(GenerateOutput.self, from: Data(g.stdout.utf8))
        #expect(out.tokens == ref.greedy_tokens)
    }

    /// `--quant q8_0` on the f32 safetensors fixture equals transformers on the weights
    /// round-tripped through gguf's Q8_0 quantizer.
    @Test(arguments: [1, 2])
    func quantizeOnLoadMatchesTransformers(ranks: Int) throws {
        let ref = try GGUFModelReference.load("gemma3_pattern_quant_q8_0")
        let path = HFExpected.root.appendingPathComponent("gemma3_pattern").path
        let tokens = ref.prompt_tokens.map(String.init).joined(separator: ",")
        let r = try GemmaNodeBinary.mpirun(ranks: ranks, ["logits", "-m", path, "--quant", "q8_0", "--tokens", tokens, "--all", "-t", "1", "--kv-type", "f32"],
                                           environment: ["GEMMA_NODE_KERNELS": "reference"], timeout: 120)
        #expect(r.status == 0, "\(r.all)")
        let err = try maxError(r.stdout, ref.logits)
        print("--quant q8_0 reference kernels, \(ranks) ranks: max |logit error| \(err)")
        #expect(err < 1e-3, "max |logit error| \(err)")
    }

    /// A truncated GGUF: the same error naming the file on every rank, exit non-zero, no hang.
    @Test func truncatedModelFailsTheSameOnEveryRank() throws {
        let src = GGUFModelReference.root.appendingPathComponent("gemma2_softcap.gguf")
        let bytes = try Data(contentsOf: src)
        let cut = FileManager.default.temporaryDirectory.appendingPathComponent("gemma-node-truncated-\(getpid()).gguf")
        try bytes.prefix(bytes.count - 1000).write(to: cut)
        defer { try? FileManager.default.removeItem(at: cut) }
        let r = try GemmaNodeBinary.mpirun(ranks: 2, ["generate", "-m", cut.path, "--tokens", "2,3", "-n", "2", "-t", "1"], timeout: 120)
        #expect(!r.timedOut)
        #expect(r.status != 0)
        #expect(r.stderr.occurrences(of: cut.lastPathComponent) >= 2, "\(r.all)")
    }
}
