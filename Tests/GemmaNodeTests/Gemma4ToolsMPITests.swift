// Gemma 4's tool calls and thinking end to end: `mpirun -n 2 gemma-node serve` on a tiny
// Gemma 4 GGUF with random weights (Tests/Fixtures/gguf_gemma4, 256 ids, context 256) and a
// 256-id tokenizer.json written here (the Gemma 4 markers, ASCII byte tokens, "▁" and filler
// pieces), driven by the official `openai` client (Scripts/test_openai_client.py --only
// gemma4-tools). A random-weight model says nothing sensible, so a forced call that parses and
// validates shows the whole path works: the native template, the mask over the vocabulary
// shards, the `<|tool_call>` prompt opening and the call parser.
import Foundation
import Testing
import GemmaTestSupport

@Suite struct Gemma4ToolsMPITests {
    /// A BPE tokenizer.json of exactly 256 ids (the fixture model's vocabulary).
    static func writeTokenizer(to url: URL) throws {
        var added: [(String, Bool)] = [("<pad>", true), ("<eos>", true), ("<bos>", true), ("<unk>", true), ("<mask>", true),
                                       ("<|turn>", true), ("<turn|>", true), ("<|think|>", true)]
        for m in ["<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", "<|\"|>", "<|tool>", "<tool|>"] {
            added.append((m, false))  // USER_DEFINED, as Gemma 4 GGUFs store them
        }
        var vocab: [String] = added.map(\.0)
        vocab += ([0x0A] + Array(0x20...0x7E)).map { String(format: "<0x%02X>", $0) }
        vocab.append("\u{2581}")
        let letters = Array("etaoinshrdlucmfwypvbgkqjxz")
        var i = 0
        while vocab.count < 256 {
            let piece = String([letters[i / letters.count % letters.count], letters[i % letters.count]])
            if !vocab.contains(piece) { vocab.append(piece) }
            i += 1
        }
        var json = #"{"version": "1.0", "model": {"type": "BPE", "byte_fallback": true, "vocab": {"#
        json += vocab.enumerated().map { "\(String(decoding: try! JSONEncoder().encode($1), as: UTF8.self)): \($0)" }.joined(separator: ", ")
        json += #"}, "merges": []}, "added_tokens": ["#
        json += added.enumerated().map { #"{"id": \#($0), "content": \#(String(decoding: try! JSONEncoder().encode($1.0), as: UTF8.self)), "special": \#($1.1)}"# }
            .joined(separator: ", ")
        json += "]}"
        try Data(json.utf8).write(to: url)
    }

    @Test func forcedCallsAndThinkingOnRandomWeights() throws {
        let python = try TestPaths.requirePython()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gemma4-tools-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokenizer = dir.appendingPathComponent("tokenizer.json")
        try Self.writeTokenizer(to: tokenizer)
        let marker = "gemma4-tools-\(UInt32.random(in: 0...UInt32.max))"
        let job = try MPIJob(ranks: 2, ["serve", "-m", TestPaths.fixture("gguf_gemma4/gemma4_dense_keqv.gguf").path, "--tokenizer", tokenizer.path,
                                        "--port", "0", "--api-key", "k", "--parallel", "2", "-c", "256", "-t", "1", "--model-name", marker])
        defer { job.kill() }
        guard let port = job.servePort() else { return }
        let run = try GemmaNodeBinary.launch(URL(fileURLWithPath: "/usr/bin/env"),
                                             [python, TestPaths.script("test_openai_client.py").path, "--base-url", "http://127.0.0.1:\(port)",
                                              "--api-key", "k", "--match", marker, "--only", "gemma4-tools"],
                                             environment: ProcessInfo.processInfo.environment, timeout: 300)
        #expect(!run.timedOut && run.status == 0, "\(run.all)\nserver:\n\(job.stderr.all)")
        #expect(run.all.contains(" passed, 0 failed"), "\(run.all)")
    }
}
