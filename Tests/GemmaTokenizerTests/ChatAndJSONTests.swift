// Chat templates rendered to exact strings (Gemma 1-3 and Gemma 4 grammars, GEMMA_SPEC A4.4/A4.5),
// and the tokenizer.json path checked against Hugging Face `tokenizers` on a small fixture.
import Foundation
import Testing
import GemmaTokenizer
import GemmaTestSupport

struct TinyCase: Decodable { let text: String; let ids: [Int32]; let decoded: String }
struct TinyFile: Decodable { let cases: [TinyCase] }

@Suite struct TokenizerJSONTests {
    @Test func matchesHuggingFaceTokenizers() throws {
        let tok = try GemmaTokenizer.load(path: tokenizerFixtures.appendingPathComponent("tiny_tokenizer.json").path)
        #expect(tok.bosID == 2 && tok.eosID == 1 && tok.unknownID == 3 && tok.addBOS)
        let exp = try JSONDecoder().decode(TinyFile.self, from: Data(contentsOf: tokenizerFixtures.appendingPathComponent("tiny_tokenizer_expected.json")))
        #expect(exp.cases.count >= 16)
        for c in exp.cases {
            let ids = tok.encode(c.text)
            #expect(ids == c.ids, "\(c.text.debugDescription)")
            #expect(tok.decode(ids) == c.decoded, "\(c.text.debugDescription)")
        }
    }

    /// The same vocabulary and merges as a Gemma 4 style GGUF (`tokenizer.ggml.model` gemma4
    /// with `tokenizer.ggml.merges`): the GGUF merge-rank path gives the same ids.
    @Test func gemma4GGUFMergesMatchTokenizers() throws {
        let tok = try GemmaTokenizer.load(path: tokenizerFixtures.appendingPathComponent("tiny_gemma4.gguf").path)
        guard case .merges = tok.mergeRule else { Issue.record("gemma4 GGUF with merges must merge by rank"); return }
        let exp = try JSONDecoder().decode(TinyFile.self, from: Data(contentsOf: tokenizerFixtures.appendingPathComponent("tiny_tokenizer_expected.json")))
        for c in exp.cases {
            #expect(tok.encode(c.text) == c.ids, "\(c.text.debugDescription)")
        }
    }

    @Test func badTokenizerJSON() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tokjson-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad = dir.appendingPathComponent("tokenizer.json")
        try Data("{\"model\": {\"type\": \"Unigram\"}}".utf8).write(to: bad)
        do {
            _ = try GemmaTokenizer.load(path: dir.path)
            Issue.record("a Unigram tokenizer.json must be refused")
        } catch let e as TokenizerError {
            #expect(e.description.contains("tokenizer.json") && e.description.contains("BPE"))
        }
        try Data("not json".utf8).write(to: bad)
        #expect(throws: TokenizerError.self) { try GemmaTokenizer.load(path: bad.path) }
        let badMerge = #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]}}"#
        try Data(badMerge.utf8).write(to: bad)
        #expect(throws: TokenizerError.self) { try GemmaTokenizer.load(path: bad.path) }
    }
}

@Suite struct ChatTemplateTests {
    let gemma = ChatTemplate(format: .gemma)
    let gemma4 = ChatTemplate(format: .gemma4)

    @Test func gemma3SingleTurn() throws {
        let s = try gemma.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
        #expect(s == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n")
    }

    @Test func gemma3SystemFoldedAndMultiTurn() throws {
        let s = try gemma.render(messages: [
            ChatMessage(role: "system", content: "Be brief."),
            ChatMessage(role: "user", content: "  What is 2+2?\n"),
            ChatMessage(role: "assistant", content: "4"),
            ChatMessage(role: "user", content: "And 3+3?"),
        ], addGenerationPrompt: true)
        #expect(s == "<bos><start_of_turn>user\nBe brief.\n\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n<start_of_turn>user\nAnd 3+3?<end_of_turn>\n<start_of_turn>model\n")
        let noPrompt = try gemma.render(messages: [ChatMessage(role: "user", content: "x"), ChatMessage(role: "model", content: "y")], addGenerationPrompt: false)
        #expect(noPrompt == "<bos><start_of_turn>user\nx<end_of_turn>\n<start_of_turn>model\ny<end_of_turn>\n")
    }

    @Test func gemma3RoleErrors() {
        #expect(throws: ChatTemplateError.rolesMustAlternate(index: 0, expected: "user", found: "assistant")) {
            try gemma.render(messages: [ChatMessage(role: "assistant", content: "x")], addGenerationPrompt: true)
        }
        #expect(throws: ChatTemplateError.rolesMustAlternate(index: 2, expected: "assistant/model", found: "user")) {
            try gemma.render(messages: [ChatMessage(role: "system", content: "s"), ChatMessage(role: "user", content: "a"), ChatMessage(role: "user", content: "b")], addGenerationPrompt: true)
        }
        #expect(throws: ChatTemplateError.systemNotFirst(index: 1)) {
            try gemma.render(messages: [ChatMessage(role: "user", content: "a"), ChatMessage(role: "system", content: "s")], addGenerationPrompt: true)
        }
        #expect(throws: ChatTemplateError.unknownRole(index: 0, role: "function")) {
            try gemma.render(messages: [ChatMessage(role: "function", content: "a")], addGenerationPrompt: true)
        }
        #expect(ChatTemplateError.systemNotFirst(index: 1).description.contains("first message"))
    }

    @Test func gemma4Formats() throws {
        // GEMMA_SPEC A4.4's minimal example (thinking off).
        #expect(try gemma4.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
                == "<bos><|turn>user\nHi<turn|>\n<|turn>model\n<|channel>thought\n<channel|>")
        let s = try gemma4.render(messages: [
            ChatMessage(role: "system", content: " You are terse. "),
            ChatMessage(role: "user", content: "Q1"),
            ChatMessage(role: "assistant", content: "<|channel>thought\nhmm<channel|>A1"),
            ChatMessage(role: "user", content: "Q2"),
        ], addGenerationPrompt: true)
        #expect(s == "<bos><|turn>system\nYou are terse.<turn|>\n<|turn>user\nQ1<turn|>\n<|turn>model\nA1<turn|>\n<|turn>user\nQ2<turn|>\n<|turn>model\n<|channel>thought\n<channel|>")
        let thinking = ChatTemplate(format: .gemma4, enableThinking: true)
        #expect(try thinking.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
                == "<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n")
        #expect(throws: ChatTemplateError.systemNotFirst(index: 1)) {
            try gemma4.render(messages: [ChatMessage(role: "user", content: "a"), ChatMessage(role: "developer", content: "s")], addGenerationPrompt: true)
        }
        #expect(ChatTemplate(architecture: "gemma4") == gemma4 && ChatTemplate(architecture: "gemma3") == gemma)
    }

    /// The rendered Gemma 3 prompt tokenizes (without a second BOS) to the turn ids.
    @Test func renderedPromptTokenizes() async throws {
        let path = try TestPaths.requireDefaultModel()
        let tok = try await SharedTokenizer.shared.get(path)
        let text = try gemma.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
        let ids = tok.encode(text, addSpecial: false, parseSpecial: true)
        #expect(ids.first == 2 && ids.filter { $0 == 2 }.count == 1)
        #expect(ids == [2, 105, 2364, 107, 10979, 106, 107, 105, 4368, 107])
        #expect(try tok.encodeChat([ChatMessage(role: "user", content: "Hi")], template: gemma) == ids)
        #expect(tok.endOfGenerationIDs == [1, 106])
    }
}

struct TransformersEntry: Decodable { let text: String; let ids: [Int32] }
struct TransformersFile: Decodable { let entries: [TransformersEntry] }

/// Opt-in (the 33 MB tokenizer.json is not committed): the real Gemma 3 vocabulary converted
/// by transformers from the GGUF (Scripts/gen_tokenizer_reference.py saves it to
/// ~/.cache/gemma-node/hf-tokenizer). Run with GEMMA_NODE_HF_TOKENIZER=<that directory>.
@Test(.enabled(if: ProcessInfo.processInfo.environment["GEMMA_NODE_HF_TOKENIZER"] != nil))
func tokenizerJSONOnRealVocabularyMatchesTransformers() throws {
    let dir = ProcessInfo.processInfo.environment["GEMMA_NODE_HF_TOKENIZER"] ?? ""
    let tok = try GemmaTokenizer.load(path: dir)
    #expect(tok.count == 262_144)
    let ref = try JSONDecoder().decode(TransformersFile.self, from: Data(contentsOf: tokenizerFixtures.appendingPathComponent("transformers_gguf_reference.json")))
    var matched = 0
    for e in ref.entries {
        let ids = tok.encode(e.text)
        if ids == e.ids { matched += 1 } else { Issue.record("\(e.text.debugDescription): got \(ids), transformers \(e.ids)") }
    }
    print("tokenizer.json path: \(matched)/\(ref.entries.count) identical to transformers")
    #expect(matched == ref.entries.count)
}

@Suite struct OrderedJSONTests {
    func write(_ json: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ojson-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let f = dir.appendingPathComponent("tokenizer.json")
        try Data(json.utf8).write(to: f)
        return f.path
    }

    /// Canonically equivalent keys stay distinct, escapes (incl. surrogate pairs) decode, and
    /// merges may be written as pairs.
    @Test func exactKeysAndEscapes() throws {
        let json = #"""
        {"model": {"type": "BPE", "unk_token": "<unk>",
          "vocab": {"<unk>": 0, "\u09df": 1, "\u09af\u09bc": 2, "\ud83d\ude42": 3, "a\"b": 4, "x": 5, "xx": 6, "\u09af": 7, "\u09bc": 8},
          "merges": [["x", "x"], "\u09af \u09bc"]},
         "added_tokens": [{"id": 0, "content": "<unk>", "special": true}]}
        """#
        let path = try write(json)
        defer { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path) }
        let tok = try GemmaTokenizer.load(path: path)
        #expect(tok.count == 9)
        #expect(Array(tok.pieces[1].unicodeScalars) == ["\u{09DF}"])
        #expect(Array(tok.pieces[2].unicodeScalars) == ["\u{09AF}", "\u{09BC}"])
        #expect(tok.pieces[3] == "🙂" && tok.pieces[4] == "a\"b")
        #expect(tok.encode("xxx", addSpecial: false) == [6, 5])
        #expect(tok.encode("\u{09AF}\u{09BC}", addSpecial: false) == [2])  // merged, not U+09DF
        #expect(tok.encode("\u{09DF}", addSpecial: false) == [1])
    }

    @Test func malformedJSONIsAnError() throws {
        for bad in ["{", "{\"model\": [1, 2,]}", "{\"a\": \"\\q\"}", "{\"a\": \"unterminated}", "[1] x", "{\"a\": tru}"] {
            let path = try write(bad)
            defer { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path) }
            do {
                _ = try GemmaTokenizer.load(path: path)
                Issue.record("accepted \(bad)")
            } catch let e as TokenizerError {
                #expect(e.description.contains("tokenizer.json"))
            }
        }
    }
}
