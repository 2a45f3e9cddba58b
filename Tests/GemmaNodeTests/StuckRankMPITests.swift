// A rank that freezes (SIGSTOP) or dies (SIGKILL) under the real mpirun: the ranks that can
// still run must name it and the job must end non-zero (--step-timeout, MPICommunicator's
// liveness probes); under `serve`, /health must turn 503 and the in-flight requests must end
// with an error. And a client that disconnects from a non-streaming request must free its
// KV slot on every rank. Detection times are measured by Scripts/stall_times.sh, not here.
import Foundation
import Testing
import GemmaTestSupport

@Suite(.serialized) struct StuckRankMPITests {
    /// Starts `generate` on 2 ranks, waits until tokens flow, then sends `sig` to rank 1.
    /// Returns the job after it ended (or nil and a recorded issue if it did not).
    private func generateAndSignal(_ sig: Int32) throws -> (job: MPIJob, victim: Int32)? {
        let model = try TestPaths.requireDefaultModel()
        let job = try MPIJob(ranks: 2, ["generate", "-m", model, "-p", "Once upon a time", "-n", "400", "--temp", "0",
                                     "-t", "1", "-c", "1024", "--step-timeout", "3"])
        var victim: Int32 = 0
        defer {
            job.kill()
            if victim > 0 { kill(victim, SIGKILL) }
        }
        // Tokens flowing: rank 0 writes text as it is sampled.
        guard job.stdout.wait(timeout: 180, until: { $0.count > 40 || !job.process.isRunning }), job.process.isRunning else {
            Issue.record("generation did not start:\n\(job.stdout.all)\n\(job.stderr.all)")
            return nil
        }
        guard let pid = job.pid(ofRank: 1) else {
            Issue.record("rank 1 not found among mpirun's children")
            return nil
        }
        victim = pid
        kill(pid, sig)
        // 3 s timeout + 1 s probe window + 1 s linger, far below this bound.
        guard job.waitForExit(timeout: 60) else {
            Issue.record("the job did not end after rank 1 got signal \(sig):\n\(job.stderr.all)")
            return nil
        }
        return (job, pid)
    }

    @Test func stoppedRankIsNamedAndTheJobFails() throws {
        guard let (job, _) = try generateAndSignal(SIGSTOP) else { return }
        let err = job.stderr.all
        #expect(job.process.terminationStatus != 0, "\(err)")
        // Rank 0 names rank 1 and says what it was waiting in.
        #expect(err.contains("gemma-node: rank 0 of 2: fatal: rank 1 stopped answering"), "\(err)")
        #expect(err.contains("--step-timeout"), "\(err)")
        #expect(err.range(of: #"during (layer \d+|the forward pass|the sampling exchange|the agreement|waiting for the step plan)[^\n]* of step \d+|after step \d+"#,
                          options: .regularExpression) != nil, "\(err)")
    }

    @Test func killedRankIsNamedAndTheJobFails() throws {
        guard let (job, pid) = try generateAndSignal(SIGKILL) else { return }
        let err = job.stderr.all + job.stdout.all
        #expect(job.process.terminationStatus != 0, "\(err)")
        #expect(err.contains("fatal: rank 1 (pid \(pid) on this host) has exited"), "\(err)")
    }

    /// `serve` on 2 ranks with requests in flight when rank 1 stops: /health turns 503, the
    /// non-streaming request gets a 503 error body, the stream an error event, and the job
    /// exits non-zero naming rank 1.
    @Test func serveFailsInFlightRequestsWhenARankStops() throws {
        let model = try TestPaths.requireDefaultModel()
        let python = try TestPaths.requirePython()
        let job = try MPIJob(ranks: 2, ["serve", "-m", model, "--port", "0", "-c", "4096", "-t", "1", "--parallel", "2",
                                     "--step-timeout", "3"])
        var victim: Int32 = 0
        defer {
            job.kill()
            if victim > 0 { kill(victim, SIGKILL) }
        }
        guard let port = job.servePort() else { return }
        let client = Process()
        client.executableURL = URL(fileURLWithPath: python)
        client.arguments = [TestPaths.script("test_stall_client.py").path, "inflight", "--port", String(port), "--max-tokens", "3000"]
        let clientOut = Pipe()
        client.standardOutput = clientOut
        client.standardError = clientOut
        try client.run()
        let report = PipeText(clientOut.fileHandleForReading)
        defer { if client.isRunning { client.terminate() } }
        guard report.wait(timeout: 120, until: { $0.contains("STARTED") }), let pid = job.pid(ofRank: 1) else {
            Issue.record("the requests did not start:\n\(report.all)\n\(job.stderr.all)")
            return
        }
        victim = pid
        kill(pid, SIGSTOP)
        guard job.waitForExit(timeout: 60) else {
            Issue.record("the server did not exit after rank 1 stopped:\n\(job.stderr.all)")
            return
        }
        client.waitUntilExit()
        let lines = report.all.split(separator: "\n").filter { $0.hasPrefix("RESULT ") }
        var results: [String: [String: Any]] = [:]
        for line in lines {
            if let object = try JSONSerialization.jsonObject(with: Data(line.dropFirst(7).utf8)) as? [String: Any],
               let kind = object["kind"] as? String { results[kind] = object }
        }
        let err = job.stderr.all
        #expect(job.process.terminationStatus != 0, "\(err)")
        #expect(err.contains("fatal: rank 1 stopped answering"), "\(err)")
        #expect(results["health"]?["status"] as? Int == 503, "\(report.all)")
        #expect((results["health"]?["body"] as? String)?.contains("rank 1 stopped answering") == true, "\(report.all)")
        #expect(results["plain"]?["status"] as? Int == 503, "\(report.all)")
        let plainBody = results["plain"]?["body"] as? String ?? ""
        #expect(plainBody.contains("\"error\"") && plainBody.contains("rank 1 stopped answering"), "\(report.all)")
        let events = results["stream"]?["events"] as? [String] ?? []
        #expect(events.contains { $0.contains("\"error\"") && $0.contains("rank 1 stopped answering") }, "\(report.all)")
    }

    /// A non-streaming request whose client closes the socket: its sequence must leave its KV
    /// slot (gemma_running_sequences back to its value before) while the server runs on.
    @Test func disconnectedNonStreamingRequestFreesItsSlot() throws {
        let model = try TestPaths.requireDefaultModel()
        let python = try TestPaths.requirePython()
        let job = try MPIJob(ranks: 2, ["serve", "-m", model, "--port", "0", "-c", "4096", "-t", "1", "--parallel", "2"])
        defer { job.kill() }
        guard let port = job.servePort() else { return }
        let out = try GemmaNodeBinary.launch(URL(fileURLWithPath: python),
                                             [TestPaths.script("test_stall_client.py").path, "disconnect", "--port", String(port),
                                              "--max-tokens", "3000"],
                                             environment: ProcessInfo.processInfo.environment, timeout: 120)
        let line = try #require(out.stdout.split(separator: "\n").first { $0.hasPrefix("RESULT ") }, "\(out.all)")
        let r = try #require(try JSONSerialization.jsonObject(with: Data(line.dropFirst(7).utf8)) as? [String: Any])
        #expect(r["during"] as? Int == 1, "the request never ran: \(out.all)")
        #expect(r["after"] as? Int == 0, "the slot stayed taken after the client left: \(out.all)\n\(job.stderr.all)")
        #expect(job.process.isRunning, "\(job.stderr.all)")
    }

    /// An idle server is not a stuck one: with a 1 s timeout the worker probes rank 0 several
    /// times while no request comes, rank 0 answers, and a request afterwards still works.
    @Test func idleServerOutlivesManyTimeouts() throws {
        let model = try TestPaths.requireDefaultModel()
        let python = try TestPaths.requirePython()
        let job = try MPIJob(ranks: 2, ["serve", "-m", model, "--port", "0", "-c", "1024", "-t", "1", "--step-timeout", "1"])
        defer { job.kill() }
        guard let port = job.servePort() else { return }
        sleep(5)  // five timeouts of idleness on the worker
        let request = """
            import json, urllib.request
            body = json.dumps({"model": "x", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}).encode()
            r = urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:\(port)/v1/completions", body,
                                       {"Content-Type": "application/json"}), timeout=60)
            print("STATUS", r.status, json.loads(r.read())["usage"]["completion_tokens"])
            """
        let out = try GemmaNodeBinary.launch(URL(fileURLWithPath: python), ["-c", request],
                                             environment: ProcessInfo.processInfo.environment, timeout: 90)
        #expect(out.stdout.contains("STATUS 200 8"), "\(out.all)\n\(job.stderr.all)")
        #expect(job.process.isRunning, "\(job.stderr.all)")
        #expect(!job.stderr.all.contains("stopped answering"), "\(job.stderr.all)")
    }

    /// A coordinator that freezes while the server is idle is found by the workers' probes:
    /// rank 1 names rank 0 and says it was waiting for a step plan; the job exits non-zero.
    @Test func frozenIdleCoordinatorIsNamedByTheWorker() throws {
        let model = try TestPaths.requireDefaultModel()
        let job = try MPIJob(ranks: 2, ["serve", "-m", model, "--port", "0", "-c", "1024", "-t", "1", "--step-timeout", "2"])
        var victim: Int32 = 0
        defer {
            job.kill()
            if victim > 0 { kill(victim, SIGKILL) }
        }
        guard job.servePort() != nil, let pid = job.pid(ofRank: 0) else { return }
        victim = pid
        kill(pid, SIGSTOP)
        guard job.waitForExit(timeout: 60) else {
            Issue.record("the job did not end after rank 0 stopped:\n\(job.stderr.all)")
            return
        }
        let err = job.stderr.all
        #expect(job.process.terminationStatus != 0, "\(err)")
        #expect(err.contains("gemma-node: rank 1 of 2: fatal: rank 0 stopped answering"), "\(err)")
        #expect(err.contains("waiting for the step plan"), "\(err)")
    }

    /// A worker that freezes while the server is idle is found by rank 0's answering thread
    /// (no collective for --step-timeout: it probes): /health turns 503 without any request,
    /// and the job exits non-zero naming rank 1.
    @Test func frozenIdleWorkerTurnsHealthTo503() throws {
        let model = try TestPaths.requireDefaultModel()
        let python = try TestPaths.requirePython()
        let job = try MPIJob(ranks: 2, ["serve", "-m", model, "--port", "0", "-c", "1024", "-t", "1", "--step-timeout", "2"])
        var victim: Int32 = 0
        defer {
            job.kill()
            if victim > 0 { kill(victim, SIGKILL) }
        }
        guard let port = job.servePort(), let pid = job.pid(ofRank: 1) else { return }
        victim = pid
        kill(pid, SIGSTOP)
        let poll = """
            import time, urllib.request, urllib.error
            end = time.time() + 40
            while time.time() < end:
                try:
                    urllib.request.urlopen("http://127.0.0.1:\(port)/health", timeout=2)
                except urllib.error.HTTPError as e:
                    print("HEALTH", e.code, e.read().decode())
                    break
                except Exception as e:
                    print("GONE", repr(e))
                    break
                time.sleep(0.05)
            """
        let out = try GemmaNodeBinary.launch(URL(fileURLWithPath: python), ["-c", poll],
                                             environment: ProcessInfo.processInfo.environment, timeout: 60)
        #expect(out.stdout.contains("HEALTH 503") && out.stdout.contains("rank 1 stopped answering"), "\(out.all)\n\(job.stderr.all)")
        guard job.waitForExit(timeout: 60) else {
            Issue.record("the server did not exit after rank 1 stopped:\n\(job.stderr.all)")
            return
        }
        #expect(job.process.terminationStatus != 0, "\(job.stderr.all)")
        #expect(job.stderr.all.contains("rank 0 of 2: fatal: rank 1 stopped answering"), "\(job.stderr.all)")
        #expect(job.stderr.all.contains("without a collective"), "\(job.stderr.all)")
    }
}
