// What every command needs around the step loop: the model session (start-up handshake, then
// this rank's shard, its stop tokens, tokenizer and chat template name) and the generation
// session (prompt -> tokens handed out as they are sampled, timings, shutdown of the workers).
// `generate`, `chat`, `serve` and `bench` share them, and tests run them in-process.
import Foundation
import GemmaFormats
import GemmaModel
import GemmaParallel
import GemmaTokenizer

/// Errors of the model session.
public enum ModelSessionError: SameOnEveryRankError, CustomStringConvertible, Equatable {
    case noTokenizer(String)
    /// The tokenizer can produce ids the model has no embedding for.
    case tokenizerMismatch(path: String, tokens: Int, vocabulary: Int)

    public var description: String {
        switch self {
        case let .noTokenizer(path):
            return "text prompts need a tokenizer, and none is available for \(path): pass token ids with --tokens"
        case let .tokenizerMismatch(path, tokens, vocabulary):
            return "the tokenizer at \(path) has \(tokens) tokens but the model's vocabulary has \(vocabulary): it belongs to another model"
        }
    }
}

/// How commands get a model shard, its stop rules and its tokenizer.
public enum ModelSession {
    /// Runs the start-up handshake (same build and same model files on every rank, or every
    /// rank refuses with one message), then loads this rank's shard of a GGUF file or a Hugging
    /// Face directory. Errors are identical on every rank: the handshake's and the loader's are
    /// agreed.
    public static func load(path: String, options: GemmaLoadOptions, comm: any Communicator) throws -> GemmaShard {
        _ = try StartupHandshake.run(comm, modelPath: path, threads: options.threads, fromRoot: options.weightsFromRoot)
        return try GemmaShard.load(path: URL(fileURLWithPath: path), comm: comm, options: options)
    }

    /// Ids that end generation (EOS, and the end-of-turn id the checkpoint lists).
    public static func stopTokens(_ model: any ShardedCausalLM) -> Set<Int32> {
        guard let shard = model as? GemmaShard else { return [] }
        return Set(shard.stopTokenIds.compactMap { Int32(exactly: $0) })
    }

    /// The stop rule of a generation: the model's stop tokens, and for a chat reply also the
    /// end of the model's turn (llama.cpp's end-of-generation set).
    public static func stopTokens(_ model: any ShardedCausalLM, tokenizer: GemmaTokenizer?, chat: Bool) -> Set<Int32> {
        var stop = stopTokens(model)
        if chat, let tokenizer { stop.formUnion(tokenizer.endOfGenerationIDs) }
        return stop
    }

    /// The model's architecture name for the chat template ("gemma3", "gemma4_text", ...).
    public static func architecture(_ model: any ShardedCausalLM) -> String {
        (model as? GemmaShard)?.config.modelType ?? "gemma"
    }

    /// The model's tokenizer: tokenizer.json / tokenizer.model in a model directory, or the
    /// vocabulary inside a GGUF file; nil when a directory has neither (token-id input only).
    /// `tokenizer(_:)` checked against the model it will feed: a tokenizer with more entries
    /// than the model's vocabulary (another model's) is refused, since its ids past the end
    /// would only fail later, request by request. Fewer is normal (padded vocabularies).
    public static func tokenizer(_ path: String, for model: any ShardedCausalLM) throws -> GemmaTokenizer? {
        guard let tok = try tokenizer(path) else { return nil }
        guard tok.count <= model.vocabSize else {
            throw ModelSessionError.tokenizerMismatch(path: path, tokens: tok.count, vocabulary: model.vocabSize)
        }
        return tok
    }

    public static func tokenizer(_ path: String) throws -> GemmaTokenizer? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return nil }
        if isDirectory.boolValue {
            let dir = URL(fileURLWithPath: path)
            // Shards of a GGUF model: the tokenizer is in rank 0's file.
            if ShardFiles.isShardDirectory(dir), let first = ShardFiles.rankZeroFile(in: dir),
               let file = try? GGUFFile(path: first.path), file.value("tokenizer.ggml.tokens") != nil {
                return try GemmaTokenizer.load(path: first.path)
            }
            let present = ["tokenizer.json", "tokenizer.model"].contains {
                FileManager.default.fileExists(atPath: dir.appendingPathComponent($0).path)
            }
            if !present { return nil }
        } else if let file = try? GGUFFile(path: path), file.value("tokenizer.ggml.tokens") == nil {
            // A GGUF without a vocabulary (test models): token-id input only, like a bare directory.
            return nil
        }
        return try GemmaTokenizer.load(path: path)
    }
}

/// Generation with every token handed to a callback as soon as it is sampled, over the
/// engine's scheduler. Rank 0 runs requests one after another (the workers wait for the next
/// plan in between, without spinning); other ranks call `serveWorker`.
public final class GenerationSession {
    public let executor: StepExecutor
    /// Rank 0 only.
    public let coordinator: Coordinator?

    /// `prefixCache`: a request may reuse the KV entries of the previous ones (chat turns
    /// repeat the whole conversation; docs/ENGINE.md "Prefix caching").
    public init(model: any ShardedCausalLM, comm: any Communicator, prefixCache: Bool = false) throws {
        executor = StepExecutor(model: model, comm: comm)
        coordinator = comm.isCoordinator ? try Coordinator(executor: executor, prefixCache: prefixCache) : nil
    }

    /// Where the time of every step so far went (rank 0's clock on rank 0).
    public var timings: EngineTimings { executor.timings }

    /// Workers: executes plans until rank 0 finishes (or an agreed error, thrown here too).
    public func serveWorker() throws { try executor.runWorker() }

    /// Runs one request to its end (rank 0), calling `onToken` with each generated id (stop
    /// tokens excluded) on this thread. A request the scheduler refuses throws before any plan
    /// is sent, so the caller may carry on; engine failures have already ended every rank's loop.
    public func generate(_ request: GenerationRequest, onToken: @escaping (Int32) -> Void = { _ in }) throws -> GenerationResult {
        guard let coordinator else { throw EngineError.notCoordinator("GenerationSession.generate") }
        let box = EventBox(onToken: onToken)
        try coordinator.scheduler.submit(request) { event in box.handle(event) }
        try coordinator.scheduler.runUntilIdle()
        if let result = box.result { return result }
        throw EngineError.badPlan(box.failure ?? "request \(request.id) did not finish")
    }

    /// Ends the workers' loops (rank 0). Workers return from `serveWorker`.
    public func finish() throws { try coordinator?.shutdown() }

    /// Rank 0 after an error of its own: agreed errors (the workers already left) are rethrown;
    /// anything else is sent to the workers with the shutdown, so every rank throws it.
    public func fail(_ error: Error) throws -> Never {
        if error is CommunicatorError { throw error }
        try coordinator?.shutdown(reason: "\(error)", failure: error)
        throw error
    }
}

/// Carries a request's events from the scheduler's sink (called on the engine thread, which
/// is the thread running `runUntilIdle`, i.e. the caller of `GenerationSession.generate`).
private final class EventBox: @unchecked Sendable {
    let onToken: (Int32) -> Void
    var result: GenerationResult?
    var failure: String?

    init(onToken: @escaping (Int32) -> Void) { self.onToken = onToken }

    func handle(_ event: SequenceEvent) {
        switch event {
        case let .token(id): onToken(id)
        case .logprobs, .promptCached: break
        case let .finished(r): result = r
        case let .failed(message): failure = message
        }
    }
}
