// The gemma-node binary as users run it: cluster-check under the real mpirun at 2 and 4 ranks
// (handshake, all-reduce verified, StepPlans identical on every rank, world reported, failures
// and mismatched ranks stop every rank), the idle-wait CPU budget, the world of one, and the
// subcommands that are not built yet.
import Foundation
import Testing

@Suite(.serialized) struct ClusterCheckTests {
    @Test(arguments: [2, 4])
    func clusterCheckVerifiesAllReduceAndReportsEveryRank(ranks: Int) throws {
        let result = try GemmaNodeBinary.mpirun(ranks: ranks, ["cluster-check", "--repetitions", "5", "-t", "3"])
        #expect(!result.timedOut)
        #expect(result.status == 0, "\(result.all)")
        #expect(result.stdout.contains("cluster-check: \(ranks) ranks (MPICommunicator)"))
        for r in 0..<ranks {
            #expect(result.stdout.contains("rank \(r): host "), "rank \(r) missing:\n\(result.stdout)")
        }
        #expect(result.stdout.occurrences(of: "threads 3,") == ranks)
        #expect(result.stdout.contains("allreduce ok: sums and maxima exact at 5 sizes, results bit-identical on all \(ranks) ranks"))
        for size in [640, 2048, 5376, 16384, 65536] {
            let row = result.stdout.split(separator: "\n").first { $0.split(separator: " ").first == Substring(String(size)) }
            let fields = row?.split(separator: " ").compactMap { Double($0) } ?? []
            // floats, bytes, median us, algbw, busbw: a positive latency; bandwidth printed
            // (it rounds to 0.000 when the shared 2-core machine is very busy, so only >= 0).
            #expect(fields.count == 5 && fields[1] == Double(size * 4) && fields[2] > 0 && fields[3] >= 0,
                    "no benchmark row for \(size):\n\(result.stdout)")
        }
        #expect(result.stdout.contains("handshake ok: protocol version 4, model no model"))
        // Every rank printed the hashes of the plans it decoded; all must be the same.
        let planLines = result.stdout.split(separator: "\n").filter { $0.hasPrefix("stepplans rank ") }
        #expect(planLines.count == ranks, "\(result.stdout)")
        let hashes = Set(planLines.map { $0.split(separator: ":", maxSplits: 1).last.map(String.init) ?? "" })
        #expect(hashes.count == 1 && (hashes.first?.split(separator: " ").count ?? 0) == 4, "\(planLines)")
        #expect(result.stdout.contains("stepplans ok: 4 plans"))
        #expect(result.stdout.contains("plan round trip: 16-sequence plan ("), "\(result.stdout)")
        #expect(result.stdout.contains("cluster-check ok"))
    }

    @Test(arguments: [2, 4])
    func rankWithAnotherProtocolVersionStopsEveryRank(ranks: Int) throws {
        let stale = ranks - 1
        let result = try GemmaNodeBinary.mpirun(ranks: ranks, ["cluster-check", "--repetitions", "2"],
                                                environment: ["GEMMA_NODE_PROTOCOL_VERSION_OVERRIDE": "\(stale):99"])
        #expect(!result.timedOut)
        #expect(result.status != 0)
        let message = "gemma-node: error: rank \(stale) speaks protocol version 99, coordinator speaks 4; rebuild all ranks from the same commit"
        #expect(result.stderr.occurrences(of: message) == ranks, "\(result.all)")
        #expect(!result.stdout.contains("allreduce ok"))
    }

    @Test func rankWithAnotherModelStopsEveryRank() throws {
        let model = URL(fileURLWithPath: #filePath).path  // any file: this test's source
        let result = try GemmaNodeBinary.mpirun(ranks: 2, ["cluster-check", "-m", model],
                                                environment: ["GEMMA_NODE_FINGERPRINT_OVERRIDE": "1:other-model"])
        #expect(result.status != 0)
        #expect(result.stderr.occurrences(of: "gemma-node: error: rank 1 loaded model \"other-model\", coordinator loaded \"ClusterCheckTests.swift ") == 2,
                "\(result.all)")
    }

    @Test func sameModelFileOnEveryRankPassesTheHandshake() throws {
        let model = URL(fileURLWithPath: #filePath).path
        let result = try GemmaNodeBinary.mpirun(ranks: 2, ["cluster-check", "--repetitions", "2", "-m", model])
        #expect(result.status == 0, "\(result.all)")
        #expect(result.stdout.contains("handshake ok: protocol version 4, model ClusterCheckTests.swift "))
    }

    @Test func missingModelIsReportedByEveryRank() throws {
        let result = try GemmaNodeBinary.mpirun(ranks: 2, ["cluster-check", "-m", "/nonexistent/model.gguf"])
        #expect(result.status != 0)
        #expect(result.stderr.occurrences(of: "gemma-node: error: rank 0: model not found: /nonexistent/model.gguf") == 2, "\(result.all)")
    }

    @Test(arguments: [2, 4])
    func failingRankStopsEveryRankWithTheSameMessage(ranks: Int) throws {
        let failing = ranks - 1
        let result = try GemmaNodeBinary.mpirun(ranks: ranks, ["cluster-check", "--repetitions", "2", "--fail-rank", String(failing)])
        #expect(!result.timedOut)
        #expect(result.status != 0)
        let message = "gemma-node: error: rank \(failing): injected failure on rank \(failing) (test hook)"
        #expect(result.stderr.occurrences(of: message) == ranks, "\(result.all)")
        #expect(!result.stdout.contains("cluster-check ok"))
    }

    @Test func rankFailingOutsideAgreementAbortsTheJob() throws {
        // Rank 1 throws while ranks 0, 2, 3 wait in a barrier: the job must end, not hang.
        let result = try GemmaNodeBinary.mpirun(ranks: 4, ["cluster-check", "--crash-rank", "1"], timeout: 60)
        #expect(!result.timedOut)
        #expect(result.status != 0)
        #expect(result.stderr.contains("rank 1 of 4: fatal: injected failure on rank 1"), "\(result.all)")
    }

    @Test func mpiErrorsComeBackTypedWithMPIsText() throws {
        // A barrier on MPI_COMM_NULL must throw CommunicatorError.transport, not abort the job.
        let result = try GemmaNodeBinary.mpirun(ranks: 2, ["cluster-check", "--repetitions", "1", "--probe-mpi-error"])
        #expect(result.status == 0, "\(result.all)")
        #expect(result.stdout.contains("mpi error path: MPI_Barrier(MPI_COMM_NULL) failed (code "), "\(result.stdout)")
        #expect(result.stdout.contains("MPI_ERR_COMM"), "\(result.stdout)")
    }

    @Test func idleWorkerUsesUnderTenPercentOfACore() throws {
        let result = try GemmaNodeBinary.mpirun(ranks: 2, ["cluster-check", "--repetitions", "2", "--idle-seconds", "2"])
        #expect(result.status == 0, "\(result.all)")
        let line = result.stdout.split(separator: "\n").first { $0.contains("rank 1 (worker)") }
        let percent = line.flatMap { l in
            l.split(separator: ",").last?.split(separator: "%").first.flatMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        }
        #expect(percent != nil, "\(result.stdout)")
        // The budget. Measured ~1% (CPU time of the whole process over wall time);
        // a blocking MPI_Bcast measures ~100%, so this fails if idle waiting regresses.
        #expect((percent ?? 100) < 10, "\(result.stdout)")
    }

    @Test func withoutMpirunIsAWorldOfOne() throws {
        let solo = try GemmaNodeBinary.run(["cluster-check", "--repetitions", "2"])
        #expect(solo.status == 0, "\(solo.all)")
        #expect(solo.stdout.contains("cluster-check: 1 ranks (SoloCommunicator)"))
        // MPI singleton init (no mpirun) must work too.
        let mpi = try GemmaNodeBinary.run(["cluster-check", "--repetitions", "2"], environment: ["GEMMA_NODE_TRANSPORT": "mpi"])
        #expect(mpi.status == 0, "\(mpi.all)")
        #expect(mpi.stdout.contains("cluster-check: 1 ranks (MPICommunicator)"))
        #expect(mpi.stdout.contains("allreduce ok"))
    }

    @Test func reportedCoresFollowCPUAffinity() throws {
        // Under mpirun's binding or taskset a rank may use fewer cores than the machine has;
        // its default thread count must follow.
        let result = try GemmaNodeBinary.launch(URL(fileURLWithPath: "/usr/bin/env"),
                                                ["taskset", "-c", "0", GemmaNodeBinary.url.path, "cluster-check", "--repetitions", "1"],
                                                environment: GemmaNodeBinary.environment(), timeout: 60)
        #expect(result.status == 0, "\(result.all)")
        #expect(result.stdout.contains("cores 1, threads 1,"), "\(result.stdout)")
    }

    /// Every subcommand the binary lists (ArgumentParser's JSON help) is one this suite
    /// expects, and each one's --help exits 0 with its usage.
    @Test func everySubcommandIsListedAndHasHelp() throws {
        let help = try GemmaNodeBinary.run(["--experimental-dump-help"])
        struct Dump: Decodable {
            struct Command: Decodable {
                var commandName: String
                var abstract: String?
                var subcommands: [Command]?
            }
            var command: Command
        }
        let dump = try JSONDecoder().decode(Dump.self, from: Data(help.stdout.utf8))
        let names = (dump.command.subcommands ?? []).map(\.commandName).filter { $0 != "help" }
        #expect(Set(names) == ["generate", "chat", "logits", "perplexity", "tokenize", "serve", "bench", "inspect", "plan", "cluster-check", "synth", "shard"],
                "\(names)")
        // `gemma-node` alone serves; `--help` still lists every command and marks that one.
        let root = try GemmaNodeBinary.run(["--help"])
        #expect(root.status == 0 && root.stdout.contains("serve (default)"), "\(root.all)")
        for name in names { #expect(root.stdout.contains("  \(name)"), "\(name) missing from --help: \(root.stdout)") }
        for name in names {
            let result = try GemmaNodeBinary.run([name, "--help"])
            #expect(result.status == 0, "\(name) --help: \(result.all)")
            #expect(result.stdout.contains("USAGE: gemma-node \(name)"), "\(name) --help: \(result.stdout)")
        }
    }
}
