// `gemma-node inspect`: the model's architecture and, for a rank count, what each rank would
// own (heads, KV heads, MLP columns, vocabulary) with its bytes of weights and KV cache. Reads
// only config.json and the safetensors headers; runs as one process (no MPI needed).
import ArgumentParser
import Foundation
import GemmaKernels
import GemmaModel

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print the model architecture and what each of N ranks would own.")

    // Its own -m rather than ModelOptions: inspect loads nothing, and its --quant names the
    // planned encoding (q4_k included), not a quantize-on-load type.
    @Option(name: [.short, .customLong("model")],
            help: "Hugging Face model directory to plan. Default: $GEMMA_NODE_MODEL, else the cached Gemma 3 270M.")
    var model: String?

    @Option(name: .customLong("ranks"), help: "Number of ranks to plan for (default: the number of --split shares, else 1).")
    var ranksOption: Int?

    @Option(name: .customLong("split"), help: SplitOption.help)
    var split: String?

    /// --ranks, else one rank per --split share, else 1.
    var ranks: Int { ranksOption ?? ((try? SplitOption.parse(split))??.count ?? 1) }
    var shares: [Double]? { (try? SplitOption.parse(split)) ?? nil }

    @Option(name: .customLong("kv-type"), help: KVTypeOption.help)
    var kvTypeName: String = "f16"

    var kvType: KVCacheType { (try? KVTypeOption.parse(kvTypeName)) ?? .f16 }

    @Option(name: .customLong("batch"), help: "Tokens per step (sizes the sliding-window KV ring).")
    var batch: Int = 512

    @Flag(name: .customLong("json"), help: "Print one JSON object instead of text.")
    var json = false

    @Option(name: .customLong("config"),
            help: "Plan from a config alone instead of -m: a shipped preset (\(ModelPresets.names.joined(separator: ", ")); the \"gemma-4-\" prefix may be left out) or a config.json path.")
    var configName: String?

    @Option(name: .customLong("quant"), help: "With --config: weight encoding of every matrix, q4_k, q8_0 or bf16.")
    var quant: String = "bf16"

    @Option(name: .customLong("fit"), help: "With --config: memory per machine in GB (10^9 bytes); prints the fewest ranks whose largest share fits.")
    var fitGB: Double?

    @Option(name: .customLong("context"), help: "With --fit: tokens of one sequence's KV cache to leave room for.")
    var context: Int = 4096

    func validate() throws {
        if ranks < 1 { throw ValidationError("--ranks must be at least 1, got \(ranks)") }
        if let shares = try SplitOption.parse(split), shares.count != ranks {
            throw ValidationError("--split has \(shares.count) shares but --ranks is \(ranks): give one share per rank")
        }
        if split != nil && fitGB != nil { throw ValidationError("--fit chooses its own split; leave out --split") }
        _ = try KVTypeOption.parse(kvTypeName)
        if batch < 1 { throw ValidationError("--batch must be at least 1, got \(batch)") }
        if Self.weightType(quant) == nil { throw ValidationError("--quant must be q4_k, q8_0 or bf16, got \(quant)") }
        if let fitGB, !(fitGB > 0) { throw ValidationError("--fit must be a positive number of GB") }
        if context < 0 { throw ValidationError("--context must be 0 or positive, got \(context)") }
        if configName == nil && fitGB != nil { throw ValidationError("--fit needs --config") }
    }

    static func weightType(_ name: String) -> WeightType? {
        switch name.lowercased() {
        case "q4_k", "q4_k_m": return .q4_K
        case "q8_0": return .q8_0
        case "bf16": return .bf16
        default: return nil
        }
    }

    /// --config: a preset name or a config.json file.
    func runPreset(_ name: String) throws {
        let config: GemmaConfig
        do {
            if let preset = try ModelPresets.config(named: name) {
                config = preset
            } else if let data = FileManager.default.contents(atPath: name) {
                config = try JSONDecoder().decode(GemmaConfig.self, from: data)
            } else if FileManager.default.fileExists(atPath: name) {
                config = try GemmaConfig.load(directory: URL(fileURLWithPath: name))   // a model directory
            } else {
                throw InspectError(message: "unknown preset \"\(name)\" (presets: \(ModelPresets.names.joined(separator: ", "))) and no such config file")
            }
        } catch let error as InspectError {
            throw error
        } catch {
            throw InspectError(message: "cannot read config \(name): \(error)")
        }
        let type = Self.weightType(quant) ?? .bf16
        let report: ShardReport
        if let fitGB {
            let limit = Int(fitGB * 1e9)
            guard let fit = ShardReport.fewestRanks(config: config, weightType: type, bytesPerRank: limit, contextTokens: context, kvType: kvType) else {
                throw InspectError(message: "\(name) at \(quant) does not fit in \(fitGB) GB per rank with \(context) tokens of context at up to 64 ranks")
            }
            report = fit
            if !json {
                print("fewest ranks of \(fitGB) GB for \(name) at \(quant) with \(context) tokens of context: \(fit.ranks) (largest rank \(String(format: "%.2f", Double(fit.peakRankBytes(contextTokens: context)) / 1e9)) GB)")
            }
        } else {
            do {
                report = try ShardReport(config: config, ranks: ranks, weightType: type, maxBatchTokens: batch, split: shares, kvType: kvType)
            } catch {
                throw InspectError(message: "cannot plan \(name) for \(ranks) rank\(ranks == 1 ? "" : "s"): \(error)")
            }
        }
        try emit(report)
    }

    func emit(_ report: ShardReport) throws {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text)
        }
    }

    func run() throws {
        if let configName { return try runPreset(configName) }
        let path = model ?? DefaultModel.path().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw InspectError(message: "\(path) is neither a GGUF file nor a Hugging Face model directory")
        }
        let report: ShardReport
        do {
            let url = URL(fileURLWithPath: path)
            report = isDirectory.boolValue ? try ShardReport(directory: url, ranks: ranks, maxBatchTokens: batch, split: shares, kvType: kvType)
                                           : try ShardReport(gguf: url, ranks: ranks, maxBatchTokens: batch, split: shares, kvType: kvType)
        } catch {
            throw InspectError(message: "cannot plan \(path) for \(ranks) rank\(ranks == 1 ? "" : "s"): \(error)")
        }
        try emit(report)
    }
}

struct InspectError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
