// The default model (Gemma 3 270M Q4_K_M GGUF) end to end beside llama.cpp: the built binary
// under the real mpirun at 1, 2 and 4 ranks, text prompts in, greedy tokens out, next to
// Tests/Fixtures/llamacpp/greedy_reference.json (Scripts/gen_llamacpp_reference.py,
// llama-cpp-python 0.3.36). What is asserted is what must be equal: our tokenizer and chat
// template give llama.cpp's prompt ids exactly, and every run completes. How close our logits
// and greedy tokens come to llama.cpp's is printed, not asserted: both engines round their
// activations to int8, so that distance is two draws of rounding noise, not correctness. The
// judge of correctness on this model is f32 truth (RealModelFidelityTests, docs/FIDELITY.md).
// The model is required: setup.sh installs it, and a missing file fails these tests with that
// instruction instead of skipping them.
import Foundation
import Testing
import GemmaTestSupport

/// llama.cpp's greedy run on one prompt.
struct LlamaCppPrompt: Decodable {
    struct Entry: Decodable { let id: Int; let logit: Double }
    struct Step: Decodable { let top3: [Int]; let margin: Double }
    let name: String
    let text: String
    let chat: Bool
    let prompt_tokens: [Int]
    let last_prompt_top: [Entry]
    let tokens: [Int]
    let steps: [Step]
    /// llama.cpp against itself under settings that only change rounding (see the script).
    let variants: [String: Variant]
    struct Variant: Decodable { let max_abs_top5_logit_diff: Double; let top5: [Int]; let greedy_tokens_shared: Int }

    /// llama.cpp's logit for `id` at the last prompt position, if it is in the stored top 20.
    func referenceLogit(_ id: Int) -> Double? { last_prompt_top.first { $0.id == id }?.logit }
}

struct LlamaCppReference: Decodable {
    let prompts: [LlamaCppPrompt]

    static let url = TestPaths.fixture("llamacpp/greedy_reference.json")

    static func load() throws -> LlamaCppReference {
        try JSONDecoder().decode(LlamaCppReference.self, from: Data(contentsOf: url))
    }
}

/// The default model (same rule as `DefaultModel` in the executable); a missing file fails
/// the test, never skips it.
enum RealModel {
    static var path: String { TestPaths.defaultModel }
    static func require() throws -> String { try TestPaths.requireDefaultModel() }
}

@Suite(.serialized) struct RealModelTests {
    /// Issue 4's rule, reported (not asserted) for every prompt: where the greedy runs first
    /// differ, llama.cpp's top-2 margin is under 0.1 and each side's token is in the other's
    /// top 3; top-5 ids identical and logits within 0.1 at the last prompt position. llama.cpp
    /// itself, under settings that change only rounding (greedy_reference.json "variants"),
    /// moves its top-5 logits by up to 0.99 and leaves its own greedy run within 32 tokens on
    /// 10 of 12 prompts, which is why this is a report.
    static let issueTolerance = 0.1

    struct Outcome {
        var fullMatch = false
        var meetsIssueRule = false
        var line = ""
    }

    func generate(_ p: LlamaCppPrompt, ranks: Int, model: String) throws -> GenerateOutput {
        var args = ["generate", "-m", model, "-p", p.text, "-n", "32", "--temp", "0", "--json", "-t", "1"]
        if p.chat { args.append("--chat") }
        let r = try GemmaNodeBinary.mpirun(ranks: ranks, args, timeout: 300)
        try #require(!r.timedOut, "\(p.name) at \(ranks) ranks timed out")
        try #require(r.status == 0, "\(p.name) at \(ranks) ranks: \(r.all)")
        return try JSONDecoder().decode(GenerateOutput.self, from: Data(r.stdout.utf8))
    }

    /// Our top 20 after the last of `ids` (the `logits` command without `--all`: rank 0
    /// receives only the last position's vocabulary slices, not every position's).
    func lastTop(_ ids: [Int], ranks: Int, model: String) throws -> [LogitsOutput.Top] {
        let r = try GemmaNodeBinary.mpirun(ranks: ranks, ["logits", "-m", model, "--tokens",
                                                          ids.map(String.init).joined(separator: ","),
                                                          "--top", "20", "-t", "1"], timeout: 300)
        try #require(!r.timedOut && r.status == 0, "logits at \(ranks) ranks: \(r.all)")
        let out = try JSONDecoder().decode(LogitsOutput.self, from: Data(r.stdout.utf8))
        try #require(out.positions.count == 1)
        return try #require(out.positions[0].top)
    }

    /// One prompt: our greedy run and our logits against llama.cpp's.
    func check(_ p: LlamaCppPrompt, ranks: Int, model: String) throws -> Outcome {
        var o = Outcome()
        let out = try generate(p, ranks: ranks, model: model)
        // Text -> ids: our tokenizer (and chat template) must give llama.cpp's prompt exactly.
        try #require(out.prompt_tokens == p.prompt_tokens, "\(p.name): prompt ids \(out.prompt_tokens) vs llama.cpp \(p.prompt_tokens)")
        let ours = out.tokens
        // First step where the runs part: a different id, or our run ended early (a stop
        // token: llama.cpp's reference does not stop, so its id there is compared too).
        var k = 0
        while k < ours.count && k < p.tokens.count && ours[k] == p.tokens[k] { k += 1 }
        if k == ours.count && k < p.tokens.count {
            #expect(out.finish_reason == "stop", "\(p.name): \(ours.count) tokens, finish \(out.finish_reason)")
        }
        // Our logits at the last prompt position (and below, at step k), for the report.
        let last = try lastTop(p.prompt_tokens, ranks: ranks, model: model)
        let ref5 = Array(p.last_prompt_top.prefix(5))
        var worst = 0.0
        for e in ref5 {
            if let mine = last.first(where: { $0.id == e.id })?.logit { worst = max(worst, abs(mine - e.logit)) }
        }
        let top5Same = last.prefix(5).map(\.id) == ref5.map(\.id)
        let logitsIssueOK = top5Same && worst < Self.issueTolerance
        let lastLine = "top-5 \(top5Same ? "identical" : "reordered"), max |logit diff| \(String(format: "%.3f", worst))"

        if k == p.tokens.count {
            o.fullMatch = true
            o.meetsIssueRule = logitsIssueOK
            o.line = "\(p.name): 32/32 identical; \(lastLine)"
            return o
        }
        let step = p.steps[k]
        let prefix = Array(ours.prefix(min(k, p.tokens.count - 1)))
        let atK = prefix.isEmpty ? last : try lastTop(p.prompt_tokens + prefix, ranks: ranks, model: model)
        let ourTop3 = atK.prefix(3).map(\.id)
        // Our id at k: the one generate sampled, or (if it stopped) its stop token, which is
        // not reported: the top of our logits there.
        let ourToken = k < ours.count ? ours[k] : ourTop3[0]
        if ourToken == p.tokens[k] {
            // We stopped on the token llama.cpp also picked: identical as far as both go.
            o.fullMatch = true
            o.meetsIssueRule = logitsIssueOK
            o.line = "\(p.name): identical up to our stop at \(k); \(lastLine)"
            return o
        }
        o.meetsIssueRule = logitsIssueOK && step.margin < Self.issueTolerance && step.top3.contains(ourToken)
            && ourTop3.contains(p.tokens[k])
        let unstable = p.variants.first(where: { $0.value.greedy_tokens_shared <= k }).map {
            "; llama.cpp's own \($0.key) run leaves its reference at step \($0.value.greedy_tokens_shared)"
        } ?? ""
        o.line = "\(p.name): first differs at step \(k) (llama.cpp \(p.tokens[k]), margin \(String(format: "%.3f", step.margin)), "
            + "its top 3 \(step.top3); ours \(ourToken), our top 3 \(ourTop3)); \(lastLine)\(unstable)"
        return o
    }

    @Test(arguments: [1, 2, 4])
    func defaultModelBesideLlamaCpp(ranks: Int) throws {
        let model = try RealModel.require()
        let reference = try LlamaCppReference.load()
        #expect(reference.prompts.count >= 8)
        var outcomes: [Outcome] = []
        for p in reference.prompts { outcomes.append(try check(p, ranks: ranks, model: model)) }
        let selfDrift = reference.prompts.flatMap { $0.variants.values.map(\.max_abs_top5_logit_diff) }.max() ?? 0
        print("real model vs llama.cpp, \(ranks) rank(s): \(outcomes.filter(\.fullMatch).count)/\(outcomes.count) prompts "
              + "with identical greedy tokens; \(outcomes.filter(\.meetsIssueRule).count)/\(outcomes.count) also within issue 4's 0.1 rules; "
              + "llama.cpp's own drift across its settings: \(String(format: "%.3f", selfDrift))\n  "
              + outcomes.map(\.line).joined(separator: "\n  "))
    }
}
