// `gemma-node serve` as users run it: the real mpirun with 2 ranks on the default model
// (Gemma 3 270M Q4_K_M; GEMMA_NODE_MODEL overrides, GEMMA_NODE_SERVE_TOKENIZER adds
// --tokenizer for a model without one), driven by Scripts/test_openai_client.py through the
// official `openai` Python package from the project's environment (Scripts/venv.sh): chat
// and completions, streaming or not, 16 concurrent streams, error codes, disconnects, idle
// CPU. Then SIGTERM to rank 0 must end every rank
// with status 0.
import Foundation
import Testing
import GemmaTestSupport

@Suite(.serialized) struct ServerTests {
    static let script = TestPaths.script("test_openai_client.py")

    /// `mpirun -n 2 gemma-node` without a subcommand serves the default model (here on a free
    /// port: the only flag given), rank 0 alone prints the URL and a curl line, and that curl
    /// line, run as printed, gets a chat completion.
    @Test func noSubcommandServesTheDefaultModel() throws {
        _ = try TestPaths.requireDefaultModel()  // found through GEMMA_NODE_MODEL, no -m
        var environment = GemmaNodeBinary.environment()
        environment["GEMMA_NODE_API_KEY"] = nil
        let job = try MPIJob(ranks: 2, ["--port", "0", "-c", "256", "-t", "1"], environment: environment)
        let stdout = job.stdout, stderr = job.stderr
        defer { job.kill() }
        guard let found = stdout.wait(for: #"gemma-node: try: (curl [^\n]+)\n"#, timeout: 180), let curl = found.first else {
            Issue.record("no try line:\n\(stdout.all)\n\(stderr.all)")
            return
        }
        let pid = stdout.wait(for: #"serving \S+ on http://\S+ \(pid (\d+),"#, timeout: 1)?.first.flatMap { Int32($0) }
        #expect(stdout.all.components(separatedBy: "gemma-node: serving ").count == 2, "\(stdout.all)")  // rank 0 only
        #expect(!stdout.all.contains("USAGE"), "\(stdout.all)")
        #expect(curl.hasPrefix("curl http://127.0.0.1:") && curl.contains("/v1/chat/completions"), "\(curl)")
        let client = try GemmaNodeBinary.launch(URL(fileURLWithPath: "/bin/sh"), ["-c", curl + " -s --max-time 240"],
                                                environment: environment, timeout: 250)
        let reply = try? JSONSerialization.jsonObject(with: Data(client.stdout.utf8)) as? [String: Any]
        let message = ((reply?["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
        #expect(client.status == 0 && message?.isEmpty == false, "\(client.all)")
        // SIGTERM to rank 0 (as a user stops it) ends every rank with status 0.
        if let pid { kill(pid, SIGTERM) } else { Issue.record("no pid in \(stdout.all)") }
        job.process.waitUntilExit()
        #expect(job.process.terminationStatus == 0, "\(stderr.all)")
    }

    @Test func openAIClientAgainstTwoRanks() throws {
        let model = try TestPaths.requireDefaultModel()
        let python = try TestPaths.requirePython()
        let marker = "server-test-\(UInt32.random(in: 0...UInt32.max))"
        var args = ["serve", "-m", model, "--port", "0", "--api-key", "test-key", "--parallel", "8", "--max-queue", "16",
                    "-c", "1024", "-t", "1", "--batch-tokens", "256", "--model-name", marker]
        if let tokenizer = ProcessInfo.processInfo.environment["GEMMA_NODE_SERVE_TOKENIZER"] { args += ["--tokenizer", tokenizer] }
        let job = try MPIJob(ranks: 2, args)
        let stdout = job.stdout, stderr = job.stderr
        defer { job.kill() }

        guard let found = stdout.wait(for: #"serving \S+ on http://127\.0\.0\.1:(\d+) \(pid (\d+),"#, timeout: 180),
              found.count == 2, let port = Int(found[0]), let pid = Int32(found[1]) else {
            Issue.record("the server did not start:\n\(stdout.all)\n\(stderr.all)")
            return
        }

        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        client.arguments = [python, Self.script.path, "--base-url", "http://127.0.0.1:\(port)", "--api-key", "test-key",
                            "--match", marker, "--max-tokens", "10"]
        let clientOut = Pipe()
        client.standardOutput = clientOut
        client.standardError = clientOut
        try client.run()
        let clientReader = PipeText(clientOut.fileHandleForReading)
        let clientDone = DispatchSemaphore(value: 0)
        client.terminationHandler = { _ in clientDone.signal() }
        // 600 s: the structured-output checks add about 90 s of constrained decoding on a debug build.
        if clientDone.wait(timeout: .now() + 600) == .timedOut {
            client.terminate()
            if clientDone.wait(timeout: .now() + 5) == .timedOut { kill(client.processIdentifier, SIGKILL) }
            client.waitUntilExit()
            Issue.record("the client script timed out:\n\(clientReader.all)")
            return
        }
        usleep(100_000)
        let report = clientReader.all
        let failures = report.split(separator: "\n").filter { $0.hasPrefix("FAIL") }
        // Every check must pass, including "concurrent streams equal their solo answers": the
        // kernels are batch-invariant (each token of a batched matmul is bit-identical to the
        // one-token kernel), so a greedy stream is the same alone or batched.
        #expect(failures.isEmpty, "\(report)\nserver stderr:\n\(stderr.all)")
        #expect(report.contains(" passed, 0 failed"), "\(report)")

        // SIGTERM to rank 0: shutdown plan, every rank exits 0.
        kill(pid, SIGTERM)
        if !job.waitForExit(timeout: 60) {
            Issue.record("the server did not stop after SIGTERM:\n\(stdout.all)\n\(stderr.all)")
            return
        }
        #expect(job.process.terminationStatus == 0, "\(stdout.all)\n\(stderr.all)")
        #expect(stdout.wait(for: "gemma-node: stopped", timeout: 5) != nil, "\(stdout.all)")
    }
}
