// `gemma-node serve`: an OpenAI-compatible HTTP API on rank 0 with continuous batching across
// all ranks. Rank 0's main thread runs the engine loop (all MPI calls stay on it); Hummingbird
// runs on Swift concurrency's threads and talks to the loop through the scheduler's queue.
// Other ranks run the worker loop. SIGINT/SIGTERM on rank 0 end every rank with status 0.
import ArgumentParser
import Dispatch
import Foundation
import GemmaEngine
import GemmaModel
import GemmaParallel
import GemmaServer
import GemmaTokenizer

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve an OpenAI-compatible HTTP API from rank 0 (chat and text completions, streaming, continuous batching)."
    )

    @OptionGroup var modelOptions: ModelOptions

    @OptionGroup var linkOptions: LinkOptions

    @OptionGroup var timeoutOptions: TimeoutOptions

    @OptionGroup var syncOptions: SyncOptions
    @OptionGroup var sampling: SamplingOptions

    @Option(help: "Address to listen on (loopback by default).")
    var host = "127.0.0.1"

    @Option(help: "TCP port (0 = any free port; the chosen one is printed).")
    var port = 8080

    @Option(name: .customLong("api-key"), help: "Require 'Authorization: Bearer KEY' on /v1 endpoints. Default: $GEMMA_NODE_API_KEY, else none.")
    var apiKey: String?

    @Option(name: .customLong("parallel"), help: "Sequences computed together (KV-cache slots).")
    var parallel = 4

    @Option(name: .customLong("batch-tokens"), help: "Most tokens per step (decode tokens plus prompt chunks).")
    var batchTokens = 512

    @Option(name: .customLong("max-queue"), help: "Requests that may wait for a slot; more get 429.")
    var maxQueue = 64

    @Option(name: .customLong("prefix-cache"), help: "on: finished sequences' KV entries stay in their free slots (least recently used reclaimed first) and a prompt starting with them reuses them; off: every prompt is computed in full.")
    var prefixCache: OnOff = .on

    @Option(name: .customLong("max-body"), help: "Largest request body in bytes; larger gets 413.")
    var maxBody = 1 << 20

    @Option(help: "Tokenizer (tokenizer.json, tokenizer.model or .gguf) when the model has none of its own.")
    var tokenizer: String?

    @Option(name: .customLong("model-name"), help: "Model id reported by /v1/models. Default: the model file or directory name.")
    var modelName: String?

    func validate() throws {
        if !(0...65535).contains(port) { throw ValidationError("--port must be in 0...65535, got \(port)") }
        if parallel < 1 { throw ValidationError("--parallel must be at least 1, got \(parallel)") }
        if batchTokens < 1 { throw ValidationError("--batch-tokens must be at least 1, got \(batchTokens)") }
        if maxQueue < 0 { throw ValidationError("--max-queue must be 0 or more, got \(maxQueue)") }
        if maxBody < 1024 { throw ValidationError("--max-body must be at least 1024, got \(maxBody)") }
    }

    /// The model's load options: the shared flags (-c, -t, --quant) with serve's slots and
    /// batch size.
    var loadOptions: GemmaLoadOptions { modelOptions.loadOptions(slots: parallel, maxBatchTokens: batchTokens) }

    func run() throws {
        try ClusterSession.run(link: try linkOptions.link(), sync: try syncOptions.payload(), stepTimeout: timeoutOptions.stepTimeout) { comm in
            // Times the model's all-reduces for /metrics (compute vs all-reduce per step).
            let timed = TimedCommunicator(comm)
            let path = modelOptions.resolvedModelPath
            let name = modelName ?? URL(fileURLWithPath: path).lastPathComponent
            let given = apiKey ?? ProcessInfo.processInfo.environment["GEMMA_NODE_API_KEY"]
            let key = given?.isEmpty == true ? nil : given
            var service: OpenAIService?
            var server: BackgroundServer?
            if comm.isCoordinator {
                let s = sampling
                let config = ServerConfig(modelName: name, apiKey: key, maxBodyBytes: maxBody,
                                          defaults: s.params(seed: 0), ranks: comm.size)
                service = OpenAIService(config: config)
                // Listening starts before the load, so /health answers 503 "loading" meanwhile.
                server = BackgroundServer.start(service: service!, host: host, port: port)
            } else {
                // Rank 0 decides when to stop and tells every rank in a shutdown plan.
                signal(SIGINT, SIG_IGN)
                signal(SIGTERM, SIG_IGN)
            }
            // A GGUF file or a Hugging Face directory; handshake and load errors are agreed across ranks.
            let model = try ModelSession.load(path: path, options: loadOptions, comm: timed)
            // Rank 0 alone tokenizes; the outcome (and a bind failure) is agreed so every rank
            // stops with the same message.
            let loaded: (GemmaTokenizer, Int)? = try timed.agreeOn {
                guard comm.isCoordinator, let server else { return nil }
                guard let tok = try ModelSession.tokenizer(tokenizer ?? path, for: model) else {
                    throw ServeError.noTokenizer(path)
                }
                return (tok, try server.waitUntilListening())
            }
            let executor = StepExecutor(model: model, comm: timed)
            // Structured output: every rank needs the bytes of every id (to mask its shard and
            // to advance the automaton with the drawn ids); rank 0 sends its tokenizer's once.
            let table = loaded.map { VocabularyBytes(tokenizer: $0.0, vocabSize: model.vocabSize).encode() } ?? []
            let received = comm.size > 1 ? try timed.broadcast(table, root: 0, idle: false) : table
            executor.vocabularyBytes = VocabularyBytes.decode(received)
            // Each rank builds its masking tables while the server starts, off the step path.
            executor.buildMaskTablesInBackground()
            guard comm.isCoordinator, let service, let server, let loaded else {
                try executor.runWorker()
                return
            }
            let (tok, boundPort) = loaded
            let scheduler = try BatchScheduler(executor: executor, maxQueued: maxQueue, prefixCache: prefixCache == .on)
            let stops = ModelSession.stopTokens(model, tokenizer: tok, chat: true)
            service.attach(Backend(scheduler: scheduler, tokenizer: tok, template: ChatTemplate(architecture: ModelSession.architecture(model)),
                                   maxContext: model.maxContext, stopTokens: stops))
            let signals = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler {
                    service.drain()
                    scheduler.requestShutdown(reason: "coordinator: signal \(sig)")
                }
                source.resume()
                return source
            }
            // A worker found frozen or dead while the server is idle (rank 0's answering thread
            // probes after --step-timeout without a collective): fail at once, so /health says
            // 503 now rather than at the next request.
            ClusterSession.mpi?.onPeerFailure { message in
                service.fail(message)
                scheduler.requestShutdown(reason: message, failure: message)
            }
            print("gemma-node: serving \(name) on http://\(host):\(boundPort) (pid \(getpid()), \(comm.size) rank(s), "
                  + "\(parallel) slots, context \(model.maxContext), prefix cache \(prefixCache.rawValue))")
            print("gemma-node: try: " + Self.tryCommand(host: host, port: boundPort, model: name,
                                                              key: key == nil ? nil : apiKey == nil ? "$GEMMA_NODE_API_KEY" : "KEY"))
            do {
                try scheduler.run()
            } catch {
                // The cluster failed (e.g. a rank stopped answering): the scheduler has failed
                // every request in flight; /health answers 503 from now on, and the error
                // responses get up to 2 s to reach their clients before the job is aborted.
                service.fail("\(error)")
                service.waitForRequests(timeout: 2)
                throw error
            }
            signals.forEach { $0.cancel() }
            server.stop(timeout: 5)
            print("gemma-node: stopped")
        }
    }
}

extension ServeCommand {
    /// One `curl` line a user can paste to talk to the server just started. `key` is what to
    /// write for the API key when one is required (its variable or a placeholder: the key
    /// itself is never printed).
    static func tryCommand(host: String, port: Int, model: String, key: String?) -> String {
        // A wildcard address is not one to connect to: loopback reaches it from this machine.
        let connect = host == "0.0.0.0" || host == "::" ? "127.0.0.1" : host.contains(":") ? "[\(host)]" : host
        let body = #"{"model":"\#(String(model.filter { $0 != "'" && $0 != "\"" && $0 != "\\" }))","messages":[{"role":"user","content":"Say hello in French."}],"max_tokens":32}"#
        let auth = key.map { #" -H "Authorization: Bearer \#($0)""# } ?? ""
        return "curl http://\(connect):\(port)/v1/chat/completions -H 'Content-Type: application/json'\(auth) -d '\(body)'"
    }
}

enum ServeError: SameOnEveryRankError, CustomStringConvertible {
    case noTokenizer(String)

    var description: String {
        switch self {
        case let .noTokenizer(path):
            return "serve needs a tokenizer and \(path) has none: pass --tokenizer PATH"
        }
    }
}

/// A flag's on/off value.
enum OnOff: String, ExpressibleByArgument, CaseIterable {
    case on, off
}
