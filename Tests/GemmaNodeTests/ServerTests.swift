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

/// Reads a child's stdout line by line on a background thread.
private final class LineReader: @unchecked Sendable {
    private let lock = NSLock()
    private var text = ""
    private let seen = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread { [self] in
            while true {
                let data = handle.availableData
                if data.isEmpty { break }
                lock.lock()
                text += String(decoding: data, as: UTF8.self)
                lock.unlock()
                seen.signal()
            }
            seen.signal()
        }.start()
    }

    var all: String { lock.lock(); defer { lock.unlock() }; return text }

    /// Waits until `pattern` matches the output; returns the match's capture groups.
    func wait(for pattern: String, timeout: Double) -> [String]? {
        let end = Date().addingTimeInterval(timeout)
        let regex = try? NSRegularExpression(pattern: pattern)
        while Date() < end {
            let current = all
            if let m = regex?.firstMatch(in: current, range: NSRange(current.startIndex..., in: current)) {
                return (1..<m.numberOfRanges).compactMap { Range(m.range(at: $0), in: current).map { String(current[$0]) } }
            }
            _ = seen.wait(timeout: .now() + 0.2)
        }
        return nil
    }
}

@Suite(.serialized) struct ServerTests {
    static let script = TestPaths.script("test_openai_client.py")

    /// `mpirun -n 2 gemma-node` without a subcommand serves the default model (here on a free
    /// port: the only flag given), rank 0 alone prints the URL and a curl line, and that curl
    /// line, run as printed, gets a chat completion.
    @Test func noSubcommandServesTheDefaultModel() throws {
        _ = try TestPaths.requireDefaultModel()  // found through GEMMA_NODE_MODEL, no -m
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", "2", GemmaNodeBinary.url.path,
                            "--port", "0", "-c", "256", "-t", "1"]
        var environment = GemmaNodeBinary.environment()
        environment["GEMMA_NODE_API_KEY"] = nil
        server.environment = environment
        let out = Pipe(), err = Pipe()
        server.standardOutput = out
        server.standardError = err
        server.standardInput = FileHandle.nullDevice
        try server.run()
        let stdout = LineReader(out.fileHandleForReading)
        let stderr = LineReader(err.fileHandleForReading)
        defer {
            if server.isRunning {
                server.terminate()
                usleep(500_000)
                if server.isRunning { kill(server.processIdentifier, SIGKILL) }
            }
        }
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
        server.waitUntilExit()
        #expect(server.terminationStatus == 0, "\(stderr.all)")
    }

    @Test func openAIClientAgainstTwoRanks() throws {
        let model = try TestPaths.requireDefaultModel()
        let python = try TestPaths.requirePython()
        let marker = "server-test-\(UInt32.random(in: 0...UInt32.max))"
        var args = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", "2", GemmaNodeBinary.url.path,
                    "serve", "-m", model, "--port", "0", "--api-key", "test-key", "--parallel", "8", "--max-queue", "16",
                    "-c", "1024", "-t", "1", "--batch-tokens", "256", "--model-name", marker]
        if let tokenizer = ProcessInfo.processInfo.environment["GEMMA_NODE_SERVE_TOKENIZER"] { args += ["--tokenizer", tokenizer] }
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = args
        server.environment = GemmaNodeBinary.environment()
        let out = Pipe(), err = Pipe()
        server.standardOutput = out
        server.standardError = err
        server.standardInput = FileHandle.nullDevice
        try server.run()
        let stdout = LineReader(out.fileHandleForReading)
        let stderr = LineReader(err.fileHandleForReading)
        defer {
            if server.isRunning {
                server.terminate()
                usleep(500_000)
                if server.isRunning { kill(server.processIdentifier, SIGKILL) }
            }
        }

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
        let clientReader = LineReader(clientOut.fileHandleForReading)
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
        let exited = DispatchSemaphore(value: 0)
        server.terminationHandler = { _ in exited.signal() }
        if server.isRunning && exited.wait(timeout: .now() + 60) == .timedOut {
            Issue.record("the server did not stop after SIGTERM:\n\(stdout.all)\n\(stderr.all)")
            return
        }
        #expect(server.terminationStatus == 0, "\(stdout.all)\n\(stderr.all)")
        #expect(stdout.wait(for: "gemma-node: stopped", timeout: 5) != nil, "\(stdout.all)")
    }
}
