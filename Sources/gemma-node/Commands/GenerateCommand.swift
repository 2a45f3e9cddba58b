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

    @OptionGroup var linkOptions: LinkOptions

    @OptionGroup var timeoutOptions: TimeoutOptions

    @OptionGroup var syncOptions: SyncOptions
    @OptionGroup var promptOptions: PromptOptions
    @OptionGroup var samplingOptions: SamplingOptions

    @Option(help: "Prompt token ids, comma-separated (e.g. 2,17,5).")
    var tokens: String?

    @Flag(help: "Print one JSON object: prompt_tokens, tokens, text, finish_reason, timings.")
    var json = false

    @Flag(help: "Wrap -p in the model's chat template as one user turn (generation stops at the end of the model's turn).")
    var chat = false

    @Option(help: "With --chat: a system prompt (Gemma 1-3 fold it into the user turn).")
    var system: String?

    func validate() throws {
        if let tokens { _ = try TokenList.parse(tokens) }
        if tokens != nil && promptOptions.prompt != nil {
            throw ValidationError("give either --tokens or -p/--prompt, not both")
        }
        if tokens == nil && promptOptions.prompt == nil {
            throw ValidationError("a prompt is needed: --tokens 2,17,5 (or -p TEXT once the model has a tokenizer)")
        }
        if chat && promptOptions.prompt == nil { throw ValidationError("--chat needs a text prompt (-p)") }
        if system != nil && !chat { throw ValidationError("--system goes with --chat") }
    }

    func run() throws {
        let loadStart = Date()
        try ClusterSession.run(link: try linkOptions.link(), sync: try syncOptions.payload(), stepTimeout: timeoutOptions.stepTimeout) { comm in
            let model = try ModelSession.load(path: modelOptions.resolvedModelPath, options: modelOptions.loadOptions(), comm: comm)
            let loadSeconds = Date().timeIntervalSince(loadStart)
            // Only rank 0 encodes and decodes: workers receive token ids in the step plans. The
            // outcome is agreed, so a missing tokenizer is the same error on every rank.
            let tokenizer: GemmaTokenizer? = try comm.agreeOn {
                comm.isCoordinator ? try ModelSession.tokenizer(modelOptions.resolvedModelPath, for: model) : nil
            }
            let prompt: [Int32] = try comm.agreeOn {
                if let tokens { return try TokenList.parse(tokens) }
                guard comm.isCoordinator else { return [] }
                guard let tokenizer else { throw ModelSessionError.noTokenizer(modelOptions.resolvedModelPath) }
                guard chat else { return tokenizer.encode(promptOptions.prompt ?? "") }
                var messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
                messages.append(ChatMessage(role: "user", content: promptOptions.prompt ?? ""))
                return try tokenizer.encodeChat(messages, template: ChatTemplate(architecture: ModelSession.architecture(model)))
            }
            let s = samplingOptions
            // The seed travels in the step plans, so only rank 0's choice matters.
            let seed = s.seed ?? UInt64.random(in: 0...UInt64.max)
            let settings = s.params(seed: seed)
            let maxNew = promptOptions.nPredict < 0 ? model.maxContext : promptOptions.nPredict
            let request = GenerationRequest(id: 0, promptTokens: prompt, maxNewTokens: maxNew, sampling: settings,
                                            stopTokens: ModelSession.stopTokens(model, tokenizer: tokenizer, chat: chat))
            let session = try GenerationSession(model: model, comm: comm)
            guard comm.isCoordinator else {
                try session.serveWorker()
                return
            }
            // Text (or ids, without a tokenizer) is written as each token is sampled; --json
            // prints one object at the end instead.
            var decoder = tokenizer.map { StreamingDecoder(tokenizer: $0) }
            var first = true
            let result: GenerationResult
            do {
                result = try session.generate(request) { id in
                    guard !json else { return }
                    if decoder != nil {
                        StandardOutput.write(decoder?.push(id) ?? "")
                    } else {
                        StandardOutput.write((first ? "" : " ") + String(id))
                    }
                    first = false
                }
            } catch {
                try session.fail(error)
            }
            try session.finish()
            let timings = session.timings
            if json {
                let text = tokenizer?.decodeText(result.tokens)
                print(Self.jsonReport(result, text: text, timings: timings, seed: seed, ranks: comm.size, loadSeconds: loadSeconds))
            } else {
                StandardOutput.write((decoder?.finish() ?? "") + "\n")
                StandardOutput.writeError(Self.timingLine(timings, ranks: comm.size))
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
