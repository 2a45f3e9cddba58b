// A background `mpirun ... gemma-node` job for the tests that talk to a running server or
// signal one of its ranks (ServerTests, StuckRankMPITests): its output read as it comes, the
// pid of a rank, the port `serve` announces, and a kill that leaves nothing behind.
import Foundation
import Testing

/// Reads a pipe on a background thread; the `wait` methods poll the text read so far.
final class PipeText: @unchecked Sendable {
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

    /// Waits until `condition` holds for the text so far; false if it still does not after `timeout` s.
    func wait(timeout: Double, until condition: (String) -> Bool) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if condition(all) { return true }
            _ = seen.wait(timeout: .now() + 0.02)
        }
        return condition(all)
    }

    /// Waits until `pattern` matches the text so far; returns the match's capture groups.
    func wait(for pattern: String, timeout: Double) -> [String]? {
        let regex = try? NSRegularExpression(pattern: pattern)
        var groups: [String]?
        _ = wait(timeout: timeout) { current in
            guard let m = regex?.firstMatch(in: current, range: NSRange(current.startIndex..., in: current)) else { return false }
            groups = (1..<m.numberOfRanges).compactMap { Range(m.range(at: $0), in: current).map { String(current[$0]) } }
            return true
        }
        return groups
    }
}

/// One `mpirun ... gemma-node` job started in the background.
final class MPIJob {
    let process: Process
    let stdout: PipeText
    let stderr: PipeText

    init(ranks: Int, _ arguments: [String], environment: [String: String] = GemmaNodeBinary.environment()) throws {
        let (process, out, err) = try GemmaNodeBinary.start(
            URL(fileURLWithPath: "/usr/bin/env"),
            ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", String(ranks), GemmaNodeBinary.url.path] + arguments,
            environment: environment)
        self.process = process
        stdout = PipeText(out.fileHandleForReading)
        stderr = PipeText(err.fileHandleForReading)
    }

    /// The port `serve` announces on stdout (`... on http://127.0.0.1:PORT (pid ...`), or nil
    /// and a recorded issue if the job ended or did not announce one within `timeout` s (the
    /// full suite's other mpirun jobs can hold both cores for minutes).
    func servePort(timeout: Double = 180) -> Int? {
        var port = 0
        guard stdout.wait(timeout: timeout, until: { text in
            if let r = text.range(of: #"on http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(text[r].split(separator: ":").last ?? "") ?? 0
            }
            return port > 0 || !process.isRunning
        }), port > 0 else {
            Issue.record("the server did not start:\n\(stdout.all)\n\(stderr.all)")
            return nil
        }
        return port
    }

    /// The pid of `rank`: mpirun's child whose environment says OMPI_COMM_WORLD_RANK=rank.
    func pid(ofRank rank: Int) -> Int32? {
        let parent = process.processIdentifier
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for entry in entries {
            guard let pid = Int32(entry),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            guard fields.count > 1, Int32(fields[1]) == parent,
                  let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            let variables = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if variables.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
        }
        return nil
    }

    /// Waits for the job to end; false if it is still running after `timeout` seconds.
    func waitForExit(timeout: Double) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < end { usleep(50_000) }
        return !process.isRunning
    }

    func kill() {
        if process.isRunning {
            process.terminate()
            usleep(500_000)
            if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        }
    }
}
