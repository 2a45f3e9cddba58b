// The default model (Gemma 3 270M Q4_K_M) judged against f32 truth: `gemma-node perplexity
// --kl-base` under the real mpirun on a short real text (Tests/Fixtures/fidelity: the first
// chunk of the Declaration of Independence and transformers' float32 distribution of it on the
// dequantized weights, Scripts/gen_truth_logits.py). The fast kernels must stay as close to
// truth as measured in docs/FIDELITY.md, the exact mode (--activations f32) must equal it. The
// greedy comparison with llama.cpp (RealModelTests) stays as information.
import Foundation
import Testing
import GemmaTestSupport

struct PerplexityOutput: Decodable {
    let positions: Int
    let perplexity: Double
    let base_perplexity: Double
    let kl_mean: Double
    let kl_max: Double
    let top1_agreement: Double
    let top10_abs_logit_diff: Double
}

@Suite(.serialized) struct RealModelFidelityTests {
    static let text = TestPaths.fixture("fidelity/declaration.txt").path

    func perplexity(ranks: Int, base: String, _ extra: [String] = []) throws -> PerplexityOutput {
        let model = try RealModel.require()
        let r = try GemmaNodeBinary.mpirun(ranks: ranks, ["perplexity", "-m", model, "-f", Self.text, "--kl-base",
                                                          TestPaths.fixture("fidelity/\(base)").path, "--json", "-t", "1"] + extra,
                                           timeout: 600)
        try #require(!r.timedOut, "perplexity at \(ranks) ranks timed out")
        try #require(r.status == 0, "perplexity at \(ranks) ranks: \(r.all)")
        return try JSONDecoder().decode(PerplexityOutput.self, from: Data(r.stdout.utf8))
    }

    /// Fast kernels (int8 activations, f16 KV cache) over 127 positions against truth. Measured
    /// on this fixture (docs/FIDELITY.md) since the K-quant inputs are rounded per 32 values:
    /// mean KL 0.0064-0.0075 at 1, 2 and 4 ranks, max KL 0.078-0.085 (native level), top-1 agreement
    /// 96.1-97.6%, perplexity within 2% of truth's (per 256, before: mean KL 0.0136-0.0175, max
    /// 0.17-0.29); llama.cpp on the same model over 1,023 positions of the same text is at mean
    /// KL 0.016. The limits are twice the measured mean KL (summation order and kernel level move
    /// it by tens of percent between machines), 3 more top-1 misses than the worst run, and a 5%
    /// perplexity band; the exact mode below shows the model math itself is at 1e-11.
    /// The max over 127 positions is a tail statistic. At 2 ranks under GEMMA_NODE_KERNELS=avx2,
    /// two equally exact roundings of the AVX2 level's Q5_0 gave per-position KLs that correlate
    /// only 0.45: the kernel before session 15 max 0.089, the pair form since max 0.237 (one
    /// position, 41, which had 0.038 before; position 107 went 0.089 -> 0.026), with mean KL
    /// 0.0081 for both and the pair form's 90th / 95th percentiles lower (0.035 -> 0.017,
    /// 0.038 -> 0.031); the native level gave 0.103 on the same run. Its limit follows the rule
    /// of the others, twice the worst measured: 0.5. A kernel that is wrong rather than
    /// differently rounded moves the mean and the top-1 agreement, which keep tight limits.
    @Test(arguments: [1, 2, 4])
    func fastKernelsAreCloseToTruth(ranks: Int) throws {
        let out = try perplexity(ranks: ranks, base: "truth_c128.gnlogits")
        print("fidelity, fast kernels, \(ranks) rank(s): mean KL \(out.kl_mean), max \(out.kl_max), top-1 \(out.top1_agreement), "
              + "top-10 |logit diff| \(out.top10_abs_logit_diff), perplexity \(out.perplexity) (truth \(out.base_perplexity))")
        #expect(out.positions == 127)
        #expect(out.kl_mean < 0.015)
        #expect(out.kl_max < 0.5)
        #expect(out.top1_agreement >= 0.94)
        #expect(abs(out.perplexity / out.base_perplexity - 1) < 0.05)
    }

    /// The exact mode (--activations f32: f32 activations in every product, f32 KV cache)
    /// against truth over 31 positions (the debug build dequantizes weights in unoptimised
    /// Swift, so this is kept short). The only differences left are f32 summation orders
    /// (transformers' BLAS against our SIMD dots): measured mean KL 6.6e-12, max 5e-11, top-10
    /// logits within 7.4e-6 at 1 and 2 ranks. 1e-6 is the bound.
    @Test(arguments: [1, 2])
    func exactModeEqualsTruth(ranks: Int) throws {
        let out = try perplexity(ranks: ranks, base: "truth_c32.gnlogits", ["--activations", "f32"])
        print("fidelity, --activations f32, \(ranks) rank(s): mean KL \(out.kl_mean), max \(out.kl_max), top-1 \(out.top1_agreement)")
        #expect(out.positions == 31)
        #expect(out.kl_mean < 1e-6)
        #expect(out.kl_max < 1e-5)
        #expect(out.top1_agreement == 1)
        #expect(out.top10_abs_logit_diff < 1e-3)
    }

    /// A base of another text is refused with the same message on every rank.
    @Test func anotherTextIsRefused() throws {
        let model = try RealModel.require()
        let other = FileManager.default.temporaryDirectory.appendingPathComponent("fidelity-other-\(getpid()).txt")
        try String(repeating: "Some other text entirely, not the declaration. ", count: 40).write(to: other, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: other) }
        let r = try GemmaNodeBinary.mpirun(ranks: 2, ["perplexity", "-m", model, "-f", other.path, "--kl-base",
                                                      TestPaths.fixture("fidelity/truth_c32.gnlogits").path, "-t", "1"], timeout: 120)
        #expect(r.status != 0)
        #expect(r.stderr.contains("differ from those in"), "\(r.all)")
    }
}
