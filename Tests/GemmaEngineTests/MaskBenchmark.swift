// Cost of the structured-output mask at Gemma 3's real vocabulary (the default model's
// tokenizer, 262,144 ids): building one rank's tables and masking one token, for the shard of
// rank 0 at 1, 2 and 4 ranks, over the tokens of a realistic JSON answer. Only runs with
// GEMMA_NODE_BENCH=1 (and the default model present); prints milliseconds.
import Foundation
import GemmaTestSupport
import GemmaTokenizer
import Testing
@testable import GemmaEngine

@Suite struct MaskBenchmark {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["GEMMA_NODE_BENCH"] == "1"))
    func maskCostAtFullVocabulary() throws {
        let tok = try GemmaTokenizer.load(path: try TestPaths.requireDefaultModel())
        let vocab = VocabularyBytes(tokenizer: tok, vocabSize: tok.count)
        let answer = #"{"name": "Ada Lovelace", "age": 36, "tags": ["cat", "fish"], "pet": {"kind": "cat", "legs": 4, "weight": 3.5}, "happy": true}"#
        let schema = #"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"tags":{"type":"array","items":{"enum":["cat","dog","fish"]},"minItems":1,"maxItems":3},"pet":{"type":"object","properties":{"kind":{"enum":["cat","dog"]},"legs":{"type":"integer"},"weight":{"type":"number"}},"required":["kind","legs"],"additionalProperties":false},"happy":{"type":"boolean"}},"required":["name","age","tags","pet"],"additionalProperties":false}"#
        let ids = tok.encode(answer, addSpecial: false)
        for (label, g) in [("json_object", try JSONGrammar(schema: nil)), ("json_schema", try JSONGrammar(schemaText: Array(schema.utf8)))] {
            for ranks in [1, 2, 4] {
                let per = vocab.count / ranks
                let t0 = DispatchTime.now().uptimeNanoseconds
                let mask = ShardMask(vocab: vocab, range: 0..<per)
                let build = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
                var s = g.start()
                var total = 0.0, inString = 0.0, strings = 0
                for id in ids {
                    let m0 = DispatchTime.now().uptimeNanoseconds
                    mask.computeAllowed(g, s, remaining: 1000)
                    let ms = Double(DispatchTime.now().uptimeNanoseconds - m0) / 1e6
                    total += ms
                    if s.isPlainString { inString += ms; strings += 1 }
                    #expect(g.feed(&s, vocab.bytes(of: Int(id))), "\(label): the answer's token \(id) refused")
                }
                print("mask \(label), shard of \(per) ids (\(ranks) rank(s)): build \(String(format: "%.0f", build)) ms; "
                      + "\(String(format: "%.3f", total / Double(ids.count))) ms/token over \(ids.count) tokens "
                      + "(\(strings) inside strings: \(String(format: "%.3f", strings > 0 ? inString / Double(strings) : 0)) ms/token)")
            }
        }
    }
}
