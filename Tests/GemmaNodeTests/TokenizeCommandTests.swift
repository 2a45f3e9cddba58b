// `gemma-node tokenize` as users see it: the built binary on the default model and on bad files.
import Foundation
import Testing
import GemmaTestSupport

@Suite("tokenize command")
struct TokenizeCommandTests {
    let ggufFixture = TestPaths.fixture("gguf/types_v3.gguf").path

    /// The default model (resolved by the binary itself: $GEMMA_NODE_MODEL or the cache path).
    @Test func printsIdsOfTheDefaultModel() throws {
        let path = try TestPaths.requireDefaultModel()
        // Ids from llama.cpp (Tests/Fixtures/tokenizer/llama_cpp_reference.json).
        let out = try GemmaNodeBinary.run(["tokenize", "-p", "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout == "{\"tokens\":[2,105,2364,107,10979,106,107,105,4368,107]}\n")
        let pieces = try GemmaNodeBinary.run(["tokenize", "-m", path, "-p", "Hello world", "--no-bos", "--pieces"])
        #expect(pieces.stdout == "{\"tokens\":[9259,1902],\"pieces\":[\"Hello\",\"▁world\"]}\n", "\(pieces.all)")
    }

    @Test func badModelFilesFailWithTheReason() throws {
        let noVocab = try GemmaNodeBinary.run(["tokenize", "-m", ggufFixture, "-p", "x"])
        #expect(noVocab.status != 0)
        #expect(noVocab.stderr.contains("types_v3.gguf") && noVocab.stderr.contains("tokenizer.ggml.model"), "\(noVocab.all)")
        let cut = FileManager.default.temporaryDirectory.appendingPathComponent("tokenize-cut-\(getpid()).gguf")
        try Data(contentsOf: URL(fileURLWithPath: ggufFixture)).prefix(200).write(to: cut)
        defer { try? FileManager.default.removeItem(at: cut) }
        let truncated = try GemmaNodeBinary.run(["tokenize", "-m", cut.path, "-p", "x"])
        #expect(truncated.status != 0)
        #expect(truncated.stderr.contains(cut.lastPathComponent) && truncated.stderr.contains("truncated"), "\(truncated.all)")
        let missing = try GemmaNodeBinary.run(["tokenize", "-m", "/nonexistent/model.gguf", "-p", "x"])
        #expect(missing.status != 0 && missing.stderr.contains("/nonexistent/model.gguf"))
    }
}
