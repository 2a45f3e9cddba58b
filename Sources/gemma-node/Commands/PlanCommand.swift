// `gemma-node plan`: predicted decode tok/s of a model on 1...N machines joined by a link,
// and the best machine count, from the decode cost model (GemmaModel/DecodeCostModel.swift,
// docs/SCALING.md). A model of a cluster the user does not have: it prints its constants.
import ArgumentParser
import Foundation
import GemmaKernels
import GemmaModel
import GemmaParallel

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Predict decode tok/s on 1...N machines over a link (a cost model, not a measurement).")

    /// Effective memory bandwidth of one decode thread on this machine (AMD EPYC, AVX-512):
    /// the default model reads 0.247 GB of weights per token, and one rank of one thread spent
    /// 37.8 and 32.2 ms of decode compute on it in two `bench` runs (6.5 and 7.7 GB/s; its
    /// bandwidth probe gave 15.6 GB/s). The lower is the default (docs/SCALING.md).
    static let defaultBandwidthGBs = 6.5
    /// s: sampling and step control per token, 0.8 ms at 1 rank on the default model
    /// (docs/SCALING.md, shm sweep). Its vocabulary slice shrinks with ranks; kept constant.
    static let defaultStepMs = 0.8

    @Option(name: [.short, .customLong("model")], help: "GGUF file or Hugging Face model directory. Default: $GEMMA_NODE_MODEL, else the cached Gemma 3 270M.")
    var model: String?

    @Option(name: .customLong("config"), help: "Plan a preset (\(ModelPresets.names.joined(separator: ", "))) or a config.json instead of -m.")
    var configName: String?

    @Option(name: .customLong("quant"), help: "With --config: weight encoding, q4_k (every matrix), q4_k_m (llama.cpp's Q4_K_M mix, as synth writes it), q8_0 or bf16.")
    var quant: String = "q4_k_m"

    @Option(name: .customLong("ranks"), help: "Largest machine (rank) count to predict; 1...N are printed.")
    var ranks: Int = 8

    @Option(name: .customLong("link"), help: "The link: LATENCY_US,GBIT (one-way latency of one message, bandwidth), e.g. 200,1.")
    var link: String

    @Option(name: .customLong("kv-type"), help: "KV-cache element type: f32, f16 (default, as the cache) or q8_0.")
    var kvTypeName: String = "f16"

    @Option(name: .customLong("context"), help: "Tokens cached when the token is decoded (attention reads their K and V).")
    var context: Int = 4096

    @Option(name: .customLong("bandwidth"),
            help: "Effective memory bandwidth of one machine while decoding, GB/s. Default \(defaultBandwidthGBs): one decode thread of the machine it was measured on (docs/SCALING.md).")
    var bandwidthGBs: Double = defaultBandwidthGBs

    @Option(name: .customLong("step-ms"), help: "s: fixed milliseconds per token (sampling, control). Default \(defaultStepMs), from the release sweep (docs/SCALING.md).")
    var stepMs: Double = defaultStepMs

    @Option(name: .customLong("per-rank-ms"),
            help: "k: milliseconds added per machine beyond the first (imbalance). Default 0; the sweep on this 2-core machine fitted 7.9, mostly ranks sharing cores.")
    var perRankMs: Double = 0

    @Option(name: .customLong("memory"), help: "Memory of each machine in GB: rank counts that do not fit it (inspect --machines rules) are marked and not chosen.")
    var memoryGB: Double?

    @Option(name: .customLong("overhead-mb"), help: "With --memory: fixed memory of one rank process, MB.")
    var overheadMB: Double = InspectCommand.defaultOverheadMB

    @Flag(name: .customLong("json"), help: "Print one JSON object instead of text.")
    var json = false

    func validate() throws {
        if ranks < 1 || ranks > 256 { throw ValidationError("--ranks must be 1...256, got \(ranks)") }
        do { _ = try EmulatedLink(parsing: link) } catch {
            throw ValidationError("--link wants LATENCY_US,GBIT (latency 0...1e7 microseconds, bandwidth above 0 and at most 10000 Gbit/s), got \"\(link)\"")
        }
        if PlanQuant.parse(quant) == nil { throw ValidationError("--quant must be \(PlanQuant.names), got \(quant)") }
        _ = try KVTypeOption.parse(kvTypeName)
        if context < 0 { throw ValidationError("--context must be 0 or positive, got \(context)") }
        for (flag, v) in [("--bandwidth", bandwidthGBs)] where !(v > 0 && v.isFinite) { throw ValidationError("\(flag) must be a positive number, got \(v)") }
        for (flag, v) in [("--step-ms", stepMs), ("--per-rank-ms", perRankMs), ("--overhead-mb", overheadMB)] where !(v >= 0 && v.isFinite) {
            throw ValidationError("\(flag) must be 0 or positive, got \(v)")
        }
        if let memoryGB, !(memoryGB > 0 && memoryGB.isFinite) { throw ValidationError("--memory must be a positive number of GB, got \(memoryGB)") }
    }

    /// One row of the answer.
    struct Row: Codable {
        var ranks: Int
        var prediction: DecodeCostModel.Prediction?
        var tokensPerSecond: Double?
        /// Why this rank count cannot be planned (ShardPlan's reason), or does not fit --memory.
        var refused: String?
        var fitsMemory: Bool?
        var split: String?
    }

    struct Answer: Codable {
        var model: String
        var costModel: DecodeCostModel
        var contextTokens: Int
        var kvType: KVCacheType
        var rows: [Row]
        var bestRanks: Int?
        var note: String
    }

    static let note = "a model, not a measurement: t = bytes read per token per rank / bandwidth + s + k (N-1) + all-reduces x (latency + bytes/bandwidth) + control collectives (docs/SCALING.md)"

    func run() throws {
        let kvType = try KVTypeOption.parse(kvTypeName)
        let parsed = try EmulatedLink(parsing: link)
        let source = try ModelPlanSource.resolve(model: model, configName: configName, quant: quant,
                                                 kvType: kvType, batch: 512)
        let cost = DecodeCostModel(bytesPerSecond: bandwidthGBs * 1e9, linkLatency: parsed.latency, linkBytesPerSecond: parsed.bytesPerSecond,
                                   stepSeconds: stepMs / 1e3, perExtraRankSeconds: perRankMs / 1e3)
        var rows: [Row] = []
        for n in 1...ranks {
            let equal = [Double](repeating: 1, count: n)
            var report: ShardReport
            var split: String?
            var fits: Bool?
            do {
                report = try source.plan(n, n == 1 ? nil : equal)
                if let memoryGB {
                    let fit = try MemoryFit.fit(capacities: equal.map { _ in Int(memoryGB * 1e9) }, overheadBytes: Int(overheadMB * 1e6),
                                                contextTokens: context) { try source.plan($0.count, $0) }
                    fits = fit.fits
                    if fit.fits {
                        report = fit.report
                        split = fit.splitText
                    }
                }
            } catch {
                rows.append(Row(ranks: n, refused: "\(error)"))
                continue
            }
            let p = cost.predict(report, contextTokens: context)
            rows.append(Row(ranks: n, prediction: p, tokensPerSecond: p.tokensPerSecond, refused: fits == false ? "does not fit \(MemoryFit.format(memoryGB ?? 0)) GB" : nil,
                            fitsMemory: fits, split: split))
        }
        let best = rows.filter { $0.refused == nil }.max { ($0.tokensPerSecond ?? 0) < ($1.tokensPerSecond ?? 0) }?.ranks
        let what = configName.map { "\($0) at \(quant)" } ?? source.name
        let answer = Answer(model: what, costModel: cost, contextTokens: context, kvType: kvType, rows: rows, bestRanks: best, note: Self.note)
        if json { return try InspectCommand.printJSON(answer) }
        print("plan \(what), \(kvType) KV cache at \(context) tokens; link \(parsed); \(MemoryFit.format(bandwidthGBs)) GB/s per machine, s = \(stepMs) ms, k = \(perRankMs) ms")
        print("PREDICTED: " + Self.note)
        print("ranks | read per token per rank | compute ms | all-reduces x bytes | communication ms | step ms | tok/s")
        for row in rows {
            guard let p = row.prediction else {
                print(String(format: "%5d | cannot split: %@", row.ranks, row.refused ?? ""))
                continue
            }
            var line = String(format: "%5d | %9.3f GB | %10.2f | %4d x %6d | %16.2f | %7.2f | %6.2f",
                              p.ranks, Double(p.readBytesPerToken) / 1e9, p.computeSeconds * 1e3, p.allReduces, p.allReduceBytes,
                              p.communicationSeconds * 1e3, p.stepSeconds * 1e3, p.tokensPerSecond)
            if let fits = row.fitsMemory { line += fits ? " (fits \(MemoryFit.format(memoryGB ?? 0)) GB: --split \(row.split ?? ""))" : " (does not fit \(MemoryFit.format(memoryGB ?? 0)) GB)" }
            print(line)
        }
        if let best, let row = rows.first(where: { $0.ranks == best }) {
            print(String(format: "best: %d rank%@ (%.2f tok/s predicted)", best, best == 1 ? "" : "s", row.tokensPerSecond ?? 0))
        } else {
            print("best: none (no rank count up to \(ranks) can be planned\(memoryGB == nil ? "" : " and fits"))")
        }
    }
}
