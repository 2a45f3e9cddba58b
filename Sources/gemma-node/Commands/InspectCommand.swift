// `gemma-node inspect`: the model's architecture and, for a rank count, what each rank would
// own (heads, KV heads, MLP columns, vocabulary) with its bytes of weights and KV cache; with
// `--fit` a `--split` that fits a list of machines, with `--machines` the fewest machines of
// one size. Reads only config.json and the safetensors or GGUF headers; runs as one process
// (no MPI needed).
import ArgumentParser
import Foundation
import GemmaKernels
import GemmaModel

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print the model architecture and what each of N ranks would own; fit a split to machines' memory.")

    /// Fixed resident memory of one rank beyond its planned weights and KV cache (Swift and
    /// Open MPI runtimes, scratch buffers; rank 0 also the tokenizer): peak RSS minus planned
    /// weights was 61-62 MB on rank 0 and 43 MB on the others, for the default model and a
    /// synthetic gemma-3-1b at 1, 2 and 4 ranks (docs/LARGE_MODELS.md, "The planner against
    /// real loads"); rounded up to 64.
    static let defaultOverheadMB = 64.0

    // Its own -m rather than ModelOptions: inspect loads nothing, and its --quant names the
    // planned encoding (q4_k included), not a quantize-on-load type.
    @Option(name: [.short, .customLong("model")],
            help: "GGUF file or Hugging Face model directory to plan. Default: $GEMMA_NODE_MODEL, else the cached Gemma 3 270M.")
    var model: String?

    @Option(name: .customLong("ranks"), help: "Number of ranks to plan for (default: the number of --split shares, else 1).")
    var ranksOption: Int?

    @Option(name: .customLong("split"), help: SplitOption.help)
    var split: String?

    /// --ranks, else one rank per --split share, else 1.
    var ranks: Int { ranksOption ?? ((try? SplitOption.parse(split))??.count ?? 1) }
    var shares: [Double]? { (try? SplitOption.parse(split)) ?? nil }

    @Option(name: .customLong("batch"), help: "Tokens per step (sizes the sliding-window KV ring and the activation buffers --fit counts).")
    var batch: Int = 512

    @Flag(name: .customLong("json"), help: "Print one JSON object instead of text.")
    var json = false

    @Option(name: .customLong("config"),
            help: "Plan from a config alone instead of -m: a shipped preset (\(ModelPresets.names.joined(separator: ", ")); the \"gemma-4-\" prefix may be left out) or a config.json path.")
    var configName: String?

    @Option(name: .customLong("quant"), help: "With --config: weight encoding, q4_k (every matrix), q4_k_m (llama.cpp's Q4_K_M mix, as synth writes it), q8_0 or bf16.")
    var quant: String = "bf16"

    @Option(name: .customLong("kv-type"), help: "KV-cache element type to plan for: f32, f16 (default, as the cache) or q8_0.")
    var kvTypeName: String = "f16"

    @Option(name: .customLong("fit"),
            help: "Memory of each machine in GB (10^9 bytes), in rank order, e.g. 8,8,16: prints a --split that fits every machine with room for --context tokens, a --batch-token step's activations and --overhead-mb, or which machine is short and by how much.")
    var fit: String?

    @Option(name: .customLong("machines"),
            help: "Memory of one machine in GB: prints the fewest such machines that hold the model with --context tokens and --overhead-mb each, and their --split.")
    var machinesGB: Double?

    @Option(name: .customLong("context"), help: "With --fit or --machines: tokens of one sequence's KV cache to leave room for.")
    var context: Int = 4096

    @Option(name: .customLong("overhead-mb"),
            help: "With --fit or --machines: fixed memory of one rank process beyond weights and KV cache, in MB (10^6 bytes). Default: \(Int(defaultOverheadMB)), measured here (docs/LARGE_MODELS.md).")
    var overheadMB: Double = defaultOverheadMB

    func validate() throws {
        if ranks < 1 { throw ValidationError("--ranks must be at least 1, got \(ranks)") }
        if let shares = try SplitOption.parse(split), shares.count != ranks {
            throw ValidationError("--split has \(shares.count) shares but --ranks is \(ranks): give one share per rank")
        }
        if fit != nil || machinesGB != nil {
            if split != nil { throw ValidationError("--fit and --machines choose their own split; leave out --split") }
            if ranksOption != nil { throw ValidationError("--fit and --machines choose the rank count (one per machine); leave out --ranks") }
            if fit != nil && machinesGB != nil { throw ValidationError("give either --fit (a list of machines) or --machines (one size), not both") }
        }
        if let fit { _ = try MachineListOption.parse(fit, flag: "--fit") }
        if let machinesGB, !(machinesGB > 0 && machinesGB.isFinite) { throw ValidationError("--machines must be a positive number of GB, got \(machinesGB)") }
        if batch < 1 { throw ValidationError("--batch must be at least 1, got \(batch)") }
        if PlanQuant.parse(quant) == nil { throw ValidationError("--quant must be \(PlanQuant.names), got \(quant)") }
        _ = try KVTypeOption.parse(kvTypeName)
        if context < 0 { throw ValidationError("--context must be 0 or positive, got \(context)") }
        if !(overheadMB >= 0 && overheadMB.isFinite) { throw ValidationError("--overhead-mb must be 0 or positive, got \(overheadMB)") }
    }

    func run() throws {
        let kvType = try KVTypeOption.parse(kvTypeName)
        let source = try ModelPlanSource.resolve(model: model, configName: configName, quant: quant,
                                                 kvType: kvType, batch: batch)
        let what = configName.map { "\($0) at \(quant)" } ?? source.name
        let overhead = Int(overheadMB * 1e6)
        if let fit {
            let gb = try MachineListOption.parse(fit, flag: "--fit")
            let answer = try MemoryFit.fit(capacities: gb.map { Int($0 * 1e9) }, overheadBytes: overhead, contextTokens: context) { shares in
                try source.report(ranks: shares.count, shares: shares)
            }
            if json { try Self.printJSON(answer) } else {
                print("fit \(what) on \(gb.count) machine\(gb.count == 1 ? "" : "s") of \(gb.map { MemoryFit.format($0) }.joined(separator: ", ")) GB with \(context) tokens of \(kvType) KV cache:")
                print(answer.text)
            }
            // A fit that fails is an answer, printed above; the status lets scripts tell.
            if !answer.fits { throw ExitCode(1) }
            return
        }
        if let machinesGB {
            let answer = try MemoryFit.fewestMachines(capacity: Int(machinesGB * 1e9), overheadBytes: overhead, contextTokens: context) { shares in
                try source.report(ranks: shares.count, shares: shares)
            }
            guard let answer else {
                throw InspectError(message: "\(what) does not fit on up to 64 machines of \(MemoryFit.format(machinesGB)) GB with \(context) tokens of \(kvType) KV cache and \(MemoryFit.format(overheadMB)) MB overhead each")
            }
            if json { return try Self.printJSON(answer) }
            print("fewest machines of \(MemoryFit.format(machinesGB)) GB for \(what) with \(context) tokens of \(kvType) KV cache: \(answer.ranks.count)")
            print(answer.text)
            return
        }
        let report = try source.report(ranks: ranks, shares: shares)
        if json { return try Self.printJSON(report) }
        print(report.text)
    }

    static func printJSON<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }
}

struct InspectError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
