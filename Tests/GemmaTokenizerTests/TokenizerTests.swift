// Tokenizer tests: ids identical to llama.cpp's on the committed reference corpus
// (Scripts/gen_tokenizer_reference.py), decoding and streaming decoding, speed, the
// tokenizer.model (protobuf-c) path on the real vocabulary, and bad input.
import Foundation
import Testing
import GemmaFormats
import GemmaTokenizer
import GemmaTestSupport

let tokenizerFixtures = TestPaths.fixture("tokenizer")

struct ReferenceEntry: Decodable { let text: String; let ids: [Int32]; let ids_no_special: [Int32]; let detokenized: String }
struct ReferenceFile: Decodable { let generator: String; let count: Int; let entries: [ReferenceEntry] }

func referenceCorpus() throws -> ReferenceFile {
    try JSONDecoder().decode(ReferenceFile.self, from: Data(contentsOf: tokenizerFixtures.appendingPathComponent("llama_cpp_reference.json")))
}


/// Loading the 262144-token vocabulary takes a moment: share one instance.
actor SharedTokenizer {
    static let shared = SharedTokenizer()
    private var cached: GemmaTokenizer?
    func get(_ path: String) throws -> GemmaTokenizer {
        if let c = cached { return c }
        let t = try GemmaTokenizer(gguf: GGUFFile(path: path))
        cached = t
        return t
    }
}

/// Compares every corpus entry; returns (matched, total) and records the first mismatches.
func compareWithReference(_ tok: GemmaTokenizer, _ ref: ReferenceFile, label: String) -> (Int, Int) {
    var matched = 0, shown = 0
    for e in ref.entries {
        let ids = tok.encode(e.text, addSpecial: true, parseSpecial: true)
        let plain = tok.encode(e.text, addSpecial: false, parseSpecial: false)
        if ids == e.ids && plain == e.ids_no_special { matched += 1 } else if shown < 10 {
            shown += 1
            Issue.record("\(label): \(e.text.debugDescription): got \(ids) / \(plain), llama.cpp \(e.ids) / \(e.ids_no_special)")
        }
    }
    return (matched, ref.entries.count)
}

@Suite(.serialized) struct GGUFTokenizerTests {
    @Test func vocabularyLayout() async throws {
        let path = try TestPaths.requireDefaultModel()
        let tok = try await SharedTokenizer.shared.get(path)
        #expect(tok.count == 262_144)
        #expect(tok.bosID == 2 && tok.eosID == 1 && tok.unknownID == 3)
        #expect(tok.addBOS && !tok.addEOS && !tok.addSpacePrefix)
        #expect(tok.id(of: "<start_of_turn>") == 105 && tok.id(of: "<end_of_turn>") == 106)
        #expect(tok.id(of: "\n") == 107 && tok.id(of: "  ") == 138 && tok.id(of: "<0x00>") == 238)
        #expect(tok.types[238] == .byte && tok.types[105] == .control && tok.types[107] == .userDefined)
    }

    @Test func identicalToLlamaCpp() async throws {
        let path = try TestPaths.requireDefaultModel()
        let tok = try await SharedTokenizer.shared.get(path)
        let ref = try referenceCorpus()
        #expect(ref.count >= 300)
        let (matched, total) = compareWithReference(tok, ref, label: "gguf")
        #expect(matched == total, "\(matched)/\(total) corpus strings identical to llama.cpp")
    }

    @Test func decodeMatchesLlamaCpp() async throws {
        let path = try TestPaths.requireDefaultModel()
        let tok = try await SharedTokenizer.shared.get(path)
        for e in try referenceCorpus().entries {
            var text = tok.decode(e.ids)
            // llama-cpp-python's detokenize drops one leading space after a leading BOS
            // (SentencePiece's dummy-prefix convention); our decode keeps the text verbatim.
            if e.ids.first == 2, text.hasPrefix(" ") { text.removeFirst() }
            #expect(text == e.detokenized, "\(e.text.debugDescription)")
            // Round trip without markup: decoding recovers the text exactly.
            if !e.text.contains("<") { #expect(tok.decode(tok.encode(e.text)) == e.text) }
        }
        #expect(tok.decode([2, 105, 2364, 107], renderSpecial: true) == "<bos><start_of_turn>user\n")
    }

    @Test func markersAreNeverStreamedAsText() async throws {
        let path = try TestPaths.requireDefaultModel()
        let tok = try await SharedTokenizer.shared.get(path)
        // Gemma 3's GGUF stores the multimodal markers as USER_DEFINED (llama.cpp renders them);
        // the 270M model does sample <start_of_image> now and then.
        let image = try #require(tok.id(of: "<start_of_image>"))
        let endImage = try #require(tok.id(of: "<end_of_image>"))
        let table = try #require(tok.id(of: "<table>"))
        for id in [image, endImage, 5, 0, 1, 2, 105, 106] { #expect(tok.isMarker(id), "\(id)") }
        #expect(!tok.isMarker(table))  // an HTML tag piece is text
        let hello = tok.encode("Hello", addSpecial: false)
        var d = StreamingDecoder(tokenizer: tok)
        let out = (hello + [image, table, endImage, 106] + hello).map { d.push($0) }.joined() + d.finish()
        #expect(out == "Hello<table>Hello")
        #expect(tok.decodeText(hello + [image, table]) == "Hello<table>")
        // decode stays llama.cpp's detokenizer (the reference corpus holds the marker).
        #expect(tok.decode([image]) == "<start_of_image>")
        var special = StreamingDecoder(tokenizer: tok, renderSpecial: true)
        #expect(special.push(image) == "<start_of_image>")
    }

    @Test func gemma4StyleMarkersAreNotText() throws {
        let pieces = ["<pad>", "<|tool_call>", "<tool_call|>", "<|\"|>", "<b>", "▁x", "<|image|>", "[multimodal]", "<|"]
        let t = try GemmaTokenizer(pieces: pieces, scores: [Float](repeating: 0, count: pieces.count),
                                   types: [.control, .userDefined, .userDefined, .userDefined, .userDefined, .normal,
                                           .userDefined, .userDefined, .userDefined],
                                   bosID: nil, eosID: nil, unknownID: nil, addBOS: false, addEOS: false, source: "x")
        #expect((0..<pieces.count).map { t.isMarker(Int32($0)) } == [true, true, true, true, false, false, true, true, false])
        #expect(t.decodeText([1, 5, 3, 4, 2, 8]) == " x<b><|")
    }

    @Test func streamingDecoderEmitsWholeCharacters() async throws {
        let path = try TestPaths.requireDefaultModel()
        let tok = try await SharedTokenizer.shared.get(path)
        // "𠀀" is not in the vocabulary: four byte tokens <0xF0><0xA0><0x80><0x80>.
        let ids = tok.encode("a𠀀b", addSpecial: false)
        #expect(ids.count == 6)
        var d = StreamingDecoder(tokenizer: tok)
        let chunks = ids.map { d.push($0) }
        #expect(chunks == ["a", "", "", "", "𠀀", "b"])
        #expect(d.finish() == "")
        for e in try referenceCorpus().entries {
            var s = StreamingDecoder(tokenizer: tok)
            var out = ""
            for id in e.ids {
                let piece = s.push(id)
                out += piece
            }
            out += s.finish()
            // The stream is text: markers (`<start_of_image>`, `[multimodal]` in the corpus)
            // are left out, as `decodeText` does.
            #expect(out == tok.decodeText(e.ids), "\(e.text.debugDescription)")
        }
        // A stream cut inside a character: the held bytes come out as U+FFFD at the end only.
        var cut = StreamingDecoder(tokenizer: tok)
        #expect(cut.push(ids[1]) == "" && cut.push(ids[2]) == "")
        #expect(cut.pendingByteCount == 2)
        #expect(cut.finish() == "\u{FFFD}")
    }

    /// About 10 KB of the reference corpus in one piece encodes to ids that decode back to the
    /// same text (the per-entry checks above cover short strings; this one covers a long input
    /// with many merges). Speed is measured by hand, not asserted (no timed tests).
    @Test func longTextRoundTrip() async throws {
        let path = try TestPaths.requireDefaultModel()
        let tok = try await SharedTokenizer.shared.get(path)
        let ref = try referenceCorpus()
        var text = ""
        // Entries with markers are left out: `<...>` may encode as a control token, which
        // `decode` leaves out (as in the per-entry round trip above).
        for e in ref.entries where text.utf8.count < 10_240 && !e.text.contains("<") { text += e.text + "\n" }
        let ids = tok.encode(text)
        #expect(ids.count > 1000)
        #expect(tok.decode(ids) == text)
    }

    /// The tokenizer.model path on the real vocabulary: the GGUF vocabulary exported as a
    /// SentencePiece ModelProto with protobuf-c, parsed back, must tokenize identically.
    @Test func sentencePieceModelRoundTrip() async throws {
        let path = try TestPaths.requireDefaultModel()
        let tok = try await SharedTokenizer.shared.get(path)
        let data = tok.sentencePieceModelData()
        #expect(data.count > 1_000_000)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("gemma-node-test-\(getpid()).model")
        try data.write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        let spm = try GemmaTokenizer.load(path: url.path)
        #expect(spm.pieces == tok.pieces && spm.scores == tok.scores && spm.types == tok.types)
        #expect(spm.bosID == 2 && spm.eosID == 1 && spm.unknownID == 3 && !spm.addSpacePrefix)
        let (matched, total) = compareWithReference(spm, try referenceCorpus(), label: "tokenizer.model")
        #expect(matched == total)
    }
}

@Suite struct TokenizerErrorTests {
    @Test func badTokenizerModel() throws {
        #expect(throws: TokenizerError.self) { try GemmaTokenizer(sentencePieceModelData: Data([0xFF, 0xFF, 0xFF]), source: "junk.model") }
        #expect(throws: TokenizerError.unreadable(file: "empty.model", reason: "the file is empty")) {
            try GemmaTokenizer(sentencePieceModelData: Data(), source: "empty.model")
        }
        #expect(throws: TokenizerError.self) { try GemmaTokenizer.load(path: "/nonexistent/tokenizer.model") }
    }

    @Test func ggufWithoutVocabulary() throws {
        let fixture = tokenizerFixtures.deletingLastPathComponent().appendingPathComponent("gguf/types_v3.gguf").path
        do {
            _ = try GemmaTokenizer.load(path: fixture)
            Issue.record("a GGUF without tokenizer metadata must not load")
        } catch let e as TokenizerError {
            #expect(e.description.contains("types_v3.gguf") && e.description.contains("tokenizer.ggml.model"))
        }
        // A corrupt GGUF: the error names the file.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: fixture)).prefix(100)
        let cut = FileManager.default.temporaryDirectory.appendingPathComponent("cut-\(getpid()).gguf")
        try bytes.write(to: cut)
        defer { try? FileManager.default.removeItem(at: cut) }
        #expect(throws: TokenizerError.self) { try GemmaTokenizer.load(path: cut.path) }
    }

    @Test func vocabularyChecks() {
        #expect(throws: TokenizerError.self) {
            try GemmaTokenizer(pieces: ["a"], scores: [], types: [.normal], bosID: nil, eosID: nil, unknownID: nil, addBOS: false, addEOS: false, source: "x")
        }
        #expect(throws: TokenizerError.self) {
            try GemmaTokenizer(pieces: ["a"], scores: [0], types: [.normal], bosID: 5, eosID: nil, unknownID: nil, addBOS: true, addEOS: false, source: "x")
        }
    }

    /// The flat piece table: exact lookups (no prefix or suffix matches), later duplicates win
    /// (llama.cpp's token_to_id), empty and multi-byte pieces, and misses.
    @Test func pieceLookup() throws {
        let pieces = ["", "a", "ab", "▁the", "b", "ab", "<0x41>", "日本"]
        let t = try GemmaTokenizer(pieces: pieces, scores: [Float](repeating: 0, count: pieces.count),
                                   types: [.control, .normal, .normal, .normal, .normal, .normal, .byte, .normal],
                                   bosID: nil, eosID: nil, unknownID: nil, addBOS: false, addEOS: false, source: "x")
        #expect(t.id(of: "a") == 1)
        #expect(t.id(of: "ab") == 5)
        #expect(t.id(of: "▁the") == 3)
        #expect(t.id(of: "日本") == 7)
        #expect(t.id(of: "") == 0)
        #expect(t.id(of: "abc") == nil)
        #expect(t.id(of: "▁th") == nil)
        #expect(t.decode([3, 6, 7]) == " theA日本")
    }
}
