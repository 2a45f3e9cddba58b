// `gemma-node chat`: an interactive, multi-turn conversation in the model's chat template,
// with the reply streamed to stdout as tokens are sampled. Under mpirun rank 0 reads stdin
// and runs the scheduler; every other rank serves step plans until rank 0 ends the session.
// Also holds `StreamingSession`, the per-token front end `generate` shares.
import ArgumentParser
import Foundation
import GemmaEngine
import GemmaModel
import GemmaParallel
import GemmaTokenizer

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Interactive chat in the model's chat template; the reply streams as it is generated.",
        discussion: """
            One message per line on stdin. /exit (or end of input) ends the session, /reset forgets \
            the conversation. Earlier turns are dropped, oldest first, when the conversation no longer \
            fits the context (-c). Under mpirun only rank 0 reads stdin and writes the replies.
            """
    )

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var samplingOptions: SamplingOptions

    @Option(help: "System prompt (Gemma 1-3 fold it into the first user turn).")
    var system: String?

    @Option(name: [.short, .customLong("n-predict")], help: "Most tokens per reply (-1 = until end of turn or full context).")
    var nPredict: Int = -1

    @Flag(help: "After each reply, print prompt/reply token counts and speeds to stderr.")
    var verbose = false

    func validate() throws {
        if nPredict < -1 { throw ValidationError("-n/--n-predict must be -1 or more, got \(nPredict)") }
    }

    func run() throws {
        try ClusterSession.run { comm in
            let model = try ModelSession.load(modelOptions, comm: comm)
            let tokenizer: GemmaTokenizer? = try comm.agreeOn {
                comm.isCoordinator ? try ModelSession.tokenizer(modelOptions.resolvedModelPath) : nil
            }
            // Agreed, so a model without a tokenizer fails on every rank before any plan.
            try comm.agree(comm.isCoordinator && tokenizer == nil
                           ? ModelSessionError.noTokenizer(modelOptions.resolvedModelPath) : nil)
            let session = try StreamingSession(model: model, comm: comm)
            guard comm.isCoordinator, let tokenizer else {
                try session.serveWorker()
                return
            }
            let s = samplingOptions
            let seed = s.seed ?? UInt64.random(in: 0...UInt64.max)
            let settings = SamplerSettings(temperature: s.temperature, topK: s.topK, topP: s.topP, minP: s.minP, seed: seed)
            var conversation = ChatConversation(tokenizer: tokenizer, template: ChatTemplate(architecture: ModelSession.architecture(model)),
                                                system: system, maxContext: model.maxContext)
            let stop = ModelSession.stopTokens(model).union(tokenizer.endOfGenerationIDs)
            let interactive = isatty(STDIN_FILENO) == 1
            if interactive {
                StandardOutput.writeError("chat: \(comm.size) rank(s), context \(model.maxContext) tokens; /exit or Ctrl-D ends, /reset forgets.\n")
            }
            var requestId: UInt64 = 0
            do {
                while true {
                    if interactive { StandardOutput.write("> ") }
                    guard let line = readLine(strippingNewline: true) else { break }
                    let text = line.trimmingCharacters(in: .whitespacesAndNewlines)
                    if text == "/exit" || text == "/quit" { break }
                    if text == "/reset" { conversation.reset(); continue }
                    if text.isEmpty { continue }
                    let prompt: [Int32]
                    do {
                        prompt = try conversation.prompt(user: text)
                    } catch {
                        // A message that cannot fit is this turn's problem, not the session's.
                        StandardOutput.writeError("gemma-node: \(error)\n")
                        continue
                    }
                    let room = model.maxContext - prompt.count
                    let maxNew = nPredict < 0 ? room : min(nPredict, room)
                    requestId += 1
                    let request = GenerationRequest(id: requestId, promptTokens: prompt, maxNewTokens: maxNew,
                                                    sampling: settings, stopTokens: stop)
                    var decoder = StreamingDecoder(tokenizer: tokenizer)
                    let before = session.timings
                    let result = try session.generate(request) { id in StandardOutput.write(decoder.push(id)) }
                    StandardOutput.write(decoder.finish() + "\n")
                    conversation.commit(user: text, reply: tokenizer.decode(result.tokens))
                    if verbose {
                        StandardOutput.writeError(Self.turnLine(prompt: prompt.count, result: result,
                                                                before: before, after: session.timings))
                    }
                }
            } catch {
                try session.fail(error)
            }
            try session.finish()
        }
    }

    static func turnLine(prompt: Int, result: GenerationResult, before: EngineTimings, after: EngineTimings) -> String {
        let decodeTokens = after.decodeTokens - before.decodeTokens
        let decodeSeconds = after.decodeSeconds - before.decodeSeconds
        let prefillSeconds = after.prefillSeconds - before.prefillSeconds
        let speed = decodeSeconds > 0 ? Double(decodeTokens) / decodeSeconds : 0
        return "[\(prompt) prompt tokens in \(String(format: "%.0f", prefillSeconds * 1000)) ms; "
            + "\(result.tokens.count) reply tokens, \(String(format: "%.1f", speed)) tok/s; \(result.finishReason.rawValue)]\n"
    }
}

/// Errors of a chat turn.
enum ChatError: Error, CustomStringConvertible {
    case messageTooLong(tokens: Int, maxContext: Int)

    var description: String {
        switch self {
        case let .messageTooLong(tokens, maxContext):
            return "this message needs \(tokens) prompt tokens even without earlier turns; the context holds \(maxContext) (raise -c)"
        }
    }
}

/// The conversation so far (rank 0): renders the next prompt, dropping the oldest
/// user/model pairs while the prompt leaves no room for a reply.
struct ChatConversation {
    let tokenizer: GemmaTokenizer
    let template: ChatTemplate
    let system: String?
    let maxContext: Int
    /// Alternating user / model messages, oldest first (without the system message).
    private(set) var turns: [ChatMessage] = []

    init(tokenizer: GemmaTokenizer, template: ChatTemplate, system: String?, maxContext: Int) {
        self.tokenizer = tokenizer
        self.template = template
        self.system = system.flatMap { $0.isEmpty ? nil : $0 }
        self.maxContext = maxContext
    }

    mutating func reset() { turns = [] }

    /// Prompt ids for the next user message. At least one position must be left for the reply.
    mutating func prompt(user: String) throws -> [Int32] {
        while true {
            var messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
            messages += turns + [ChatMessage(role: "user", content: user)]
            let ids = try tokenizer.encodeChat(messages, template: template)
            if ids.count < maxContext { return ids }
            if turns.isEmpty { throw ChatError.messageTooLong(tokens: ids.count, maxContext: maxContext) }
            turns.removeFirst(min(2, turns.count))
        }
    }

    /// Records a finished exchange.
    mutating func commit(user: String, reply: String) {
        turns += [ChatMessage(role: "user", content: user), ChatMessage(role: "model", content: reply)]
    }
}

/// Generation with every token handed to a callback as soon as it is sampled, over the
/// engine's scheduler. Rank 0 runs requests one after another (the workers wait in their
/// idle receive in between, without spinning); other ranks call `serveWorker`.
final class StreamingSession {
    let executor: StepExecutor
    /// Rank 0 only.
    let coordinator: Coordinator?

    init(model: any ShardedCausalLM, comm: any Communicator) throws {
        executor = StepExecutor(model: model, comm: comm, codec: ModelSession.planCodec())
        coordinator = comm.isCoordinator ? try Coordinator(executor: executor) : nil
    }

    var timings: EngineTimings { executor.timings }

    /// Workers: executes plans until rank 0 finishes (or an agreed error, thrown here too).
    func serveWorker() throws { try executor.runWorker() }

    /// Runs one request to its end (rank 0), calling `onToken` with each generated id (stop
    /// tokens excluded) on this thread. A request the scheduler refuses throws before any plan
    /// is sent, so the caller may carry on; engine failures have already ended every rank's loop.
    func generate(_ request: GenerationRequest, onToken: @escaping (Int32) -> Void) throws -> GenerationResult {
        guard let coordinator else { throw EngineError.notCoordinator("StreamingSession.generate") }
        let box = EventBox(onToken: onToken)
        try coordinator.scheduler.submit(request) { event in box.handle(event) }
        try coordinator.scheduler.runUntilIdle()
        if let result = box.result { return result }
        throw EngineError.badPlan(box.failure ?? "request \(request.id) did not finish")
    }

    /// Ends the workers' loops (rank 0). Workers return from `serveWorker`.
    func finish() throws { try coordinator?.shutdown() }

    /// Rank 0 after an error of its own: agreed errors (the workers already left) are rethrown;
    /// anything else is sent to the workers with the shutdown, so every rank throws it.
    func fail(_ error: Error) throws -> Never {
        if error is CommunicatorError { throw error }
        try coordinator?.shutdown(reason: "\(error)", failure: error)
        throw error
    }
}

/// Carries a request's events from the scheduler's sink (called on the engine thread, which
/// is the thread running `runUntilIdle`, i.e. the caller of `StreamingSession.generate`).
private final class EventBox: @unchecked Sendable {
    let onToken: (Int32) -> Void
    var result: GenerationResult?
    var failure: String?

    init(onToken: @escaping (Int32) -> Void) { self.onToken = onToken }

    func handle(_ event: SequenceEvent) {
        switch event {
        case let .token(id): onToken(id)
        case let .finished(r): result = r
        case let .failed(message): failure = message
        }
    }
}

/// Unbuffered writes to stdout/stderr, so streamed text appears token by token (print's
/// buffer is line-buffered under mpirun and would hold a reply until its newline).
enum StandardOutput {
    static func write(_ text: String) {
        guard !text.isEmpty else { return }
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    static func writeError(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}

extension ModelSession {
    /// The model's architecture name for the chat template ("gemma3", "gemma4_text", ...).
    static func architecture(_ model: any ShardedCausalLM) -> String {
        (model as? GemmaShard)?.config.modelType ?? "gemma"
    }
}
