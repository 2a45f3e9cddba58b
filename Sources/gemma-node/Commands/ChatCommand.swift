// `gemma-node chat`: an interactive, multi-turn conversation in the model's chat template,
// with the reply streamed to stdout as tokens are sampled. Under mpirun rank 0 reads stdin
// and runs the scheduler; every other rank serves step plans until rank 0 ends the session.
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

    @OptionGroup var linkOptions: LinkOptions

    @OptionGroup var timeoutOptions: TimeoutOptions

    @OptionGroup var syncOptions: SyncOptions
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
        try ClusterSession.run(link: try linkOptions.link(), sync: try syncOptions.payload(), stepTimeout: timeoutOptions.stepTimeout) { comm in
            let model = try ModelSession.load(path: modelOptions.resolvedModelPath, options: modelOptions.loadOptions(), comm: comm)
            let tokenizer: GemmaTokenizer? = try comm.agreeOn {
                comm.isCoordinator ? try ModelSession.tokenizer(modelOptions.resolvedModelPath, for: model) : nil
            }
            // Agreed, so a model without a tokenizer fails on every rank before any plan.
            try comm.agree(comm.isCoordinator && tokenizer == nil
                           ? ModelSessionError.noTokenizer(modelOptions.resolvedModelPath) : nil)
            // Each turn's prompt repeats the conversation so far: the slot still holds its entries.
            let session = try GenerationSession(model: model, comm: comm, prefixCache: true)
            guard comm.isCoordinator, let tokenizer else {
                try session.serveWorker()
                return
            }
            let s = samplingOptions
            let seed = s.seed ?? UInt64.random(in: 0...UInt64.max)
            let settings = s.params(seed: seed)
            var conversation = ChatConversation(tokenizer: tokenizer, template: ChatTemplate(architecture: ModelSession.architecture(model)),
                                                system: system, maxContext: model.maxContext)
            let stop = ModelSession.stopTokens(model, tokenizer: tokenizer, chat: true)
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
                    conversation.commit(user: text, reply: tokenizer.decodeText(result.tokens))
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
        let reused = result.cachedTokens > 0 ? " (\(result.cachedTokens) reused)" : ""
        return "[\(prompt) prompt tokens\(reused) in \(String(format: "%.0f", prefillSeconds * 1000)) ms; "
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
