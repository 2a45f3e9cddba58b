// The OpenAI request logic without HTTP: a scripted one-rank model (its greedy next token is a
// function of the position, so expected texts are computed here), the tiny fixture tokenizer,
// and the real scheduler on its own thread. Checks request validation and error codes, usage,
// stop strings (also split across tokens), EOS, streaming events, queue limits, and the
// metrics text. The full server under mpirun is Tests/GemmaNodeTests/ServerTests.swift.
import Foundation
import Testing
@testable import GemmaServer
import GemmaEngine
import GemmaModel
import GemmaParallel
import GemmaTokenizer
import GemmaTestSupport

/// Greedy output at position p is `script[p % script.count]` (a logit of 10 there, 0 elsewhere).
final class ScriptModel: ShardedCausalLM {
    let vocabSize: Int
    var sampleableVocab: Int { vocabSize }
    var vocabRange: Range<Int> { 0..<vocabSize }
    let maxContext: Int
    let slots: Int
    let maxBatchTokens = 64
    let script: [Int32]
    /// Seconds each forward pass sleeps (a slow model, so a cancellation can land midway).
    let stepDelay: Double
    private var lengths: [Int]
    private var output: [Float]

    init(vocabSize: Int, script: [Int32], maxContext: Int = 64, slots: Int = 2, stepDelay: Double = 0) {
        self.vocabSize = vocabSize
        self.stepDelay = stepDelay
        self.script = script
        self.maxContext = maxContext
        self.slots = slots
        lengths = Array(repeating: 0, count: slots)
        output = Array(repeating: 0, count: 64 * vocabSize)
    }

    static func next(_ script: [Int32], position: Int) -> Int32 { script[position % script.count] }

    func forward(_ batch: [BatchEntry]) throws -> LogitsSlice {
        if stepDelay > 0 { usleep(UInt32(stepDelay * 1e6)) }
        var rows = 0
        for e in batch {
            guard e.position == lengths[e.slot] else { throw EngineError.badPlan("slot \(e.slot) not released") }
            lengths[e.slot] += 1
            if e.wantLogits {
                for v in 0..<vocabSize { output[rows * vocabSize + v] = 0 }
                output[rows * vocabSize + Int(Self.next(script, position: e.position + 1))] = 10
                rows += 1
            }
        }
        return output.withUnsafeBufferPointer { LogitsSlice(vocabRange: vocabRange, rows: rows, values: $0) }
    }

    func release(slot: Int) { lengths[slot] = 0 }
}

/// A running service over `ScriptModel`; `stop()` ends the engine loop.
final class ServiceHarness: @unchecked Sendable {
    let service: OpenAIService
    let scheduler: BatchScheduler
    let tokenizer: GemmaTokenizer
    let script: [Int32]
    private let done = DispatchSemaphore(value: 0)

    static let tokenizerPath = TestPaths.fixture("tokenizer/tiny_tokenizer.json").path

    /// `tokenizer` and `script` replace the fixture tokenizer and the reply's ids when given.
    init(reply: String, eos: Bool = false, maxContext: Int = 64, slots: Int = 2, maxQueued: Int = 8, apiKey: String? = nil,
         tokenizer custom: GemmaTokenizer? = nil, script ids: [Int32]? = nil, stepDelay: Double = 0, maxBodyBytes: Int = 1 << 20,
         format: ChatFormat = .gemma) throws {
        tokenizer = try custom ?? GemmaTokenizer.load(path: Self.tokenizerPath)
        var s = ids ?? tokenizer.encode(reply, addSpecial: false)
        if eos, let e = tokenizer.eosID { s.append(e) }
        script = s
        let model = ScriptModel(vocabSize: tokenizer.count, script: s, maxContext: maxContext, slots: slots, stepDelay: stepDelay)
        let executor = StepExecutor(model: model, comm: SoloCommunicator())
        executor.vocabularyBytes = VocabularyBytes(tokenizer: tokenizer, vocabSize: tokenizer.count)
        scheduler = try BatchScheduler(executor: executor, maxQueued: maxQueued)
        service = OpenAIService(config: ServerConfig(modelName: "script", apiKey: apiKey, maxBodyBytes: maxBodyBytes))
        service.attach(Backend(scheduler: scheduler, tokenizer: tokenizer, template: ChatTemplate(format: format), maxContext: maxContext,
                               stopTokens: Set(tokenizer.endOfGenerationIDs)))
        let scheduler = self.scheduler
        let done = self.done
        Thread {
            try? scheduler.run()
            done.signal()
        }.start()
    }

    func stop() {
        scheduler.requestShutdown()
        done.wait()
    }

    /// What the model says after a prompt of `promptLength` tokens, `n` tokens long.
    func expected(promptLength: Int, n: Int) -> [Int32] {
        (0..<n).map { ScriptModel.next(script, position: promptLength + $0) }
    }

    func run(_ endpoint: Endpoint, _ json: String) async throws -> [String: Any] {
        let (prepared, backend) = try service.prepare(endpoint, body: Data(json.utf8))
        let running = try service.start(prepared, backend: backend)
        let data = try await service.completeJSON(running)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func apiError(_ endpoint: Endpoint, _ json: String) -> APIError? {
        do {
            let (prepared, backend) = try service.prepare(endpoint, body: Data(json.utf8))
            _ = try service.start(prepared, backend: backend)
            return nil
        } catch { return error as? APIError }
    }
}

func choice(_ object: [String: Any]) -> [String: Any] { ((object["choices"] as? [[String: Any]]) ?? [[:]])[0] }

@Suite struct ServiceTests {
    @Test func completionTextUsageAndLength() async throws {
        let h = try ServiceHarness(reply: "hello world ")
        defer { h.stop() }
        let promptIds = h.tokenizer.encode("the cat")
        let object = try await h.run(.completion, #"{"prompt": "the cat", "max_tokens": 7, "temperature": 0}"#)
        let want = h.tokenizer.decode(h.expected(promptLength: promptIds.count, n: 7))
        #expect(choice(object)["text"] as? String == want)
        #expect(choice(object)["finish_reason"] as? String == "length")
        let usage = try #require(object["usage"] as? [String: Int])
        #expect(usage == ["prompt_tokens": promptIds.count, "completion_tokens": 7, "total_tokens": promptIds.count + 7])
        #expect(object["object"] as? String == "text_completion")
    }

    @Test func chatStopsAtEndOfGenerationAndStopStrings() async throws {
        let h = try ServiceHarness(reply: "ab cd ", eos: true)
        defer { h.stop() }
        // EOS in the script: finish_reason stop, the EOS itself not in the text or the count.
        let messages = #"[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]"#
        let chatIds = try h.tokenizer.encodeChat([ChatMessage(role: "system", content: "be brief"), ChatMessage(role: "user", content: "hello")],
                                                 template: ChatTemplate(format: .gemma))
        let object = try await h.run(.chat, #"{"messages": \#(messages), "max_tokens": 30, "temperature": 0}"#)
        let all = h.expected(promptLength: chatIds.count, n: 30)
        let untilEOS = Array(all.prefix { $0 != h.tokenizer.eosID })
        #expect(untilEOS.count < 30)
        let message = try #require(choice(object)["message"] as? [String: Any])
        #expect(message["content"] as? String == h.tokenizer.decode(untilEOS))
        #expect(message["role"] as? String == "assistant")
        #expect(choice(object)["finish_reason"] as? String == "stop")
        #expect((object["usage"] as? [String: Int])?["completion_tokens"] == untilEOS.count)

        // A stop string: the text ends right before it; it may span several tokens.
        let text = h.tokenizer.decode(Array(all.prefix(8)))
        let stop = try #require(text.range(of: "cd")).lowerBound
        let cut = try await h.run(.chat, #"{"messages": \#(messages), "max_tokens": 30, "temperature": 0, "stop": ["zz", "cd"]}"#)
        let cutMessage = try #require(choice(cut)["message"] as? [String: Any])
        #expect(cutMessage["content"] as? String == String(text[..<stop]))
        #expect(choice(cut)["finish_reason"] as? String == "stop")
    }

    @Test func streamingEventsAndDone() async throws {
        let h = try ServiceHarness(reply: "hello world ")
        defer { h.stop() }
        let (prepared, backend) = try h.service.prepare(.chat, body: Data(#"""
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0, "stream": true,
             "stream_options": {"include_usage": true}}
            """#.utf8))
        let running = try h.service.start(prepared, backend: backend)
        var events: [String] = []
        try await h.service.streamEvents(running) { events.append($0) }
        #expect(events.allSatisfy { $0.hasPrefix("data: ") && $0.hasSuffix("\n\n") })
        #expect(events.last == "data: [DONE]\n\n")
        let objects = events.dropLast().compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.dropFirst(6).utf8)) as? [String: Any]
        }
        #expect(objects.count == events.count - 1)
        let deltas = objects.compactMap { ($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any] }
        #expect(deltas.first?["role"] as? String == "assistant")
        let text = deltas.compactMap { $0["content"] as? String }.joined()
        #expect(text == h.tokenizer.decode(h.expected(promptLength: prepared.generation.promptTokens.count, n: 5)))
        let finishes = objects.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }
        #expect(finishes == ["length"])
        #expect((objects.last?["usage"] as? [String: Int])?["completion_tokens"] == 5)
    }

    @Test func markersAreNeverText() async throws {
        // A vocabulary with Gemma 3's user-defined <start_of_image> (which the 270M model
        // sometimes samples), a Gemma 4 style marker and an HTML-tag piece that is text.
        let pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "▁hello", "▁world", "<start_of_image>", "<table>", "<|tool_call>",
                      "h", "i"]
        let tok = try GemmaTokenizer(pieces: pieces, scores: [Float](repeating: 0, count: pieces.count),
                                     types: [.control, .control, .control, .unknown, .normal, .normal, .userDefined, .userDefined,
                                             .userDefined, .normal, .normal],
                                     bosID: 2, eosID: 1, unknownID: 3, addBOS: true, addEOS: false, source: "test")
        let h = try ServiceHarness(reply: "", tokenizer: tok, script: [4, 6, 7, 8, 5])
        defer { h.stop() }
        let prompt = tok.encode("hi")
        // Five tokens of a five-token cycle: every piece of the script is generated once.
        #expect(Set(h.expected(promptLength: prompt.count, n: 5)) == [4, 5, 6, 7, 8])
        let object = try await h.run(.completion, #"{"prompt": "hi", "max_tokens": 5, "temperature": 0}"#)
        let text = try #require(choice(object)["text"] as? String)
        #expect(text == tok.decodeText(h.expected(promptLength: prompt.count, n: 5)))
        #expect(!text.contains("<start_of_image>") && !text.contains("<|tool_call>") && text.contains("<table>"))
        let (prepared, backend) = try h.service.prepare(.completion, body: Data(#"{"prompt": "hi", "max_tokens": 5, "temperature": 0, "stream": true}"#.utf8))
        var events: [String] = []
        try await h.service.streamEvents(try h.service.start(prepared, backend: backend)) { events.append($0) }
        let streamed = events.dropLast().compactMap {
            ((try? JSONSerialization.jsonObject(with: Data($0.dropFirst(6).utf8)) as? [String: Any])?["choices"] as? [[String: Any]])?
                .first?["text"] as? String
        }.joined()
        #expect(streamed == text)
    }

    /// OpenAI's logprobs shapes over the scripted model, whose logits are 10 at the scripted id
    /// and 0 elsewhere, so every value is known: log(e^10 / (e^10 + V - 1)) for the chosen id
    /// and -log(e^10 + V - 1) for each other one.
    @Test func logprobsShapesAndValues() async throws {
        let h = try ServiceHarness(reply: "hello world ")
        defer { h.stop() }
        let v = Double(h.tokenizer.count)
        let chosen = 10 - log(exp(10) + v - 1), other = -log(exp(10) + v - 1)
        // 1e-9: the service prints the sampler's doubles; JSON keeps them to 17 digits.
        func near(_ a: Any?, _ b: Double) -> Bool { (a as? Double).map { abs($0 - b) < 1e-9 } ?? false }

        let chat = try await h.run(.chat, #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0, "logprobs": true, "top_logprobs": 3}"#)
        let content = try #require((choice(chat)["logprobs"] as? [String: Any])?["content"] as? [[String: Any]])
        #expect(content.count == 4)
        let text = (choice(chat)["message"] as? [String: Any])?["content"] as? String
        #expect(content.compactMap { $0["token"] as? String }.joined() == text)
        for e in content {
            #expect(near(e["logprob"], chosen))
            let token = try #require(e["token"] as? String)
            #expect((e["bytes"] as? [Int]) == Array(token.utf8).map { Int($0) })
            let top = try #require(e["top_logprobs"] as? [[String: Any]])
            #expect(top.count == 3 && top[0]["token"] as? String == token && near(top[0]["logprob"], chosen))
            #expect(near(top[1]["logprob"], other) && near(top[2]["logprob"], other))
        }
        // Not asked: "logprobs": null, as OpenAI.
        let plain = try await h.run(.chat, #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}"#)
        #expect(choice(plain)["logprobs"] is NSNull)

        let completion = try await h.run(.completion, #"{"prompt": "the cat", "max_tokens": 3, "temperature": 0, "logprobs": 2}"#)
        let legacy = try #require(choice(completion)["logprobs"] as? [String: Any])
        let tokens = try #require(legacy["tokens"] as? [String])
        #expect(tokens.joined() == choice(completion)["text"] as? String)
        #expect((legacy["token_logprobs"] as? [Double])?.allSatisfy { abs($0 - chosen) < 1e-9 } == true)
        #expect((legacy["top_logprobs"] as? [[String: Double]])?.map(\.count) == [2, 2, 2])
        let offsets = try #require(legacy["text_offset"] as? [Int])
        #expect(offsets == [0, tokens[0].unicodeScalars.count, tokens[0].unicodeScalars.count + tokens[1].unicodeScalars.count])

        // Streamed: the chunks' entries together equal the non-streamed list.
        let (prepared, backend) = try h.service.prepare(.chat, body: Data(#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0, "logprobs": true, "top_logprobs": 3, "stream": true}"#.utf8))
        var events: [String] = []
        try await h.service.streamEvents(try h.service.start(prepared, backend: backend)) { events.append($0) }
        let streamed = events.dropLast().flatMap { event -> [String] in
            let object = try? JSONSerialization.jsonObject(with: Data(event.dropFirst(6).utf8)) as? [String: Any]
            let lp = ((object?["choices"] as? [[String: Any]])?.first?["logprobs"] as? [String: Any])?["content"] as? [[String: Any]]
            return (lp ?? []).compactMap { $0["token"] as? String }
        }
        #expect(streamed == content.compactMap { $0["token"] as? String })

        // Limits and types, each a 400 naming the field.
        #expect(h.apiError(.chat, #"{"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 21}"#)?.param == "top_logprobs")
        #expect(h.apiError(.chat, #"{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}"#)?.param == "top_logprobs")
        #expect(h.apiError(.chat, #"{"messages": [{"role": "user", "content": "hi"}], "logprobs": 3}"#)?.param == "logprobs")
        #expect(h.apiError(.completion, #"{"prompt": "a", "logprobs": 21}"#)?.param == "logprobs")
        #expect(h.apiError(.completion, #"{"prompt": "a", "logprobs": -1}"#)?.param == "logprobs")
        #expect(h.apiError(.completion, #"{"prompt": "a", "logprobs": true}"#)?.param == "logprobs")
        #expect(h.apiError(.completion, #"{"prompt": "a", "logprobs": 20}"#) == nil)
        // What is not implemented is refused, never silently ignored.
        #expect(h.apiError(.chat, #"{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "yaml"}}"#)?.param == "response_format")
        #expect(h.apiError(.chat, #"{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "x": [1, null, true]}}}], "tool_choice": "required"}"#)?.param == "tools")
        #expect(h.apiError(.chat, #"{"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}"#)?.param == "tool_choice")
        #expect(h.apiError(.chat, #"{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text"}, "tools": [], "tool_choice": "none", "max_tokens": 1}"#) == nil)
    }

    @Test func badRequestsGetOpenAIErrors() async throws {
        let h = try ServiceHarness(reply: "x", maxContext: 32, apiKey: "sekret")
        defer { h.stop() }
        #expect(h.apiError(.chat, "{not json")?.status == 400)
        #expect(h.apiError(.chat, #"{"messages": "nope"}"#)?.status == 400)
        #expect(h.apiError(.chat, #"{"messages": []}"#)?.status == 400)
        #expect(h.apiError(.completion, #"{"prompt": "a", "temperature": 3}"#)?.param == "temperature")
        #expect(h.apiError(.completion, #"{"prompt": "a", "top_p": 0}"#)?.param == "top_p")
        #expect(h.apiError(.completion, #"{"prompt": "a", "n": 2}"#)?.status == 400)
        #expect(h.apiError(.chat, #"{"messages": [{"role": "robot", "content": "a"}]}"#)?.status == 400)
        let promptLength = h.tokenizer.encode("a b c").count
        let overflow = try #require(h.apiError(.completion, #"{"prompt": "a b c", "max_tokens": 40}"#))
        #expect(overflow.status == 400)
        #expect(overflow.code == "context_length_exceeded")
        #expect(overflow.message.contains("maximum context length is 32 tokens"))
        #expect(overflow.message.contains("you requested \(promptLength + 40) tokens (\(promptLength) in the prompt, 40 for the completion)"))
        #expect(throws: APIError.unauthorized) { try h.service.authorize(nil) }
        #expect(throws: APIError.unauthorized) { try h.service.authorize("Bearer wrong") }
        try h.service.authorize("Bearer sekret")
        // The service still works after all of that.
        let ok = try await h.run(.completion, #"{"prompt": "a", "max_tokens": 2}"#)
        #expect((ok["usage"] as? [String: Int])?["completion_tokens"] == 2)
        let json = try #require(try JSONSerialization.jsonObject(with: overflow.json) as? [String: [String: Any]])
        #expect(json["error"]?["type"] as? String == "invalid_request_error")
    }

    @Test func fullQueueIs429AndMetricsCount() async throws {
        let h = try ServiceHarness(reply: "hello world ", maxContext: 64, slots: 1, maxQueued: 0)
        // Stop the loop so nothing is admitted: the first request waits in... a queue of 0.
        let first = h.apiError(.completion, #"{"prompt": "a", "max_tokens": 3}"#)
        #expect(first?.status == 429)
        #expect(first?.type == "server_busy")
        h.stop()
        #expect(h.apiError(.completion, #"{"prompt": "a", "max_tokens": 3}"#)?.status == 503)
        h.service.metrics.request(endpoint: "/v1/completions", status: 429)
        let text = h.service.metrics.render()
        #expect(text.contains(#"gemma_requests_total{endpoint="/v1/completions",status="429"} 1"#))
        #expect(text.contains("# TYPE gemma_time_to_first_token_seconds histogram"))
        #expect(text.contains(#"gemma_step_phase_seconds_total{phase="allreduce"}"#))
    }

    @Test func stopMatcherHoldsPossiblePrefixes() {
        var m = StopMatcher(["END", "xy"])
        #expect(m.push("abc E") == ("abc ", false))
        #expect(m.push("N") == ("", false))
        #expect(m.push("Q") == ("ENQ", false))
        #expect(m.push("ax") == ("a", false))
        #expect(m.push("yz") == ("", true))
        var n = StopMatcher([])
        #expect(n.push("anything") == ("anything", false))
        var e = StopMatcher(["é!"])
        #expect(e.push("café") == ("caf", false))
        #expect(e.flush() == "é")
    }

    /// Absent finish reasons and logprobs are sent as explicit nulls, as OpenAI sends them.
    @Test func absentOptionalFieldsEncodeAsNull() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let chunk = String(decoding: try encoder.encode(ChatChunkChoice(index: 0, delta: ChatDelta(role: nil, content: "a"), finish_reason: nil)), as: UTF8.self)
        #expect(chunk == #"{"delta":{"content":"a"},"finish_reason":null,"index":0,"logprobs":null}"#)
        let text = String(decoding: try encoder.encode(TextChoice(index: 1, text: "b", finish_reason: "stop")), as: UTF8.self)
        #expect(text == #"{"finish_reason":"stop","index":1,"logprobs":null,"text":"b"}"#)
    }

    /// response_format over the scripted model: whatever the script says, the mask makes the
    /// reply a value of the schema (chat and completions); refusals name the field or keyword.
    @Test func structuredOutput() async throws {
        let h = try ServiceHarness(reply: "the cat sat on the mat ", maxContext: 128)
        defer { h.stop() }
        // Plain requests mask nothing.
        _ = try await h.run(.completion, #"{"prompt": "x", "max_tokens": 5}"#)
        #expect(h.service.metrics.render().contains("gemma_constrained_rows_total 0\n"))
        let schema = #"{"type":"object","properties":{"name":{"type":"string"},"n":{"type":"integer"},"tags":{"type":"array","items":{"enum":["a","b"]},"minItems":1,"maxItems":2}},"required":["name","n","tags"],"additionalProperties":false}"#
        let user = #""messages": [{"role": "user", "content": "json please"}]"#
        let object = try await h.run(.chat, #"{\#(user), "max_tokens": 60, "response_format": {"type": "json_schema", "json_schema": {"name": "p", "strict": true, "schema": \#(schema)}}}"#)
        let message = try #require(choice(object)["message"] as? [String: Any])
        let content = try #require(message["content"] as? String)
        let value = try #require(try JSONSerialization.jsonObject(with: Data(content.utf8)) as? [String: Any], "\(content)")
        #expect(value["name"] is String && value["n"] is Int)
        let tags = try #require(value["tags"] as? [String])
        #expect((1...2).contains(tags.count) && tags.allSatisfy { $0 == "a" || $0 == "b" })
        #expect(Set(value.keys) == ["name", "n", "tags"])
        let completion = try await h.run(.completion, #"{"prompt": "x", "max_tokens": 20, "temperature": 1, "seed": 3, "response_format": {"type": "json_object"}}"#)
        let text = try #require(choice(completion)["text"] as? String)
        #expect(try JSONSerialization.jsonObject(with: Data(text.utf8)) is [String: Any], "\(text)")
        #expect(!h.service.metrics.render().contains("gemma_constrained_rows_total 0\n"))

        let bad = h.apiError(.chat, #"{\#(user), "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "string", "pattern": "a+"}}}}"#)
        #expect(bad?.param == "response_format" && bad?.message.contains("\"pattern\"") == true)
        #expect(h.apiError(.chat, #"{\#(user), "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}"#)?.param == "response_format")
        #expect(h.apiError(.chat, #"{\#(user), "response_format": {"type": "xml"}}"#)?.param == "response_format")
        #expect(h.apiError(.chat, #"{\#(user), "stop": "}", "response_format": {"type": "json_object"}}"#)?.param == "stop")
        let small = h.apiError(.chat, #"{\#(user), "max_tokens": 5, "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": \#(schema)}}}"#)
        #expect(small?.param == "max_tokens" && small?.message.contains("too small") == true)
    }
}
