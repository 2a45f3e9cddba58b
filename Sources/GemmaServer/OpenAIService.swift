// The OpenAI-compatible request logic, independent of the HTTP framework: checks a request,
// turns it into prompt tokens (chat template or plain text), submits it to the engine's
// scheduler, and turns the sampled ids back into text pieces with stop strings applied.
// HTTPServer.swift maps it onto Hummingbird routes.
import Foundation
import GemmaEngine
import GemmaTokenizer
import GemmaWire

/// Server settings fixed at start-up.
public struct ServerConfig: Sendable {
    /// The id `/v1/models` reports and responses carry.
    public var modelName: String
    /// When set, `/v1/*` requires `Authorization: Bearer <key>`.
    public var apiKey: String?
    /// Largest request body accepted (413 beyond).
    public var maxBodyBytes: Int
    /// Sampling for fields a request leaves out (the serve command's flags); the seed is
    /// drawn per request unless the request gives one.
    public var defaults: SamplingParams
    /// Ranks computing the model (reported by /health).
    public var ranks: Int

    public init(modelName: String, apiKey: String? = nil, maxBodyBytes: Int = 1 << 20, defaults: SamplingParams = .gemmaDefaults,
                ranks: Int = 1) {
        self.modelName = modelName
        self.apiKey = apiKey
        self.maxBodyBytes = maxBodyBytes
        self.defaults = defaults
        self.ranks = ranks
    }
}

/// What the service needs from the loaded model; attached once every rank has loaded.
public struct Backend: Sendable {
    public var scheduler: BatchScheduler
    public var tokenizer: GemmaTokenizer
    public var template: ChatTemplate
    /// Positions per sequence.
    public var maxContext: Int
    /// Ids that end a generation (EOS, end of turn).
    public var stopTokens: Set<Int32>

    public init(scheduler: BatchScheduler, tokenizer: GemmaTokenizer, template: ChatTemplate, maxContext: Int, stopTokens: Set<Int32>) {
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.template = template
        self.maxContext = maxContext
        self.stopTokens = stopTokens
    }
}

/// Which API a request came through.
public enum Endpoint: String, Sendable {
    case chat = "/v1/chat/completions"
    case completion = "/v1/completions"
}

/// A checked request, ready to submit.
public struct PreparedRequest: Sendable {
    public var endpoint: Endpoint
    public var id: String
    public var created: Int
    public var model: String
    public var generation: GenerationRequest
    public var stream: Bool
    public var includeUsage: Bool
    public var stops: [String]
    /// Monotonic arrival time (seconds) for time-to-first-token.
    public var arrival: Double
    /// Chat: tools, tool_choice and thinking.
    public var tools = ToolRequest()
}

/// How a generation ended, as OpenAI reports it.
public struct Outcome: Sendable, Equatable {
    /// "stop" (end of turn, EOS or a stop string) or "length" (max_tokens or context).
    public var finishReason: String
    public var completionTokens: Int
    /// Prompt tokens reused from the prefix cache.
    public var cachedTokens = 0
    /// Chat: the calls the answer made (finish reason "tool_calls").
    public var toolCalls: [ToolCall] = []
}

extension RunningRequest {
    /// `usage.prompt_tokens_details` when the engine caches prefixes (absent without one).
    func cacheDetails(_ outcome: Outcome) -> PromptTokensDetails? {
        backend.scheduler.prefixCache ? PromptTokensDetails(cached_tokens: outcome.cachedTokens) : nil
    }
}

/// A submitted generation: its events and the ticket to cancel it.
public struct RunningRequest: Sendable {
    public var prepared: PreparedRequest
    public var ticket: UInt64
    public var events: AsyncStream<SequenceEvent>
    public var backend: Backend
}

func monotonicSeconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// The API's behaviour. Thread-safe; one per server.
public final class OpenAIService: @unchecked Sendable {
    public let config: ServerConfig
    public let metrics = ServerMetrics()
    private let lock = NSLock()
    private var backend: Backend?
    private var nextId: UInt64 = 0
    private var draining = false
    /// Set when the cluster failed (a rank stopped answering): /health and new requests get
    /// 503 with this text until the process ends.
    private var failure: String?
    /// Completion requests between `start` and the end of their response.
    private var inFlight = 0

    public init(config: ServerConfig) { self.config = config }

    /// Sampling limits of the API (OpenAI's temperature range is [0, 2]).
    static let limits = PlanLimits(maxTemperature: 2)

    /// Makes the service ready (every rank has loaded the model).
    public func attach(_ backend: Backend) {
        lock.lock()
        self.backend = backend
        lock.unlock()
        let scheduler = backend.scheduler
        metrics.liveLoad = { scheduler.load }
        backend.scheduler.onStep = { [metrics] report in
            metrics.step(sequences: report.sequences, tokens: report.tokens, forward: report.forwardSeconds,
                         allReduce: report.allReduceSeconds, control: report.controlSeconds, sampling: report.samplingSeconds,
                         queued: report.queued, running: backend.scheduler.load.running)
            metrics.masked(rows: report.maskedRows, seconds: report.maskSeconds)
            metrics.cachedPrompt(tokens: report.cachedPromptTokens)
        }
    }

    /// From now on new requests get 503 (shutdown under way).
    public func drain() {
        lock.lock()
        draining = true
        lock.unlock()
    }

    /// The cluster failed: from now on /health answers 503 with `message`, and so does every
    /// new request. Requests in flight have already been failed by the scheduler.
    public func fail(_ message: String) {
        lock.lock()
        failure = message
        draining = true
        lock.unlock()
    }

    /// Why the cluster failed, if it did.
    public var failureMessage: String? {
        lock.lock()
        defer { lock.unlock() }
        return failure
    }

    /// True once the model is loaded on every rank and until shutdown starts.
    public var isReady: Bool {
        lock.lock()
        defer { lock.unlock() }
        return backend != nil && !draining
    }

    /// Counts a completion response as open (`start`) or finished (`requestEnded`).
    public var requestsInFlight: Int {
        lock.lock()
        defer { lock.unlock() }
        return inFlight
    }

    /// A response started by `start` has been handed to the client (or the client left).
    public func requestEnded() {
        lock.lock()
        inFlight -= 1
        lock.unlock()
    }

    /// Waits until every open completion response has ended, at most `timeout` seconds
    /// (after a cluster failure, so the error responses leave before the job is aborted).
    public func waitForRequests(timeout: Double) {
        let end = monotonicSeconds() + timeout
        while requestsInFlight > 0 && monotonicSeconds() < end { usleep(20_000) }
    }

    private func currentBackend() throws -> Backend {
        lock.lock()
        defer { lock.unlock() }
        if let failure { throw APIError.unavailable("the cluster failed: \(failure)") }
        if draining { throw APIError.unavailable("the server is shutting down") }
        guard let backend else { throw APIError.unavailable("the model is still loading") }
        return backend
    }

    private func newId(_ prefix: String) -> (String, UInt64) {
        lock.lock()
        nextId += 1
        let n = nextId
        lock.unlock()
        return ("\(prefix)-\(n)", n)
    }

    /// Checks the `Authorization` header against the key (when one is set).
    public func authorize(_ header: String?) throws {
        guard let key = config.apiKey else { return }
        guard let header, header.hasPrefix("Bearer "), header.dropFirst("Bearer ".count) == key[...] else {
            throw APIError.unauthorized
        }
    }

    /// Decodes and checks a request body, encodes its prompt and builds the engine request.
    public func prepare(_ endpoint: Endpoint, body: Data) throws -> (PreparedRequest, Backend) {
        let arrival = monotonicSeconds()
        let decoder = JSONDecoder()
        let common: CommonParameters
        var chat: [ChatMessageIn] = []
        var prompt = ""
        do {
            switch endpoint {
            case .chat:
                let r = try decoder.decode(ChatCompletionRequest.self, from: body)
                common = r.common
                chat = r.messages
            case .completion:
                let r = try decoder.decode(CompletionRequest.self, from: body)
                common = r.common
                let prompts = r.prompt.list
                guard prompts.count == 1 else {
                    throw APIError.badRequest("exactly one prompt per request is supported, got \(prompts.count)", param: "prompt")
                }
                prompt = prompts[0]
            }
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError.badRequest("malformed request body: \(Self.describe(error))")
        }
        let backend = try currentBackend()

        var settings = config.defaults
        settings.seed = UInt64.random(in: 0...UInt64.max)
        if let t = common.temperature { settings.temperature = Float(t) }
        if let p = common.top_p { settings.topP = Float(p) }
        if let k = common.top_k { settings.topK = Int32(clamping: k) }
        if let m = common.min_p { settings.minP = Float(m) }
        if let s = common.seed { settings.seed = UInt64(bitPattern: s) }
        // The engine's rule set, with the OpenAI API's temperature bound.
        do {
            try settings.validate(Self.limits)
        } catch let e as PlanError {
            throw APIError.badRequest(e.detail, param: e.field)
        }
        if let n = common.n, n != 1 { throw APIError.badRequest("only n = 1 is supported, got \(n)", param: "n") }
        let logprobs = try Self.logprobsRequest(endpoint, common)
        // The body again with members in order (schemas are generated in their order), read
        // once for the fields that need it: chat's tool and thinking fields, a json_schema.
        let ordered = endpoint == .chat || common.response_format?.type == "json_schema" ? try? JSONValue.parse([UInt8](body)) : nil
        var grammar = try Self.grammarRequest(ordered, common)
        var toolRequest = ToolRequest()
        if endpoint == .chat {
            toolRequest = try ToolRequest.parse(ordered)
        } else if common.tools != nil || common.tool_choice != nil {
            throw APIError.badRequest("tools are a chat completions field", param: common.tools != nil ? "tools" : "tool_choice")
        }
        if grammar != nil && toolRequest.choice != .none {
            throw APIError.badRequest("response_format json_object or json_schema cannot be combined with tools (unless tool_choice is \"none\")",
                                      param: "response_format")
        }
        let forcedCall = try toolRequest.forcedGrammar(backend.template.format)
        if let forcedCall { grammar = forcedCall }
        let stops = common.stop?.list ?? []
        guard stops.count <= 4 else { throw APIError.badRequest("at most 4 stop strings, got \(stops.count)", param: "stop") }
        if grammar != nil && !stops.isEmpty {
            // A stop string could cut the JSON short.
            throw APIError.badRequest(forcedCall != nil ? "stop strings cannot be combined with a forced tool call (tool_choice required or a named function)"
                                      : "stop strings cannot be combined with response_format json_object or json_schema", param: "stop")
        }

        let tokens: [Int32]
        switch endpoint {
        case .chat:
            guard !chat.isEmpty else { throw APIError.badRequest("messages must not be empty", param: "messages") }
            let messages = try Self.chatMessages(chat)
            var template = backend.template
            template.enableThinking = toolRequest.thinking
            do {
                tokens = try backend.tokenizer.encodeChat(messages, template: template, tools: toolRequest.choice == .none ? [] : toolRequest.tools,
                                                          openToolCall: forcedCall != nil)
            } catch {
                throw APIError.badRequest("\(error)", param: "messages")
            }
        case .completion:
            tokens = backend.tokenizer.encode(prompt)
            guard !tokens.isEmpty else { throw APIError.badRequest("the prompt is empty", param: "prompt") }
        }

        let context = backend.maxContext
        let requested = common.max_completion_tokens ?? common.max_tokens
        let maxTokens: Int
        if let requested {
            guard requested >= 1 else { throw APIError.badRequest("max_tokens must be at least 1, got \(requested)", param: "max_tokens") }
            // Compared by subtraction: max_tokens near Int.max would overflow the sum, and the
            // trap would take the whole server down with one request.
            if requested > context - tokens.count {
                throw APIError.contextOverflow(prompt: tokens.count, completion: requested, context: context)
            }
            maxTokens = requested
        } else {
            if tokens.count >= context { throw APIError.contextOverflow(prompt: tokens.count, completion: 1, context: context) }
            maxTokens = context - tokens.count
        }
        if let grammar {
            let budget = min(maxTokens, context - tokens.count)
            if grammar.grammar.minimumLength > budget {
                throw APIError.badRequest("max_tokens \(budget) is too small for \(forcedCall != nil ? "the forced tool call" : "response_format"): "
                                          + "the shortest value the schema accepts takes \(grammar.grammar.minimumLength) tokens", param: "max_tokens")
            }
        }
        var stopTokens = backend.stopTokens
        if backend.template.format == .gemma4 && toolRequest.choice != .none, let id = backend.tokenizer.id(of: "<|tool_response>") {
            // Gemma 4 ends a calling turn by opening the results block (GEMMA_SPEC §A4.3).
            stopTokens.insert(id)
        }
        let (id, number) = newId(endpoint == .chat ? "chatcmpl" : "cmpl")
        let generation = GenerationRequest(id: number, promptTokens: tokens, maxNewTokens: maxTokens, sampling: settings,
                                           stopTokens: stopTokens, logprobs: logprobs, grammar: grammar?.text ?? [])
        let prepared = PreparedRequest(endpoint: endpoint, id: id, created: Int(Date().timeIntervalSince1970),
                                       model: config.modelName, generation: generation, stream: common.stream ?? false,
                                       includeUsage: common.stream_options?.include_usage ?? false, stops: stops, arrival: arrival,
                                       tools: toolRequest)
        return (prepared, backend)
    }

    /// The request's messages for the template: roles as given (the template checks them),
    /// assistant `tool_calls` with their arguments parsed, tool messages with their call id.
    static func chatMessages(_ chat: [ChatMessageIn]) throws -> [ChatMessage] {
        try chat.enumerated().map { i, m in
            var calls: [ToolCall] = []
            for (k, c) in (m.tool_calls ?? []).enumerated() {
                let text = c.function.arguments ?? "{}"
                guard let args = try? JSONValue.parse(Array(text.utf8)), args.members != nil else {
                    throw APIError.badRequest("messages[\(i)].tool_calls[\(k)].function.arguments must be a JSON object in a string", param: "messages")
                }
                calls.append(ToolCall(id: c.id ?? "call_\(i)_\(k)", name: c.function.name, arguments: args))
            }
            if m.role == "tool" && m.tool_call_id == nil && m.name == nil {
                throw APIError.badRequest("messages[\(i)] (role tool) needs a tool_call_id", param: "messages")
            }
            return ChatMessage(role: m.role, content: m.content?.text ?? "", toolCalls: calls, toolCallId: m.tool_call_id, name: m.name)
        }
    }

    /// Structured output: nil for text, else the compiled schema and its text for the plan.
    /// `json_object` is `{"type":"object"}`; `json_schema` takes `json_schema.schema` (absent:
    /// any JSON value), read from the body parsed again with members in order (declared properties
    /// are generated in the schema's order). A schema outside the subset is a 400 naming the
    /// keyword.
    static func grammarRequest(_ body: JSONValue?, _ common: CommonParameters) throws -> (grammar: JSONGrammar, text: [UInt8])? {
        guard let f = common.response_format, f.type != "text" else { return nil }
        let schema: JSONValue
        switch f.type {
        case "json_object":
            schema = .object(keys: ["type"], values: [.string("object")])
        case "json_schema":
            let format = body?["response_format"]
            guard let spec = format?["json_schema"], spec.members != nil else {
                throw APIError.badRequest("response_format json_schema needs a \"json_schema\" object", param: "response_format")
            }
            guard let name = spec["name"]?.string, !name.isEmpty else {
                throw APIError.badRequest("response_format.json_schema needs a \"name\"", param: "response_format")
            }
            // Output is always held to the schema, so strict true and false behave alike.
            switch spec["strict"] {
            case nil, .bool?, .null?: break
            default: throw APIError.badRequest("response_format.json_schema.strict must be a boolean", param: "response_format")
            }
            schema = spec["schema"] ?? .object(keys: [], values: [])
        default:
            throw APIError.badRequest("response_format type must be \"text\", \"json_object\" or \"json_schema\", got \"\(f.type)\"",
                                      param: "response_format")
        }
        let text = JSONValue.serialize(schema)
        guard text.count <= WireLimits.maxGrammarBytes else {
            throw APIError.badRequest("response_format: the schema takes \(text.count) bytes, more than \(WireLimits.maxGrammarBytes)",
                                      param: "response_format")
        }
        do {
            return (try JSONGrammar(schema: schema), text)
        } catch let e as GrammarError {
            throw APIError.badRequest(e.message, param: "response_format")
        }
    }

    /// The alternatives per token a request asks for (nil: no logprobs). Chat: `logprobs`
    /// (boolean) with `top_logprobs` 0...20, which needs `logprobs: true` (as OpenAI);
    /// completions: `logprobs` 0...20 (OpenAI's legacy integer; `top_logprobs` is not a
    /// completions field).
    static func logprobsRequest(_ endpoint: Endpoint, _ common: CommonParameters) throws -> Int? {
        let limit = WireLimits.maxTopLogprobs
        switch endpoint {
        case .chat:
            let on: Bool
            switch common.logprobs {
            case nil: on = false
            case let .flag(b): on = b
            case .count: throw APIError.badRequest("logprobs must be a boolean on chat completions (top_logprobs gives the alternatives)", param: "logprobs")
            }
            if let k = common.top_logprobs {
                guard (0...limit).contains(k) else {
                    throw APIError.badRequest("top_logprobs must be in 0...\(limit), got \(k)", param: "top_logprobs")
                }
                guard on || k == 0 else { throw APIError.badRequest("top_logprobs needs logprobs: true", param: "top_logprobs") }
            }
            return on ? (common.top_logprobs ?? 0) : nil
        case .completion:
            if common.top_logprobs != nil {
                throw APIError.badRequest("top_logprobs is a chat completions field; completions take logprobs: N", param: "top_logprobs")
            }
            switch common.logprobs {
            case nil: return nil
            case .flag: throw APIError.badRequest("logprobs must be an integer in 0...\(limit) on completions", param: "logprobs")
            case let .count(k):
                guard (0...limit).contains(k) else { throw APIError.badRequest("logprobs must be in 0...\(limit), got \(k)", param: "logprobs") }
                return k
            }
        }
    }

    /// Queues a prepared request on the engine (429 when the queue is full).
    public func start(_ prepared: PreparedRequest, backend: Backend) throws -> RunningRequest {
        do {
            let (ticket, events) = try backend.scheduler.stream(prepared.generation)
            lock.lock()
            inFlight += 1
            lock.unlock()
            metrics.prompt(tokens: prepared.generation.promptTokens.count)
            let load = backend.scheduler.load
            metrics.load(queued: load.waiting, running: load.running)
            return RunningRequest(prepared: prepared, ticket: ticket, events: events, backend: backend)
        } catch let error as SchedulerError {
            switch error {
            case .queueFull: throw APIError.busy("\(error)")
            case .shuttingDown: throw APIError.unavailable("\(error)")
            case .invalidRequest: throw APIError.badRequest("\(error)")
            }
        }
    }

    /// Consumes a running request: hands each piece of text to `onText` as soon as no stop
    /// string can begin in it, with the log-probabilities of the tokens generated since the
    /// last piece (when asked; the tokens of a matched stop string included). If `onText`
    /// throws (the client went away), the request is cancelled (its slot freed on every rank)
    /// and the error rethrown.
    public func consume(_ run: RunningRequest, onText: (AnswerPiece, [TokenLogprobs]) async throws -> Void) async throws -> Outcome {
        let scheduler = run.backend.scheduler
        let tokenizer = run.backend.tokenizer
        let format = run.backend.template.format
        let chat = run.prepared.endpoint == .chat
        // Gemma 4 chat: the channel and call markers reach the splitter as text (it never
        // passes them on); Gemma 1-3 chat only needs it with tools.
        let rendered = chat && format == .gemma4
            ? Set(AssistantOutputSplitter.structuralMarkers.compactMap { tokenizer.id(of: $0) }) : []
        var splitter = chat && (format == .gemma4 || run.prepared.tools.choice != .none)
            ? AssistantOutputSplitter(format: format, tools: run.prepared.tools.tools, choice: run.prepared.tools.choice) : nil
        var decoder = StreamingDecoder(tokenizer: tokenizer, rendered: rendered)
        var matcher = StopMatcher(run.prepared.stops)
        var count = 0
        var last = run.prepared.arrival
        var pending: [TokenLogprobs] = []
        var cached = 0
        var calls: [ToolCall] = []
        let prefix = run.prepared.id
        func deliver(_ piece: AnswerPiece) async throws {
            let logprobs = pending
            pending = []
            try await onText(piece, logprobs)
        }
        func send(_ text: String, final: Bool = false) async throws {
            guard splitter != nil else {
                guard !text.isEmpty || !pending.isEmpty else { return }
                try await deliver(.content(text))
                return
            }
            var pieces = splitter!.push(text)
            if final {
                let (rest, made) = splitter!.finish(callId: { "call_\(prefix.dropFirst("chatcmpl-".count))_\($0)" })
                pieces += rest
                calls = made
            }
            for piece in pieces { try await deliver(piece) }
            if final && !pending.isEmpty { try await deliver(.content("")) }
        }
        do {
            for await event in run.events {
                switch event {
                case let .logprobs(l):
                    pending.append(l)
                case let .promptCached(n):
                    cached = n
                case let .token(t):
                    count += 1
                    let now = monotonicSeconds()
                    if count == 1 { metrics.timeToFirstToken(now - run.prepared.arrival) } else { metrics.interTokenLatency(now - last) }
                    last = now
                    metrics.generated(tokens: 1)
                    let (emit, stopped) = matcher.push(decoder.push(t))
                    if !emit.isEmpty || stopped { try await send(emit, final: stopped) }
                    if stopped {
                        scheduler.cancel(run.ticket)
                        return Outcome(finishReason: calls.isEmpty ? "stop" : "tool_calls", completionTokens: count,
                                       cachedTokens: cached, toolCalls: calls)
                    }
                case let .finished(result):
                    var (emit, stopped) = matcher.push(decoder.finish())
                    if !stopped { emit += matcher.flush() }
                    try await send(emit, final: true)
                    let reason: String
                    switch result.finishReason {
                    case .stop: reason = "stop"
                    case .length: reason = "length"
                    case .cancelled: reason = stopped ? "stop" : "cancelled"
                    }
                    if !calls.isEmpty && (stopped || result.finishReason != .cancelled) {
                        return Outcome(finishReason: "tool_calls", completionTokens: count, cachedTokens: cached, toolCalls: calls)
                    }
                    return Outcome(finishReason: stopped ? "stop" : reason, completionTokens: count, cachedTokens: cached)
                case let .failed(message):
                    // The cluster stopped (e.g. a rank stopped answering): the server exits and
                    // is restarted; 503 tells the client to retry then (docs/RELIABILITY.md).
                    throw APIError.unavailable("the cluster failed: \(message)")
                }
            }
        } catch {
            scheduler.cancel(run.ticket)
            throw error
        }
        // The stream ended without a final event: the consuming task was cancelled.
        scheduler.cancel(run.ticket)
        throw CancellationError()
    }

    /// A whole non-streaming response body.
    public func completeJSON(_ run: RunningRequest) async throws -> Data {
        var text = ""
        var reasoning: String?
        var logprobs: [TokenLogprobs] = []
        let outcome = try await consume(run) { piece, l in
            switch piece {
            case let .content(s): text += s
            case let .reasoning(s): reasoning = (reasoning ?? "") + s
            case .callStart, .callArguments: break  // the call comes whole in the outcome
            }
            logprobs += l
        }
        let tokenizer = run.backend.tokenizer
        let wanted = run.prepared.generation.logprobs != nil
        let p = run.prepared
        let usage = Usage(prompt_tokens: p.generation.promptTokens.count, completion_tokens: outcome.completionTokens,
                          total_tokens: p.generation.promptTokens.count + outcome.completionTokens,
                          prompt_tokens_details: run.cacheDetails(outcome))
        let encoder = JSONEncoder()
        switch p.endpoint {
        case .chat:
            return try encoder.encode(ChatCompletionResponse(
                id: p.id, created: p.created, model: p.model,
                choices: [ChatChoice(index: 0, message: ChatMessageOut(role: "assistant", content: outcome.toolCalls.isEmpty || !text.isEmpty ? text : nil,
                                                                       reasoning_content: reasoning,
                                                                       tool_calls: outcome.toolCalls.isEmpty ? nil : outcome.toolCalls.map(ToolCallOut.init)),
                                     logprobs: wanted ? Self.chatLogprobs(logprobs, tokenizer) : nil, finish_reason: outcome.finishReason)],
                usage: usage))
        case .completion:
            return try encoder.encode(CompletionResponse(
                id: p.id, created: p.created, model: p.model,
                choices: [TextChoice(index: 0, text: text, logprobs: wanted ? Self.legacyLogprobs(logprobs, tokenizer, offset: 0).0 : nil,
                                     finish_reason: outcome.finishReason)], usage: usage))
        }
    }

    /// Streams server-sent events through `write` (each call one complete event), ending with
    /// `data: [DONE]`. An engine failure mid-stream is sent as an error event.
    public func streamEvents(_ run: RunningRequest, write: (String) async throws -> Void) async throws {
        let p = run.prepared
        let encoder = JSONEncoder()
        func event<T: Encodable>(_ value: T) throws -> String {
            "data: " + String(decoding: try encoder.encode(value), as: UTF8.self) + "\n\n"
        }
        func chatChunk(_ delta: ChatDelta, _ finish: String?, usage: Usage? = nil, noChoices: Bool = false,
                       logprobs: ChatLogprobs? = nil) throws -> String {
            try event(ChatCompletionChunk(id: p.id, created: p.created, model: p.model,
                                          choices: noChoices ? [] : [ChatChunkChoice(index: 0, delta: delta, logprobs: logprobs,
                                                                                     finish_reason: finish)],
                                          usage: usage))
        }
        func textChunk(_ text: String, _ finish: String?, usage: Usage? = nil, noChoices: Bool = false,
                       logprobs: LegacyLogprobs? = nil) throws -> String {
            try event(CompletionResponse(id: p.id, created: p.created, model: p.model,
                                         choices: noChoices ? [] : [TextChoice(index: 0, text: text, logprobs: logprobs, finish_reason: finish)],
                                         usage: usage))
        }
        let tokenizer = run.backend.tokenizer
        let wanted = p.generation.logprobs != nil
        var offset = 0
        var streamedCall = false
        let firstCallId = "call_\(p.id.dropFirst("chatcmpl-".count))_0"
        if p.endpoint == .chat { try await write(try chatChunk(ChatDelta(role: "assistant", content: ""), nil)) }
        let outcome: Outcome
        do {
            outcome = try await consume(run) { piece, logprobs in
                if p.endpoint == .chat {
                    var delta = ChatDelta()
                    switch piece {
                    case let .content(s): delta.content = s
                    case let .reasoning(s): delta.reasoning_content = s
                    case let .callStart(name):
                        streamedCall = true
                        delta.tool_calls = [ToolCallDelta(index: 0, id: firstCallId, name: name, arguments: "")]
                    case let .callArguments(s): delta.tool_calls = [ToolCallDelta(index: 0, id: nil, name: nil, arguments: s)]
                    }
                    try await write(try chatChunk(delta, nil, logprobs: wanted ? Self.chatLogprobs(logprobs, tokenizer) : nil))
                } else {
                    guard case let .content(piece) = piece else { return }
                    var legacy: LegacyLogprobs?
                    if wanted { (legacy, offset) = Self.legacyLogprobs(logprobs, tokenizer, offset: offset) }
                    try await write(try textChunk(piece, nil, logprobs: legacy))
                }
            }
        } catch let error as APIError {
            try await write("data: " + String(decoding: error.json, as: UTF8.self) + "\n\n")
            try await write("data: [DONE]\n\n")
            return
        }
        if !outcome.toolCalls.isEmpty && !streamedCall {
            try await write(try chatChunk(ChatDelta(tool_calls: outcome.toolCalls.enumerated().map { ToolCallDelta(index: $0, $1) }), nil))
        }
        try await write(p.endpoint == .chat ? try chatChunk(ChatDelta(), outcome.finishReason) : try textChunk("", outcome.finishReason))
        if p.includeUsage {
            let usage = Usage(prompt_tokens: p.generation.promptTokens.count, completion_tokens: outcome.completionTokens,
                              total_tokens: p.generation.promptTokens.count + outcome.completionTokens,
                              prompt_tokens_details: run.cacheDetails(outcome))
            try await write(p.endpoint == .chat ? try chatChunk(ChatDelta(), nil, usage: usage, noChoices: true)
                                                : try textChunk("", nil, usage: usage, noChoices: true))
        }
        try await write("data: [DONE]\n\n")
    }

    /// A token as OpenAI's logprobs show it: its text (markers as their piece, e.g.
    /// "<end_of_turn>"; a lone byte of a longer character as U+FFFD) and its raw bytes.
    static func tokenText(_ id: Int32, _ tokenizer: GemmaTokenizer) -> (String, [UInt8]) {
        let bytes = tokenizer.bytes(of: id, renderSpecial: true)
        return (String(decoding: bytes, as: UTF8.self), bytes)
    }

    /// Chat's `logprobs` object for some generated tokens.
    static func chatLogprobs(_ tokens: [TokenLogprobs], _ tokenizer: GemmaTokenizer) -> ChatLogprobs {
        ChatLogprobs(content: tokens.map { t in
            let (text, bytes) = tokenText(t.chosen.id, tokenizer)
            return ChatTokenLogprob(token: text, logprob: jsonLogprob(t.chosen.logprob), bytes: bytes, top_logprobs: t.top.map { a in
                let (s, b) = tokenText(a.id, tokenizer)
                return ChatTopLogprob(token: s, logprob: jsonLogprob(a.logprob), bytes: b)
            })
        })
    }

    /// The legacy completions `logprobs` object for some generated tokens; `offset` is where
    /// the first token's text starts (Unicode scalars); returns the offset after the last.
    /// Alternatives with the same text keep the first (most likely) one.
    static func legacyLogprobs(_ tokens: [TokenLogprobs], _ tokenizer: GemmaTokenizer, offset: Int) -> (LegacyLogprobs, Int) {
        var out = LegacyLogprobs()
        var at = offset
        for t in tokens {
            let (text, _) = tokenText(t.chosen.id, tokenizer)
            out.tokens.append(text)
            out.token_logprobs.append(jsonLogprob(t.chosen.logprob))
            out.text_offset.append(at)
            at += text.unicodeScalars.count
            var seen = Set<String>()
            var entries: [(String, Double)] = []
            for a in t.top {
                let (s, _) = tokenText(a.id, tokenizer)
                if seen.insert(s).inserted { entries.append((s, jsonLogprob(a.logprob))) }
            }
            out.top_logprobs.append(OrderedLogprobs(entries: entries))
        }
        return (out, at)
    }

    /// The /v1/models body.
    public func modelsJSON() -> Data {
        (try? JSONEncoder().encode(ModelList(data: [ModelEntry(id: config.modelName, created: Int(Date().timeIntervalSince1970))])))
            ?? Data("{}".utf8)
    }

    /// A short description of a JSON decoding error (the default one is very long).
    static func describe(_ error: Error) -> String {
        guard let e = error as? DecodingError else { return "\(error)" }
        func path(_ c: DecodingError.Context) -> String {
            let p = c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : " at \(p)"
        }
        switch e {
        case let .keyNotFound(key, c): return "missing field \"\(key.stringValue)\"\(path(c))"
        case let .typeMismatch(type, c): return "expected \(type)\(path(c)): \(c.debugDescription)"
        case let .valueNotFound(type, c): return "missing \(type) value\(path(c))"
        case let .dataCorrupted(c): return "\(c.debugDescription)\(path(c))"
        @unknown default: return "\(error)"
        }
    }
}
