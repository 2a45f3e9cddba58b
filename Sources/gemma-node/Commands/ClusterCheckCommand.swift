// `gemma-node cluster-check`: proves a cluster works before a model is loaded. Ranks shake
// hands (protocol version, model fingerprint), report themselves, all-reduce results are
// verified exactly, StepPlans are broadcast and compared on every rank, latency and bandwidth
// are measured at activation-sized buffers, and hidden flags exercise the failure and idle
// paths for tests.
import ArgumentParser
import Foundation
import GemmaEngine
import GemmaMPI
import GemmaParallel
import GemmaWire

struct ClusterCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster-check",
        abstract: "Check that every rank is reachable, verify all-reduce results and measure its latency and bandwidth."
    )

    @OptionGroup var linkOptions: LinkOptions

    @OptionGroup var timeoutOptions: TimeoutOptions


    @Option(name: [.short, .customLong("threads")], help: "Compute threads per rank to report. Default: the cores this rank may run on, divided by the ranks on this host.")
    var threads: Int?

    @Option(name: [.short, .customLong("model")], help: "Also check that every rank sees the same model file or directory (by fingerprint).")
    var model: String?

    @Option(help: "Timed all-reduce calls per buffer size (the median is reported).")
    var repetitions: Int = 50

    @Option(help: "Comma-separated all-reduce sizes in floats.")
    var sizes: String = "640,2048,5376,16384,65536"

    @Option(help: ArgumentHelp("Rank that reports an injected error (tests the agreed-failure path).", visibility: .hidden))
    var failRank: Int?

    @Option(help: ArgumentHelp("Rank that throws outside any agreement while the others wait (tests the abort path).", visibility: .hidden))
    var crashRank: Int?

    @Option(help: ArgumentHelp("Workers wait this long for a broadcast and report their CPU use.", visibility: .hidden))
    var idleSeconds: Double?

    @Flag(help: ArgumentHelp("With --idle-seconds: wait in a blocking broadcast instead (for comparison).", visibility: .hidden))
    var idleBlocking = false

    @Flag(help: ArgumentHelp("Make one invalid MPI call and print the typed error it gives.", visibility: .hidden))
    var probeMpiError = false

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("-t/--threads must be at least 1, got \(threads)") }
        if repetitions < 1 { throw ValidationError("--repetitions must be at least 1") }
        if parsedSizes == nil { throw ValidationError("--sizes must be a comma-separated list of positive integers, got \"\(sizes)\"") }
        if let idleSeconds, !(idleSeconds >= 0 && idleSeconds <= 3600) { throw ValidationError("--idle-seconds must be in 0...3600") }
    }

    private var parsedSizes: [Int]? {
        let values = sizes.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        return values.compactMap { $0 }
    }

    func run() throws {
        let sizes = parsedSizes ?? []
        try ClusterSession.run(link: try linkOptions.link(), stepTimeout: timeoutOptions.stepTimeout) { comm in
            let hellos = try StartupHandshake.run(comm, modelPath: model, threads: threads ?? HostInfo.defaultThreads)
            let world = try exchangeReports(comm)
            if comm.isCoordinator {
                printWorld(world, comm: comm)
                print("handshake ok: protocol version \(hellos[0].protocolVersion), model \(hellos[0].modelFingerprint)")
            }

            try comm.agree(comm.rank == failRank ? InjectedFailure(rank: comm.rank) : nil)
            if comm.rank == crashRank { throw InjectedFailure(rank: comm.rank) }
            try comm.barrier()

            let verified = try comm.agreeOn { try verifyAllReduce(comm, sizes: sizes) }
            if comm.isCoordinator {
                print("allreduce ok: sums and maxima exact at \(verified) sizes, results bit-identical on all \(comm.size) ranks")
            }

            try checkStepPlans(comm)
            try benchmark(comm, sizes: sizes)
            if let idleSeconds { try measureIdle(comm, seconds: idleSeconds) }
            if probeMpiError, comm.isCoordinator {
                let outcome = (comm as? MPICommunicator)?.probeErrorPath().map { "\($0)" } ?? "no error (not MPI, or MPI accepted the call)"
                print("mpi error path: \(outcome)")
            }
            if comm.isCoordinator { print("cluster-check ok") }
        }
    }

    // MARK: world report

    struct RankReport: Codable {
        var rank: Int
        var host: String
        var cores: Int
        var threads: Int
        var pid: Int32
    }

    /// Every rank learns every rank's report: one broadcast per rank, in rank order.
    private func exchangeReports(_ comm: any Communicator) throws -> [RankReport] {
        let mine = RankReport(rank: comm.rank, host: HostInfo.hostName, cores: HostInfo.availableCores,
                              threads: threads ?? HostInfo.defaultThreads, pid: getpid())
        let encoded = try JSONEncoder().encode(mine)
        var reports: [RankReport] = []
        for root in 0..<comm.size {
            let bytes = try comm.broadcast(Array(encoded), root: root, idle: false)
            reports.append(try JSONDecoder().decode(RankReport.self, from: Data(bytes)))
        }
        return reports
    }

    private func printWorld(_ world: [RankReport], comm: any Communicator) {
        let transport = String(describing: type(of: comm))
        print("cluster-check: \(comm.size) ranks (\(transport))")
        for r in world {
            print("  rank \(r.rank): host \(r.host), cores \(r.cores), threads \(r.threads), pid \(r.pid)")
        }
    }

    // MARK: correctness

    /// Exact checks: integer-valued sums and maxima (exact in Float below 2^24), then a
    /// non-integer sum whose bits every rank compares through a hash gathered from all ranks.
    /// A rank that sees a wrong value keeps taking part in every collective (so no rank is
    /// left waiting) and throws at the end; the caller agrees on the outcome.
    /// Returns how many sizes were checked.
    private func verifyAllReduce(_ comm: any Communicator, sizes: [Int]) throws -> Int {
        let n = comm.size, r = comm.rank
        var problem: String?
        func note(_ text: String) { if problem == nil { problem = text } }
        for count in sizes {
            var sum = (0..<count).map { Float($0 % 1000 + r * 1000) }
            try sum.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
            for i in 0..<count {
                let expected = Float(n * (i % 1000) + 1000 * n * (n - 1) / 2)
                if sum[i] != expected {
                    note("allreduce sum of \(count) floats: element \(i) is \(sum[i]) on rank \(r), expected \(expected)")
                    break
                }
            }
            var maximum = (0..<count).map { Float(r * 7 + $0 % 5) - 3 }
            try maximum.withUnsafeMutableBufferPointer { try comm.allReduceMax($0) }
            for i in 0..<count where maximum[i] != Float((n - 1) * 7 + i % 5) - 3 {
                note("allreduce max of \(count) floats: element \(i) is \(maximum[i]) on rank \(r)")
                break
            }
            var mixed = (0..<count).map { Float(sin(Double($0 &* 31 &+ r &* 17))) * Float(1 + r % 3 * 1000) }
            try mixed.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
            let hash = fnv1a(mixed)
            // 48 bits of the hash as three exactly representable floats.
            let record = (0..<3).map { Float((hash >> (16 * UInt64($0))) & 0xFFFF) }
            let all = try comm.allGather(record)
            for other in 0..<n where Array(all[other * 3 ..< other * 3 + 3]) != record {
                note("allreduce sum of \(count) floats: rank \(other) got different bits than rank \(r)")
                break
            }
        }
        if let problem { throw CheckFailure(problem) }
        return sizes.count
    }

    // MARK: control plane

    /// Plans like the engine's: one decode token, a 16-sequence decode batch, a 512-token
    /// prefill chunk, and a shutdown. Built the same way on every rank.
    static func samplePlans() -> [StepPlan] {
        let sampling = SamplingParams(temperature: 0.7, topK: 64, topP: 0.95, minP: 0.05, seed: 42)
        let single = StepPlan(stepId: 1, work: [
            SequenceWork(slot: 0, requestId: 7, tokenIds: [1234], startPosition: 17, sampling: sampling, stepIndexInSequence: 3),
        ])
        var decodes: [SequenceWork] = []
        for i in 0..<16 {
            let token = Int32(i * 37 + 5)
            decodes.append(SequenceWork(slot: UInt32(i), requestId: UInt64(100 + i), tokenIds: [token],
                                        startPosition: UInt32(100 + i), sampling: sampling, stepIndexInSequence: UInt64(i)))
        }
        let batch = StepPlan(stepId: 2, work: decodes, freeSlots: [16, 17])
        var prompt: [Int32] = []
        for i in 0..<512 { prompt.append(Int32((i * 7919) % 262_144)) }
        let chunk = SequenceWork(slot: 18, requestId: 9, tokenIds: prompt, startPosition: 0,
                                 isPrefillChunk: true, wantLogits: false, sampling: sampling)
        let prefill = StepPlan(stepId: 3, work: [chunk])
        let shutdown = StepPlan(stepId: 4, shutdown: true, shutdownReason: "cluster-check done")
        return [single, batch, prefill, shutdown]
    }

    /// The coordinator broadcasts each plan as a worker would wait for it (idle broadcast);
    /// every rank decodes it, compares it with the plan it expects, and prints a hash of the
    /// decoded plan (re-encoded), so a test can see the plans are identical everywhere.
    private func checkStepPlans(_ comm: any Communicator) throws {
        let plans = Self.samplePlans()
        var hashes: [UInt64] = []
        var problem: String?
        var bytesSent = 0
        for plan in plans {
            let bytes = try comm.broadcastPlan(comm.isCoordinator ? plan.encode() : [])
            bytesSent += bytes.count
            do {
                let decoded = try StepPlan.decode(bytes)
                if decoded != plan, problem == nil { problem = "StepPlan \(plan.stepId) decoded differently on rank \(comm.rank)" }
                var hasher = FNV1a()
                hasher.add(decoded.encode())
                hashes.append(hasher.value)
            } catch {
                if problem == nil { problem = "StepPlan \(plan.stepId) undecodable on rank \(comm.rank): \(error)" }
                hashes.append(0)
            }
        }
        print("stepplans rank \(comm.rank): \(hashes.map { String($0, radix: 16) }.joined(separator: " "))")
        // All ranks compare a digest of their hashes (48 bits as three exact floats).
        var digest = FNV1a()
        for h in hashes { digest.add(withUnsafeBytes(of: h.littleEndian) { Array($0) }) }
        let record = (0..<3).map { Float((digest.value >> (16 * UInt64($0))) & 0xFFFF) }
        let all = try comm.allGather(record)
        for other in 0..<comm.size where problem == nil && Array(all[other * 3 ..< other * 3 + 3]) != record {
            problem = "rank \(other) decoded different StepPlans than rank \(comm.rank)"
        }
        try comm.agree(problem.map { CheckFailure($0) })
        if comm.isCoordinator {
            print("stepplans ok: \(plans.count) plans (\(bytesSent) bytes) decoded identically on all \(comm.size) ranks")
        }
        try measurePlanLatency(comm, plan: plans[1])
    }

    /// Control-plane cost per step: the coordinator broadcasts an encoded plan the way the
    /// engine does (idle broadcast, workers decode it) and all ranks then all-reduce one
    /// float, which stands for the first collective of the forward pass. The coordinator's
    /// median per round is printed.
    private func measurePlanLatency(_ comm: any Communicator, plan: StepPlan) throws {
        let encoded = plan.encode()
        var times: [Double] = []
        var ack: [Float] = [0]
        for round in 0..<(repetitions + 5) {
            let start = monotonicSeconds()
            let bytes = try comm.broadcastPlan(comm.isCoordinator ? encoded : [])
            _ = try? StepPlan.decode(bytes)  // correctness was checked above; this is timing
            try ack.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
            if round >= 5 { times.append(monotonicSeconds() - start) }  // 5 warm-up rounds
        }
        if comm.isCoordinator {
            let us = String(format: "%.1f", median(times) * 1e6)
            print("plan round trip: \(plan.work.count)-sequence plan (\(encoded.count) bytes) broadcast + decode + 1-float all-reduce, median \(us) us")
        }
    }

    // MARK: performance

    /// Median per-call time per size on each rank; the coordinator prints the slowest rank's
    /// median (an all-reduce is only as fast as its slowest participant).
    private func benchmark(_ comm: any Communicator, sizes: [Int]) throws {
        if comm.isCoordinator {
            print("allreduce latency and bandwidth (median of \(repetitions) calls; slowest rank):")
            print("  floats      bytes   median us   algbw GB/s   busbw GB/s")
        }
        for count in sizes {
            var buffer = [Float](repeating: 0, count: count)  // zeros: sums stay finite however often repeated
            var times: [Double] = []
            try buffer.withUnsafeMutableBufferPointer { buf in
                for _ in 0..<min(10, repetitions) { try comm.allReduceSum(buf) }  // warm-up
                try comm.barrier()
                for _ in 0..<repetitions {
                    let start = monotonicSeconds()
                    try comm.allReduceSum(buf)
                    times.append(monotonicSeconds() - start)
                }
            }
            var slowest = [Float(median(times))]
            try slowest.withUnsafeMutableBufferPointer { try comm.allReduceMax($0) }
            if comm.isCoordinator {
                let seconds = Double(slowest[0])
                let bytes = count * MemoryLayout<Float>.size
                let algbw = Double(bytes) / seconds / 1e9
                // nccl-tests' bus bandwidth: what each link carries in a ring all-reduce.
                let busbw = algbw * 2 * Double(comm.size - 1) / Double(comm.size)
                let latency = String(format: "  %6d  %9d  %10.1f", count, bytes, seconds * 1e6)
                // A world of one moves no data: bandwidth figures would be meaningless.
                print(comm.size == 1 ? latency + "            -            -"
                                     : latency + String(format: "  %11.3f  %11.3f", algbw, busbw))
            }
        }
    }

    /// The coordinator sleeps while every other rank waits for its broadcast; each rank
    /// reports the CPU time (all threads, user + system) it used over the wall time waited.
    private func measureIdle(_ comm: any Communicator, seconds: Double) throws {
        try comm.barrier()
        let cpuStart = processCPUSeconds(), wallStart = monotonicSeconds()
        if comm.isCoordinator {
            Thread.sleep(forTimeInterval: seconds)
            _ = try comm.broadcast([1], root: 0, idle: !idleBlocking)
        } else {
            _ = try comm.broadcast([], root: 0, idle: !idleBlocking)
        }
        let wall = monotonicSeconds() - wallStart, cpu = processCPUSeconds() - cpuStart
        let shares = try comm.allGather([Float(cpu / wall * 100), Float(wall)])
        if comm.isCoordinator {
            let mode = idleBlocking ? "blocking MPI broadcast" : "idle broadcast (poll + sleep back-off)"
            print("idle wait, \(mode):")
            for r in 0..<comm.size {
                let role = r == 0 ? "coordinator, sleeping" : "worker"
                let figures = String(format: "%.2f s waited, %.1f%% of a core", Double(shares[2 * r + 1]), Double(shares[2 * r]))
                print("  rank \(r) (\(role)): \(figures)")
            }
        }
    }
}

struct InjectedFailure: Error, CustomStringConvertible {
    let rank: Int
    var description: String { "injected failure on rank \(rank) (test hook)" }
}

struct CheckFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

private func fnv1a(_ values: [Float]) -> UInt64 {
    var hasher = FNV1a()
    for v in values { hasher.add(withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) }) }
    return hasher.value
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    let mid = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// User + system CPU time of the whole process (all threads, MPI's own included).
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
