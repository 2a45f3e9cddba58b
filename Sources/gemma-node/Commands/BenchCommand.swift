// `gemma-node bench`: prefill and decode speed of the whole cluster (llama-bench's pp/tg), where
// each rank's decode step time goes, peak RSS per rank, and the fraction of the memory-bandwidth
// roofline reached. Runs the real engine (StepExecutor/Coordinator) on a synthetic prompt with
// greedy sampling and no stop tokens, so every repetition does exactly the same work.
import ArgumentParser
import Foundation
import GemmaEngine
import GemmaKernels
import GemmaModel
import GemmaParallel
import GemmaWire

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure prefill and decode speed, per-rank step time split, peak RSS and roofline fraction."
    )

    @OptionGroup var linkOptions: LinkOptions

    @OptionGroup var timeoutOptions: TimeoutOptions

    @OptionGroup var syncOptions: SyncOptions


    @OptionGroup var file: ModelFileOptions

    @OptionGroup var placement: PlacementOptions

    @Option(name: [.customShort("p"), .customLong("n-prompt")], help: "Prompt tokens (prefill, one step).")
    var nPrompt: Int = 128

    @Option(name: [.customShort("n"), .customLong("n-gen")], help: "Decode steps per repetition.")
    var nGen: Int = 64

    @Option(name: [.customShort("r"), .customLong("repetitions")], help: "Repetitions (median, min, max are reported).")
    var repetitions: Int = 5

    @Option(name: [.customShort("c"), .customLong("ctx-size")], help: "Context per slot (0 = prompt + generated tokens).")
    var ctxSize: Int = 0

    @Option(name: .customLong("bandwidth-mib"), help: "Buffer streamed by the bandwidth probe, MiB over all ranks (0 = skip).")
    var bandwidthMiB: Int = 1024

    @Flag(name: .customLong("no-warmup"), help: "Skip the short warm-up generation.")
    var noWarmup = false

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        if nPrompt < 2 { throw ValidationError("-p/--n-prompt must be at least 2 (one-token steps count as decode), got \(nPrompt)") }
        if nGen < 1 { throw ValidationError("-n/--n-gen must be at least 1, got \(nGen)") }
        if repetitions < 1 { throw ValidationError("-r/--repetitions must be at least 1, got \(repetitions)") }
        if ctxSize < 0 { throw ValidationError("-c/--ctx-size must be 0 or positive, got \(ctxSize)") }
        if bandwidthMiB < 0 { throw ValidationError("--bandwidth-mib must be 0 or positive, got \(bandwidthMiB)") }
    }

    var modelPath: String { file.resolvedModelPath }

    func run() throws {
        try ClusterSession.run(link: try linkOptions.link(), sync: try syncOptions.payload(), stepTimeout: timeoutOptions.stepTimeout) { raw in
            let comm = TimedCommunicator(raw)
            let threadCount = file.resolvedThreads
            // Context for prompt + generated tokens + the token sampled last (never fed back).
            let context = ctxSize > 0 ? ctxSize : nPrompt + nGen + 2
            let options = placement.loadOptions(maxContext: context, threads: threadCount, maxBatchTokens: min(512, nPrompt))
            _ = try StartupHandshake.run(comm, modelPath: modelPath, threads: threadCount, fromRoot: placement.weightsFromRoot)
            // Load time without the handshake (comparable with earlier runs).
            let loadStart = benchNow()
            let shard = try GemmaShard.load(path: URL(fileURLWithPath: modelPath), comm: comm, options: options)
            let loadSeconds = Double(benchNow() - loadStart) / 1e9
            guard nPrompt <= shard.maxBatchTokens, nPrompt + nGen + 1 <= shard.maxContext else {
                throw BenchError.tooLong(prompt: nPrompt, gen: nGen, context: shard.maxContext, batch: shard.maxBatchTokens)
            }
            let model = TimingModel(shard, comm: comm)
            // Summed over ranks from what each holds, so it works whether a rank read the file,
            // its shard file or received its slices from rank 0.
            let bytesPerToken = Int(try comm.allGather([Float(shard.weightBytesReadPerToken)]).reduce(0.0) { $0 + Double($1) })
            let prompt = Self.prompt(count: nPrompt, vocab: model.sampleableVocab)
            func request(_ p: [Int32], _ n: Int) -> GenerationRequest {
                // n + 1 new tokens = one sampled after the prompt, then n decode steps.
                GenerationRequest(id: 0, promptTokens: p, maxNewTokens: n + 1,
                                  sampling: SamplingParams(temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0))
            }
            if !noWarmup {
                _ = try Self.session(model: model, comm: comm, requests: [request(Array(prompt.prefix(8)), 4)])
            }
            model.reset()
            let reps = try Self.session(model: model, comm: comm,
                                        requests: Array(repeating: request(prompt, nGen), count: repetitions))
            // What the resident set is made of now (after the runs, before the probe): where
            // the peak comes from when, as here, the peak is the loaded steady state. Read
            // before the peak, so anon + file <= peak always holds.
            let anonRSS = ProcessStats.residentAnonymousBytes ?? 0, fileRSS = ProcessStats.residentFileBytes ?? 0
            let peakRSS = ProcessStats.peakResidentBytes ?? 0

            var bandwidth = 0.0
            if bandwidthMiB > 0 {
                bandwidth = try measureReadBandwidth(bytes: (bandwidthMiB << 20) / comm.size, passes: 3, pool: shard.pool,
                                                     beforePass: { try comm.barrier() })
            }
            let d = model.decode, p = model.prefill
            let record: [Float] = [
                Float(d.milliseconds(d.totalNanos)), Float(d.milliseconds(d.computeNanos)),
                Float(d.milliseconds(d.forwardCollectiveNanos)), Float(d.milliseconds(d.otherNanos)),
                Float(d.milliseconds(d.planWaitNanos)), Float(p.milliseconds(p.totalNanos)),
                Float(Double(peakRSS) / 1048576), Float(bandwidth / 1e9), Float(d.steps),
                Float(Double(anonRSS) / 1048576), Float(Double(fileRSS) / 1048576),
                Float(d.steps > 0 ? Double(d.allReduceCalls) / Double(d.steps) : 0),
                Float(d.steps > 0 ? Double(d.allReduceBytes) / Double(d.steps) : 0),
                Float(p.steps > 0 ? Double(p.allReduceCalls) / Double(p.steps) : 0),
                Float(p.steps > 0 ? Double(p.allReduceBytes) / Double(p.steps) : 0),
                Float(p.milliseconds(p.forwardCollectiveNanos)),
            ]
            let all = try comm.allGather(record)
            guard let reps else { return }
            let ranks = (0..<comm.size).map { Array(all[($0 * record.count)..<(($0 + 1) * record.count)]) }
            let report = BenchReport(
                model: modelPath, ranks: comm.size, threads: threadCount, nPrompt: nPrompt, nGen: nGen,
                kernels: Kernels.active.rawValue, kvType: options.kvType.rawValue, loadSeconds: loadSeconds,
                prefill: reps.map { $0.prefillTokensPerSecond }, decode: reps.map { $0.decodeTokensPerSecond },
                perRank: ranks, bytesPerToken: bytesPerToken,
                bandwidth: bandwidthMiB > 0 ? ranks.reduce(0) { $0 + Double($1[7]) * 1e9 } : nil,
                loadAverage: ProcessStats.loadAverage, cpu: ProcessStats.cpuModel,
                emulatedLink: try linkOptions.link()?.description, syncType: try syncOptions.payload().rawValue)
            print(json ? report.json() : report.table())
        }
    }

    /// A fixed prompt: BOS (2) then ids spread over the vocabulary, away from the low special ids.
    static func prompt(count: Int, vocab: Int) -> [Int32] {
        let span = max(vocab - 110, 1)
        return (0..<count).map { i in i == 0 ? Int32(min(2, vocab - 1)) : Int32(100 + (i * 7919) % span) }
    }

    /// One engine session: every rank executes plans until rank 0 shuts the workers down.
    /// Rank 0 runs the request lists one after another and returns each one's timings.
    static func session(model: TimingModel, comm: any Communicator, requests: [GenerationRequest]) throws -> [EngineTimings]? {
        let session = try GenerationSession(model: model, comm: comm)
        guard comm.isCoordinator else {
            try session.serveWorker()
            model.discardOpenStep()
            return nil
        }
        var out: [EngineTimings] = []
        do {
            for r in requests {
                let before = session.timings
                let result = try session.generate(r)
                guard result.tokens.count == r.maxNewTokens else {
                    throw BenchError.shortGeneration(wanted: r.maxNewTokens, got: result.tokens.count)
                }
                let after = session.timings
                var t = EngineTimings()
                t.prefillTokens = after.prefillTokens - before.prefillTokens
                t.prefillSeconds = after.prefillSeconds - before.prefillSeconds
                t.decodeTokens = after.decodeTokens - before.decodeTokens
                t.decodeSeconds = after.decodeSeconds - before.decodeSeconds
                out.append(t)
            }
        } catch {
            try session.fail(error)
        }
        model.discardOpenStep()
        try session.finish()
        model.discardOpenStep()
        return out
    }
}

enum BenchError: Error, CustomStringConvertible {
    case tooLong(prompt: Int, gen: Int, context: Int, batch: Int)
    case shortGeneration(wanted: Int, got: Int)

    var description: String {
        switch self {
        case let .tooLong(p, n, c, b):
            return "a \(p)-token prompt and \(n) generated tokens need a context of \(p + n + 1) and a batch of \(p); the model allows \(c) and \(b)"
        case let .shortGeneration(wanted, got):
            return "generation stopped after \(got) of \(wanted) tokens (context too small?)"
        }
    }
}

/// What `bench` prints.
struct BenchReport {
    let model: String
    let ranks: Int, threads: Int, nPrompt: Int, nGen: Int
    let kernels: String
    /// `--kv-type` (the KV cache's element type).
    let kvType: String
    let loadSeconds: Double
    /// Tokens per second of each repetition.
    let prefill: [Double], decode: [Double]
    /// Per rank: decode step ms (total, compute, all-reduce, sampling+control, plan wait),
    /// prefill step ms, peak RSS MiB, probe GB/s, decode steps, anonymous and file-backed RSS
    /// MiB after the runs, sum all-reduces per decode step and their bytes, the same per
    /// prefill step, prefill all-reduce ms.
    let perRank: [[Float]]
    let bytesPerToken: Int
    /// Bytes per second all ranks streamed together; nil when skipped.
    let bandwidth: Double?
    let loadAverage: Double?
    let cpu: String?
    /// `--emulate-link`'s link (its collectives' times are modelled, not measured), nil when off.
    var emulatedLink: String? = nil
    /// `--sync-type`: the payload of the model's all-reduces (f32 is exact).
    var syncType: String = "f32"

    static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        guard !s.isEmpty else { return 0 }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    var rooflineTokensPerSecond: Double? {
        guard let bandwidth, bytesPerToken > 0 else { return nil }
        return bandwidth / Double(bytesPerToken)
    }

    func json() -> String {
        let j = JSONText()
        func stats(_ xs: [Double]) {
            j.object {
                j.key("median"); j.double(Self.median(xs))
                j.key("min"); j.double(xs.min() ?? 0)
                j.key("max"); j.double(xs.max() ?? 0)
                j.key("samples"); j.array(xs) { j.double($0) }
            }
        }
        j.object {
            j.key("model"); j.string(model)
            j.key("ranks"); j.int(ranks)
            j.key("threads_per_rank"); j.int(threads)
            j.key("n_prompt"); j.int(nPrompt)
            j.key("n_gen"); j.int(nGen)
            j.key("kernels"); j.string(kernels)
            j.key("kv_type"); j.string(kvType)
            j.key("load_seconds"); j.double(loadSeconds)
            j.key("prefill_tokens_per_second"); stats(prefill)
            j.key("decode_tokens_per_second"); stats(decode)
            j.key("per_rank")
            j.array(Array(perRank.enumerated())) { item in
                let (rank, r) = item
                j.object {
                    j.key("rank"); j.int(rank)
                    j.key("decode_step_ms")
                    j.object {
                        j.key("total"); j.double(Double(r[0]))
                        j.key("compute"); j.double(Double(r[1]))
                        j.key("all_reduce"); j.double(Double(r[2]))
                        j.key("sampling_and_control"); j.double(Double(r[3]))
                        j.key("waiting_for_plan"); j.double(Double(r[4]))
                    }
                    j.key("prefill_step_ms"); j.double(Double(r[5]))
                    j.key("peak_rss_mib"); j.double(Double(r[6]))
                    j.key("bandwidth_gb_per_s"); j.double(Double(r[7]))
                    j.key("decode_steps"); j.int(Int(r[8]))
                    j.key("rss_anon_mib"); j.double(Double(r[9]))
                    j.key("rss_file_mib"); j.double(Double(r[10]))
                    j.key("decode_all_reduces_per_step"); j.double(Double(r[11]))
                    j.key("decode_all_reduce_bytes_per_step"); j.double(Double(r[12]))
                    j.key("prefill_all_reduces_per_step"); j.double(Double(r[13]))
                    j.key("prefill_all_reduce_bytes_per_step"); j.double(Double(r[14]))
                    j.key("prefill_all_reduce_ms"); j.double(Double(r[15]))
                }
            }
            j.key("weight_bytes_per_token"); j.int(bytesPerToken)
            j.key("bandwidth_gb_per_s"); if let bandwidth { j.double(bandwidth / 1e9) } else { j.string(nil) }
            j.key("roofline_tokens_per_second"); if let r = rooflineTokensPerSecond { j.double(r) } else { j.string(nil) }
            j.key("roofline_fraction")
            if let r = rooflineTokensPerSecond { j.double(Self.median(decode) / r) } else { j.string(nil) }
            j.key("load_average"); if let l = loadAverage { j.double(l) } else { j.string(nil) }
            j.key("cpu"); j.string(cpu)
            j.key("emulated_link"); j.string(emulatedLink)
            j.key("sync_type"); j.string(syncType)
        }
        return j.text
    }

    func table() -> String {
        func f(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
        func row(_ name: String, _ xs: [Double]) -> String {
            "\(name): median \(f(Self.median(xs))) tok/s (min \(f(xs.min() ?? 0)), max \(f(xs.max() ?? 0)), \(xs.count) reps)"
        }
        var lines: [String] = ([
            "model \(model): \(ranks) rank(s) x \(threads) thread(s), kernels \(kernels), KV cache \(kvType), load \(f(loadSeconds, 2)) s, load average \(loadAverage.map { f($0, 2) } ?? "?")",
            emulatedLink.map { "EMULATED link \($0): every collective also waited the modelled time of that link" },
            syncType == "f32" ? nil : "all-reduce payload \(syncType) (--sync-type)",
            row("pp\(nPrompt)", prefill),
            row("tg\(nGen)", decode),
            "rank  decode step ms: total  compute  all-reduce  sampling+control  plan wait | prefill step ms | peak RSS MiB (now: anon + file)",
        ] as [String?]).compactMap { $0 }
        for (i, r) in perRank.enumerated() {
            lines.append(String(format: "%4d  %21.3f  %7.3f  %10.3f  %16.3f  %9.3f | %15.1f | %12.1f (%.1f + %.1f)", i,
                                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[9], r[10]))
        }
        if let bandwidth, let roof = rooflineTokensPerSecond {
            lines.append("roofline: \(f(Double(bytesPerToken) / 1e6)) MB of weights per token, probe \(f(bandwidth / 1e9)) GB/s "
                         + "-> \(f(roof)) tok/s; decode reaches \(f(100 * Self.median(decode) / roof))%")
        }
        return lines.joined(separator: "\n")
    }
}
