// `gemma-node generate`: continues a prompt on the whole cluster. Rank 0 schedules and samples,
// every rank runs its shard of the forward pass; output comes from rank 0 only.
import ArgumentParser
import Foundation
import GemmaEngine
import GemmaModel
import GemmaParallel
import GemmaTokenizer

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate tokens after a prompt (token ids with --tokens; text with -p once the model has a tokenizer)."
    )

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var promptOptions: PromptOptions
    @OptionGroup var samplingOptions: SamplingOptions

    @Option(help: "Prompt token ids, comma-separated (e.g. 2,17,5).")
    var tokens: String?

    @Flag(help: "Print one JSON object: prompt_tokens, tokens, text, finish_reason, timings.")
    var json = false

    func validate() throws {
        if let tokens { _ = try TokenList.parse(tokens) }
        if tokens != nil && promptOptions.prompt != nil {
            throw ValidationError("give either --tokens or -p/--prompt, not both")
        }
        if tokens == nil && promptOptions.prompt == nil {
            throw ValidationError("a prompt is needed: --tokens 2,17,5 (or -p TEXT once the model has a tokenizer)")
        }
    }

    func run() throws {
        let loadStart = Date()
        try ClusterSession.run { comm in
            let model = try ModelSession.load(modelOptions, comm: comm)
            let loadSeconds = Date().timeIntervalSince(loadStart)
            // Only rank 0 encodes and decodes: workers receive token ids in the step plans. The
            // outcome is agreed, so a missing tokenizer is the same error on every rank.
            let tokenizer: GemmaTokenizer? = try comm.agreeOn {
                comm.isCoordinator ? try ModelSession.tokenizer(modelOptions.resolvedModelPath) : nil
            }
            let prompt: [Int32] = try comm.agreeOn {
                if let tokens { return try TokenList.parse(tokens) }
                guard comm.isCoordinator else { return [] }
                guard let tokenizer else { throw ModelSessionError.noTokenizer(modelOptions.resolvedModelPath) }
                return tokenizer.encode(promptOptions.prompt ?? "")
            }
            let s = samplingOptions
            // The seed travels in the step plans, so only rank 0's choice matters.
            let seed = s.seed ?? UInt64.random(in: 0...UInt64.max)
            let settings = SamplerSettings(temperature: s.temperature, topK: s.topK, topP: s.topP, minP: s.minP, seed: seed)
            let maxNew = promptOptions.nPredict < 0 ? model.maxContext : promptOptions.nPredict
            let request = GenerationRequest(id: 0, promptTokens: prompt, maxNewTokens: maxNew, sampling: settings,
                                            stopTokens: ModelSession.stopTokens(model))
            guard let (results, timings) = try runGeneration([request], model: model, comm: comm,
                                                              codec: ModelSession.planCodec()) else { return }
            guard let result = results.first else { return }
            let text = tokenizer?.decode(result.tokens)
            if json {
                print(Self.jsonReport(result, text: text, timings: timings, seed: seed, ranks: comm.size, loadSeconds: loadSeconds))
            } else {
                print(text ?? result.tokens.map(String.init).joined(separator: " "))
                FileHandle.standardError.write(Data(Self.timingLine(timings, ranks: comm.size).utf8))
            }
        }
    }

    static func jsonReport(_ r: GenerationResult, text: String?, timings t: EngineTimings, seed: UInt64, ranks: Int,
                           loadSeconds: Double) -> String {
        let j = JSONText()
        j.object {
            j.key("prompt_tokens"); j.ints(r.promptTokens.map(Int.init))
            j.key("tokens"); j.ints(r.tokens.map(Int.init))
            j.key("text"); j.string(text)
            j.key("finish_reason"); j.string(r.finishReason.rawValue)
            j.key("seed"); j.string(String(seed))  // a string: JSON numbers lose UInt64 precision
            j.key("timings")
            j.object {
                j.key("ranks"); j.int(ranks)
                j.key("load_seconds"); j.double(loadSeconds)
                j.key("steps"); j.int(t.steps)
                j.key("prefill_tokens"); j.int(t.prefillTokens)
                j.key("prefill_seconds"); j.double(t.prefillSeconds)
                j.key("prefill_tokens_per_second"); j.double(t.prefillTokensPerSecond)
                j.key("decode_tokens"); j.int(t.decodeTokens)
                j.key("decode_seconds"); j.double(t.decodeSeconds)
                j.key("decode_tokens_per_second"); j.double(t.decodeTokensPerSecond)
                j.key("forward_seconds"); j.double(t.forwardSeconds)
                j.key("control_seconds"); j.double(t.controlSeconds)
                j.key("sampling_seconds"); j.double(t.samplingSeconds)
                j.key("sampling_rounds"); j.int(t.samplingRounds)
                j.key("sampling_bytes_sent_per_rank"); j.int(t.samplingFloatsSent * 4)
            }
        }
        return j.text
    }

    static func timingLine(_ t: EngineTimings, ranks: Int) -> String {
        func f(_ x: Double) -> String { String(format: "%.1f", x) }
        func ms(_ x: Double) -> String { String(format: "%.1f ms", x * 1000) }
        return "prefill: \(t.prefillTokens) tokens, \(f(t.prefillTokensPerSecond)) tok/s; "
            + "decode: \(t.decodeTokens) tokens, \(f(t.decodeTokensPerSecond)) tok/s; "
            + "forward \(ms(t.forwardSeconds)), control \(ms(t.controlSeconds)), sampling \(ms(t.samplingSeconds)); \(ranks) rank(s)\n"
    }
}

/// Errors of the commands' model session.
enum ModelSessionError: SameOnEveryRankError, CustomStringConvertible {
    case noTokenizer(String)
    case unsupportedFormat(String)

    var description: String {
        switch self {
        case let .noTokenizer(path):
            return "text prompts need a tokenizer, and none is available for \(path): pass token ids with --tokens"
        case let .unsupportedFormat(path):
            return "\(path) is a file; only Hugging Face model directories (config.json + safetensors) load so far"
        }
    }
}

/// How the commands get a model shard, its stop tokens and the plan codec.
enum ModelSession {
    /// Runs the start-up handshake, then loads this rank's shard. Errors are identical on
    /// every rank: the handshake's and the loader's are agreed, the rest come from argv.
    static func load(_ options: ModelOptions, comm: any Communicator) throws -> any ShardedCausalLM {
        // Same build and same model files on every rank, or every rank refuses with one message.
        _ = try StartupHandshake.run(comm, modelPath: options.resolvedModelPath, threads: options.resolvedThreads)
        return try loadShard(options, comm: comm)
    }

    /// Loads a Hugging Face model directory; the loader agrees its errors across ranks.
    static func loadShard(_ options: ModelOptions, comm: any Communicator) throws -> any ShardedCausalLM {
        let path = options.resolvedModelPath
        var isDirectory: ObjCBool = false
        // Every rank sees the same answer here: the handshake above checked the same files exist.
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw ModelSessionError.unsupportedFormat(path)
        }
        let loadOptions = GemmaLoadOptions(maxContext: options.ctxSize, slots: 1, maxBatchTokens: 512,
                                           threads: options.resolvedThreads)
        return try GemmaShard.load(directory: URL(fileURLWithPath: path), comm: comm, options: loadOptions)
    }

    /// Ids that end generation (the model's EOS ids).
    static func stopTokens(_ model: any ShardedCausalLM) -> Set<Int32> {
        guard let shard = model as? GemmaShard else { return [] }
        return Set(shard.config.eosTokenIds.compactMap { Int32(exactly: $0) })
    }

    static func planCodec() -> any StepPlanCodec { WirePlanCodec() }

    /// The model's tokenizer: tokenizer.json / tokenizer.model in a model directory, or the
    /// vocabulary inside a GGUF file; nil when a directory has neither (token-id input only).
    static func tokenizer(_ path: String) throws -> GemmaTokenizer? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return nil }
        if isDirectory.boolValue {
            let dir = URL(fileURLWithPath: path)
            let present = ["tokenizer.json", "tokenizer.model"].contains {
                FileManager.default.fileExists(atPath: dir.appendingPathComponent($0).path)
            }
            if !present { return nil }
        }
        return try GemmaTokenizer.load(path: path)
    }
}
